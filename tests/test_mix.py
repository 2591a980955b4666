"""Mixtures: validated YAML, exact per-source counts, a seeded shuffle, and clear errors."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from tulu_lite.data.conversations import read_conversations
from tulu_lite.data.mix import load_mixture, mix
from tulu_lite.data.sources import meta_path
from tulu_lite.errors import TuluError

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "mixtures"


def _converted(path: Path, dataset: str, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            record = {"dataset": dataset, "id": f"{dataset}_{i}",
                      "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            handle.write(json.dumps(record) + "\n")
            if i % 50 == 0:
                handle.write("\n")  # blank lines are not records
    return path


@pytest.fixture
def workspace(tmp_path):
    data = tmp_path / "data"
    _converted(data / "flan.jsonl", "flan_v2", 400)
    _converted(data / "dolly.jsonl", "dolly", 150)
    _converted(data / "oasst.jsonl", "oasst1", 200)
    recipe = tmp_path / "recipes" / "mix.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        "seed: 7\n"
        "sources:\n"
        "  - path: ../data/flan.jsonl\n"
        "    max_examples: 100\n"
        "  - path: ../data/dolly.jsonl\n"
        "  - path: ../data/oasst.jsonl\n"
        "    fraction: 0.25\n"
        "    name: oasst-quarter\n")
    return recipe


def _write(recipe: Path, text: str) -> Path:
    recipe.write_text(text)
    return recipe


def test_mix_takes_exact_counts_per_source_and_shuffles(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # paths resolve against the YAML file, not the working directory
    out = tmp_path / "mixed.jsonl"
    report = mix(workspace, out)
    records = list(read_conversations(out))
    counts = Counter(r["dataset"] for r in records)
    assert counts == {"flan_v2": 100, "dolly": 150, "oasst1": 50}
    assert [row["taken"] for row in report.rows] == [100, 150, 50] and report.total == 300
    assert [row["available"] for row in report.rows] == [400, 150, 200]
    assert [row["name"] for row in report.rows] == ["flan.jsonl", "dolly.jsonl", "oasst-quarter"]
    assert len({r["id"] for r in records}) == 300
    first_hundred = Counter(r["dataset"] for r in records[:100])
    assert len(first_hundred) == 3  # interleaved, not concatenated
    meta = json.loads(meta_path(out).read_text())
    assert meta["resolved"]["seed"] == 7 and meta["total"] == 300


def test_mix_is_byte_identical_for_a_seed_and_changes_with_it(workspace, tmp_path):
    mix(workspace, tmp_path / "a.jsonl")
    mix(workspace, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    _write(workspace, workspace.read_text().replace("seed: 7", "seed: 8"))
    mix(workspace, tmp_path / "c.jsonl")
    a = [json.loads(line)["id"] for line in (tmp_path / "a.jsonl").open()]
    c = [json.loads(line)["id"] for line in (tmp_path / "c.jsonl").open()]
    assert a != c and len(c) == 300
    assert set(i for i in a if i.startswith("dolly")) == set(i for i in c if i.startswith("dolly"))  # all of dolly


def test_unknown_key_names_file_line_dotted_key_and_suggestion(workspace):
    _write(workspace, "seed: 1\nsources:\n  - path: ../data/flan.jsonl\n  - path: ../data/dolly.jsonl\n"
                      "  - path: ../data/oasst.jsonl\n    fracton: 0.5\n")
    with pytest.raises(TuluError) as error:
        load_mixture(workspace)
    assert str(error.value) == f"{workspace}:6: sources[2].fracton: unknown key (did you mean 'sources[2].fraction'?)"


def test_all_problems_are_reported_together_one_line_each_in_file_order(workspace):
    _write(workspace, "seed: one\nsourcs: []\nsources:\n  - path: ../data/flan.jsonl\n    max_examples: 5\n"
                      "    fraction: 0.5\n  - path: ../data/dolly.jsonl\n    max_examples: 0\n"
                      "  - path: ../data/gone.jsonl\n")
    with pytest.raises(TuluError) as error:
        load_mixture(workspace)
    first, *lines = str(error.value).splitlines()
    assert first == f"{workspace}: 5 problems:"
    assert lines[0].startswith(f"  {workspace}:1: seed: ")
    assert lines[1] == f"  {workspace}:2: sourcs: unknown key (did you mean 'sources'?)"
    assert lines[2] == f"  {workspace}:4: sources[0]: give max_examples or fraction, not both"
    assert lines[3].startswith(f"  {workspace}:8: sources[1].max_examples: input should be greater than or equal to 1")
    assert lines[4].startswith(f"  {workspace}:9: sources[2].path: file not found: ")


def test_missing_files_and_bad_yaml_are_clear(workspace, tmp_path):
    _write(workspace, "sources:\n  - path: ../data/nope.jsonl\n  - path: ../data/flan.jsonl\n"
                      "  - path: ../data/flan.jsonl\n")
    with pytest.raises(TuluError) as error:
        load_mixture(workspace)
    assert f"{workspace}:2: sources[0].path: file not found: " in str(error.value)
    assert f"{workspace}:4: sources[2].path: same file as sources[1]" in str(error.value)
    _write(workspace, "seed: 1\nsources:\n  - path: ../data/flan.jsonl\nseed: 2\n")
    with pytest.raises(TuluError, match=rf"^{re.escape(str(workspace))}:4: seed: duplicate key$"):
        load_mixture(workspace)
    _write(workspace, "sources:\n  - path: [unclosed\n")
    with pytest.raises(TuluError, match=r"mix\.yaml:\d+: not valid YAML"):
        load_mixture(workspace)
    _write(workspace, "- just\n- a list\n")
    with pytest.raises(TuluError, match="must be a mapping"):
        load_mixture(workspace)
    with pytest.raises(TuluError, match="mixture file not found"):
        load_mixture(tmp_path / "absent.yaml")


def test_a_bad_line_in_a_source_file_stops_the_mix_before_writing(workspace, tmp_path):
    with (tmp_path / "data" / "dolly.jsonl").open("a") as handle:
        handle.write('{"messages": [{"role": "robot", "content": "beep"}]}\n')
    out = tmp_path / "mixed.jsonl"
    with pytest.raises(TuluError, match=r"dolly\.jsonl:\d+: messages\[0\]\.role is 'robot'"):
        mix(workspace, out)
    assert not out.exists()


@pytest.mark.parametrize("name, expected", [
    ("tulu_v1_human_mix.yaml", ["flan_v2", "cot", "dolly", "oasst1"]),
    ("tulu_v1_mix.yaml", ["flan_v2", "cot", "dolly", "oasst1", "gpt4_alpaca", "code_alpaca", "sharegpt"]),
])
def test_shipped_tulu_v1_mixtures_validate_and_use_each_converted_file_whole(name, expected):
    # TÜLU v1 concatenated the converted files (CoT's 50k + 50k are drawn by its conversion): no caps here.
    mixture = load_mixture(RECIPES / name, check_files=False)
    assert [s.label for s in mixture.sources] == expected
    assert all(s.max_examples is None and s.fraction is None for s in mixture.sources)
    assert all(s.path.is_absolute() and s.path.parent.name == "converted" for s in mixture.sources)
    assert [s.path.name for s in mixture.sources] == [f"{label}.jsonl" for label in expected]


def test_cli_mix_prints_the_summary_table(workspace, tmp_path, monkeypatch, capsys):
    from tulu_lite.cli import main

    out = tmp_path / "cli.jsonl"
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "mix", str(workspace), "-o", str(out)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "oasst-quarter" in printed and "0.25 ×" in printed and "300" in printed
    assert sum(1 for _ in read_conversations(out)) == 300


def test_a_fraction_above_one_upsamples_every_record_and_samples_the_rest(workspace, tmp_path):
    _write(workspace, "seed: 3\nsources:\n  - path: ../data/dolly.jsonl\n    fraction: 2.5\n"
                      "  - path: ../data/oasst.jsonl\n    max_examples: 10\n")
    report = mix(workspace, tmp_path / "up.jsonl")
    records = list(read_conversations(tmp_path / "up.jsonl"))
    per_id = Counter(r["id"] for r in records if r["dataset"] == "dolly")
    assert sum(per_id.values()) == 375 == report.rows[0]["taken"]  # round(2.5 x 150)
    assert set(per_id) == {f"dolly_{i}" for i in range(150)}  # every record at least twice...
    assert Counter(per_id.values()) == {2: 75, 3: 75}  # ...and a seeded half of them a third time
    again = mix(workspace, tmp_path / "up2.jsonl")
    assert (tmp_path / "up.jsonl").read_bytes() == (tmp_path / "up2.jsonl").read_bytes() and again.total == 385
    from rich.console import Console

    from tulu_lite.data.mix import summary_table

    console = Console(width=200, record=True)
    console.print(summary_table(report))
    printed = console.export_text()
    assert "2.5 ×" in printed and "375 (upsampled)" in printed


def test_sources_can_be_parquet_or_mapped_json_and_keep_ids(workspace, tmp_path):
    import datasets

    rows = [json.loads(line) for line in (tmp_path / "data" / "dolly.jsonl").read_text().splitlines() if line]
    datasets.Dataset.from_list(rows[:40]).to_parquet(tmp_path / "data" / "dolly.parquet")
    sharegpt = [{"id": f"sg{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
                for i in range(30)]
    (tmp_path / "data" / "sg.json").write_text(json.dumps(sharegpt))
    _write(workspace, "sources:\n  - ../data/dolly.parquet\n"
                      "  - {path: ../data/sg.json, messages: conversations, role: from, content: value,\n"
                      "     roles: {human: user, gpt: assistant}, fraction: 0.5, name: sharegpt}\n")
    report = mix(workspace, tmp_path / "out" / "mixed.jsonl")
    records = list(read_conversations(tmp_path / "out" / "mixed.jsonl"))
    assert [row["taken"] for row in report.rows] == [40, 15] and len(records) == 55
    assert {r["id"] for r in records if r.get("dataset") == "dolly"} == {f"dolly_{i}" for i in range(40)}
    assert all(r["messages"][0]["role"] == "user" for r in records)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mixed.jsonl", "mixed.meta.json"]  # no spool


def test_an_output_that_is_a_source_or_exists_is_refused_before_writing(workspace, tmp_path):
    source = tmp_path / "data" / "dolly.jsonl"
    before = source.read_bytes()
    with pytest.raises(TuluError, match=r"dolly\.jsonl: is also an input"):
        mix(workspace, source)
    assert source.read_bytes() == before
    mix(workspace, tmp_path / "mixed.jsonl")
    with pytest.raises(TuluError, match=r"mixed\.jsonl: already exists \(pass --force to overwrite\)"):
        mix(workspace, tmp_path / "mixed.jsonl")
    mix(workspace, tmp_path / "mixed.jsonl", force=True)


def test_a_mixture_of_more_files_than_open_file_descriptors(tmp_path):
    """Hundreds of one-line sources mix under a small ``ulimit -n``: the mix never holds every file open."""
    import resource
    import subprocess

    count, limit = 300, 128
    for i in range(count):
        _converted(tmp_path / "many" / f"f{i}.jsonl", f"set{i}", 1)
    (tmp_path / "mix.yaml").write_text("seed: 1\nsources:\n" + "".join(f"  - path: many/f{i}.jsonl\n"
                                                                       for i in range(count)))

    def small_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "tulu_lite", "data", "mix", "mix.yaml", "-o", "out.jsonl"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=small_limit,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Counter(record["dataset"] for record in read_conversations(tmp_path / "out.jsonl")) == \
        {f"set{i}": 1 for i in range(count)}


def test_upsampling_takes_every_record_whole_times_and_samples_the_rest():
    import random

    from tulu_lite.data.mix import MixtureSource, take_indices

    source = MixtureSource(path="x.jsonl", fraction=2.5)
    picked = take_indices(source, 10, random.Random(0))
    counts = Counter(picked)
    assert len(picked) == 25 and list(picked) == sorted(picked)
    assert sorted(counts.values()) == [2] * 5 + [3] * 5
