"""Preference-pair sources: Anthropic HH-RLHF's release (gzipped JSON Lines of two transcripts) becomes chosen/rejected
pair records that training reads, with the records it can't use dropped and counted by reason.

The fixture (tests/fixtures/raw/hh_rlhf, written by hand in the released schema and gzipped) holds the repository
layout: helpful-base/{train,test}.jsonl.gz and harmless-base/train.jsonl.gz; helpful-base's train file has one row
of each kind the converter drops.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tulu_lite.data.pairs import DROP_IDENTICAL, looks_like_pairs, read_pairs
from tulu_lite.data.sources import (
    ConvertOptions,
    ConvertReport,
    convert,
    iter_pairs,
    meta_path,
    total_input_size,
)
from tulu_lite.data.sources.preferences import (
    DROP_DIFFERENT_PROMPT,
    DROP_NO_REPLY,
    DROP_NOT_TRANSCRIPT,
)
from tulu_lite.data.sources.table import get_source
from tulu_lite.errors import TuluError

RAW = Path(__file__).parent / "fixtures" / "raw" / "hh_rlhf"
HELPFUL_TRAIN = RAW / "helpful-base" / "train.jsonl.gz"


def run(path: Path) -> tuple[list[dict], ConvertReport]:
    report = ConvertReport("hh_rlhf", [])
    return list(iter_pairs("hh_rlhf", path, report=report)), report


def test_hh_rlhf_transcripts_become_pairs_sharing_every_turn_but_the_last_reply():
    records, report = run(HELPFUL_TRAIN)
    assert [record["id"] for record in records] == \
        ["hh_rlhf/helpful-base/train/0", "hh_rlhf/helpful-base/train/1", "hh_rlhf/helpful-base/train/6"]
    assert {record["dataset"] for record in records} == {"hh_rlhf/helpful-base"}
    single, multi, lost_blank_line = records
    assert single["chosen"] == [{"role": "user", "content": "What is the capital of France?"},
                                {"role": "assistant", "content": "The capital of France is Paris."}]
    assert single["rejected"][-1] == {"role": "assistant", "content": "I don't know."}
    assert [m["role"] for m in multi["chosen"]] == ["user", "assistant", "user", "assistant"]
    assert multi["chosen"][:-1] == multi["rejected"][:-1]
    assert multi["rejected"][-1]["content"] == "Buy one at the shop."
    # A transcript that lost its leading blank line still parses; an empty final reply is a reply (EOS is trained).
    assert lost_blank_line["chosen"][0] == {"role": "user", "content": "Name a colour."}
    assert lost_blank_line["rejected"][-1] == {"role": "assistant", "content": ""}
    assert report.records_read == 7
    assert dict(report.skipped) == {DROP_IDENTICAL: 1, DROP_DIFFERENT_PROMPT: 1, DROP_NO_REPLY: 1,
                                    DROP_NOT_TRANSCRIPT: 1}


@pytest.mark.parametrize("raw_path, inputs, datasets", [
    (RAW, ["harmless-base/train.jsonl.gz", "helpful-base/train.jsonl.gz"],
     {"hh_rlhf/harmless-base", "hh_rlhf/helpful-base"}),  # the repository folder: every subset's train file
    (RAW / "helpful-base", ["helpful-base/train.jsonl.gz"], {"hh_rlhf/helpful-base"}),  # a subset folder
    (RAW / "helpful-base" / "test.jsonl.gz", ["helpful-base/test.jsonl.gz"], {"hh_rlhf/helpful-base"}),
])
def test_convert_writes_pairs_that_training_reads_from_a_file_a_subset_or_the_repository(raw_path, inputs, datasets,
                                                                                        tmp_path):
    out = tmp_path / "pairs.jsonl"
    report = convert("hh_rlhf", raw_path, out)
    assert [str(Path(name).relative_to(RAW)) for name in report.inputs] == inputs
    pairs = list(read_pairs(out))  # the same row checks training applies
    assert report.written == len(pairs) > 0
    assert {pair["dataset"] for pair in pairs} == datasets
    assert looks_like_pairs(out)
    meta = json.loads(meta_path(out).read_text())
    assert meta["source"] == "hh_rlhf" and meta["report"]["written"] == report.written
    assert total_input_size("hh_rlhf", raw_path) == sum((RAW / name).stat().st_size for name in inputs)


def test_a_plain_release_converts_as_the_gzipped_one(tmp_path):
    plain = tmp_path / "helpful-base" / "train.jsonl"
    plain.parent.mkdir()
    plain.write_bytes(gzip.decompress(HELPFUL_TRAIN.read_bytes()))
    convert("hh_rlhf", plain.parent, tmp_path / "plain.jsonl")
    convert("hh_rlhf", HELPFUL_TRAIN, tmp_path / "gz.jsonl", chunk_size=7)
    assert (tmp_path / "plain.jsonl").read_bytes() == (tmp_path / "gz.jsonl").read_bytes()


def test_max_examples_keeps_a_seeded_subset_in_file_order(tmp_path):
    every = [pair["id"] for pair in run(RAW)[0]]
    report = convert("hh_rlhf", RAW, tmp_path / "two.jsonl", ConvertOptions(max_examples=2))
    kept = [pair["id"] for pair in read_pairs(tmp_path / "two.jsonl")]
    assert report.written == 2 and report.sampled_out == len(every) - 2
    assert kept == [name for name in every if name in kept]


def _gzipped(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode(), mtime=0))
    return path


GOOD = json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."})


@pytest.mark.parametrize("lines, options, fragments", [
    ([GOOD, json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!"})], ConvertOptions(),
     ["train.jsonl.gz:2:", "source 'hh_rlhf'", "rejected missing"]),
    ([GOOD, json.dumps({"chosen": "\n\nHuman: Hi", "rejected": ["not", "text"]})], ConvertOptions(),
     ["train.jsonl.gz:2:", "rejected must be a string, got list"]),
    ([GOOD, "{not json"], ConvertOptions(), ["train.jsonl.gz:2:", "not valid JSON"]),
    ([GOOD], ConvertOptions(style="clean"), ["--style does not apply to preference-pair source 'hh_rlhf'"]),
    ([GOOD], ConvertOptions(top_k_reply=2), ["--top-k-reply does not apply"]),
    ([GOOD], ConvertOptions(max_examples=0), ["--max-examples must be at least 1"]),
])
def test_bad_input_is_one_line_and_nothing_is_written(lines, options, fragments, tmp_path):
    raw = _gzipped(tmp_path / "helpful-base" / "train.jsonl.gz", lines)
    out = tmp_path / "out.jsonl"
    with pytest.raises(TuluError) as error:
        convert("hh_rlhf", raw, out, options)
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not out.exists() and not meta_path(out).exists()


def test_folders_without_the_release_and_names_of_the_other_kind_are_errors(tmp_path):
    with pytest.raises(TuluError, match="no train.jsonl, plain or .gz, in it or its sub-folders"):
        convert("hh_rlhf", tmp_path, tmp_path / "out.jsonl")
    with pytest.raises(TuluError, match="did you mean 'hh_rlhf'"):
        convert("hh_rlfh", RAW, tmp_path / "out.jsonl")
    with pytest.raises(TuluError, match="preference-pair source"):
        get_source("hh_rlhf")


def test_cli_converts_the_release_and_reports_drops_or_one_error_line(tmp_path):
    from cli_cases import run_cli

    done = run_cli(["data", "convert", "hh_rlhf", str(HELPFUL_TRAIN), "-o", "pairs.jsonl"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pairs written" in done.stdout and DROP_NOT_TRANSCRIPT in done.stdout.replace("\\\\", "\\")
    assert [pair["id"] for pair in read_pairs(tmp_path / "pairs.jsonl")] == [record["id"] for record in
                                                                              run(HELPFUL_TRAIN)[0]]
    failed = run_cli(["data", "convert", "hh_rlhf", str(HELPFUL_TRAIN), "-o", "pairs.jsonl"], cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.strip().startswith("error:") and len(failed.stderr.strip().splitlines()) == 1
