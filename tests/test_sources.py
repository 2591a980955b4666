"""Converters: each raw fixture (hand-written in its source's released schema) becomes the expected conversations.

The pipeline in both styles, the readers, bad input, and the `--style clean` rules; TÜLU v1's own rules (the
default style) are pinned literally in test_sources_v1.py.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tulu_lite.data.conversations import read_conversations
from tulu_lite.data.raw import read_json_values
from tulu_lite.data.sources import (
    SOURCES,
    ConvertOptions,
    ConvertReport,
    convert,
    iter_converted,
    meta_path,
    total_input_size,
)
from tulu_lite.data.sources.clean import split_by_budget
from tulu_lite.data.templates import (
    TEMPLATES_WITH_INPUT,
    TEMPLATES_WITHOUT_INPUT,
    render_instruction,
)
from tulu_lite.errors import TuluError
from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER

RAW = Path(__file__).parent / "fixtures" / "raw"
CLEAN = ConvertOptions(style="clean")
SMALL_SUPER_NI = ConvertOptions(zero_shot_per_task=2, few_shot_per_task=2)


def run(source: str, path: Path | str, options: ConvertOptions = CLEAN) -> tuple[list[dict], ConvertReport]:
    report = ConvertReport(source, [])
    return list(iter_converted(source, RAW / path, options, report=report)), report


def by_id(records: list[dict]) -> dict[str, dict]:
    return {record["id"]: record for record in records}


# ---- every source --------------------------------------------------------------------------------------------

EXPECTED_COUNTS = {  # examples written from each fixture, per style
    "clean": {
        "super_ni": 7,  # default list: task001 2 zero-shot + 2 few-shot; task1564: 4 instances, one without output
        "cot": 5, "flan_v2": 4, "dolly": 5, "oasst1": 5, "self_instruct": 3, "unnatural_instructions": 4,
        "stanford_alpaca": 4, "code_alpaca": 3, "gpt4_alpaca": 2, "baize": 5, "sharegpt": 4,
    },
    "v1": {  # nothing empty is dropped; oasst1 keeps inner paths; super_ni reads the xlingual list (+ a Spanish task)
        "super_ni": 10, "cot": 5, "flan_v2": 4, "dolly": 6, "oasst1": 7, "self_instruct": 4,
        "unnatural_instructions": 4, "stanford_alpaca": 4, "code_alpaca": 3, "gpt4_alpaca": 2, "baize": 5,
        "sharegpt": 2,  # split at 2048 tokens, then only strictly human/gpt-alternating parts
    },
}


@pytest.mark.parametrize("style", ["v1", "clean"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_each_source_converts_its_release_into_valid_unique_conversations(source, style, tmp_path):
    options = ConvertOptions(style=style)
    if source == "super_ni":
        options = replace(options, zero_shot_per_task=2, few_shot_per_task=2)
    if source == "sharegpt":
        options = replace(options, tokenizer=str(BUNDLED_LLAMA_TOKENIZER))
    out = tmp_path / f"{source}.jsonl"
    report = convert(source, RAW / source, out, options)
    records = list(read_conversations(out))  # validates every line
    assert report.written == len(records) == EXPECTED_COUNTS[style][source]
    assert {record["dataset"] for record in records} == {source}
    ids = [record["id"] for record in records]
    assert len(set(ids)) == len(ids) and all(i.startswith(source + "_") for i in ids)
    for record in records:
        assert record["messages"][-1]["role"] == "assistant"
        assert style == "v1" or record["messages"][-1]["content"].strip()  # v1 keeps empty outputs
    meta = json.loads(meta_path(out).read_text())
    assert meta["source"] == source and meta["options"]["seed"] == 42 and meta["report"]["written"] == len(records)
    assert meta["options"]["style"] == style and meta["report"]["style"] == style


def test_clean_instruction_sources_keep_instruction_input_and_output():
    records, report = run("stanford_alpaca", "stanford_alpaca/alpaca_data.json")
    spanish = by_id(records)["stanford_alpaca_1"]["messages"]
    assert "Translate the sentence into Spanish." in spanish[0]["content"]
    assert "Where is the train station?" in spanish[0]["content"]
    assert spanish[1] == {"role": "assistant", "content": "¿Dónde está la estación de tren?"}
    dolly, report = run("dolly", "dolly")
    assert report.skipped == Counter({"empty output": 1})  # the haiku whose response is blank
    founded = by_id(dolly)["dolly_4"]["messages"]
    assert "Lumen Tools was founded in 1998" in founded[0]["content"]  # context is the input
    assert founded[1]["content"] == "Carla Ruiz founded Lumen Tools."


def test_clean_flan_style_sources_use_inputs_and_targets_stripped():
    records, _ = run("cot", "cot")
    assert [r["id"] for r in records][:3] == ["cot_cot_fsopt_0", "cot_cot_fsopt_1", "cot_cot_zsopt_0"]
    first = by_id(records)["cot_cot_zsopt_1"]["messages"]
    assert first == [
        {"role": "user", "content": "Q: If a train travels 60 km in 1.5 hours, what is its average speed?\nA:"},
        {"role": "assistant", "content": "Speed is distance over time: 60 / 1.5 = 40. The average speed is 40 km/h."},
    ]


def test_clean_unnatural_instructions_append_constraints_except_none():
    records = by_id(run("unnatural_instructions", "unnatural_instructions")[0])
    verb = records["unnatural_instructions_0_0"]["messages"][0]["content"]
    assert "None." not in verb and "The dog barked loudly." in verb
    review = records["unnatural_instructions_1_1"]["messages"]
    assert "Decide whether the review is positive or negative.\nThe output should be 'positive' or 'negative'." \
        in review[0]["content"]
    assert review[1]["content"] == "negative"
    assert "none" not in records["unnatural_instructions_2_0"]["messages"][0]["content"]


def test_clean_baize_transcripts_become_alternating_rounds():
    records = by_id(run("baize", "baize")[0])
    juggling = records["baize_quora_chat_data_0"]["messages"]
    assert [m["role"] for m in juggling] == ["user", "assistant", "user", "assistant"]
    assert juggling[2]["content"] == "And then?"
    assert juggling[3]["content"] == "Add a second ball, throwing it when the first reaches its peak."
    throat = records["baize_medical_chat_data_0"]["messages"]
    assert throat[-1]["content"] == "You're welcome.\nFeel better soon."  # two AI turns in one round, merged
    assert "baize_quora_chat_data_2" not in records  # a transcript with no complete round


# ---- oasst1 --------------------------------------------------------------------------------------------------


def test_clean_oasst_keeps_maximal_paths_ending_in_an_assistant_reply_and_drops_deleted_subtrees():
    records, report = run("oasst1", "oasst1")
    ids = {record["id"] for record in records}
    # a1 continues to a3/a4 (not emitted alone); a5 is deleted; p3 (deleted) cuts nothing else; the limerick
    # tree ends with an unanswered prompter turn, so its path is cut back to the last assistant reply (a7).
    assert ids == {"oasst1_a3-dddd", "oasst1_a4-eeee", "oasst1_a2-gggg", "oasst1_a6-iiii", "oasst1_a7-llll"}
    everest = by_id(records)["oasst1_a3-dddd"]["messages"]
    assert [(m["role"], m["content"][:22]) for m in everest] == [
        ("user", "What is the boiling po"), ("assistant", "Water boils at 100 °C "),
        ("user", "And on the summit of E"), ("assistant", "About 70 °C, because t")]
    assert not any("moderator" in m["content"] or "watches" in m["content"] for r in records for m in r["messages"])
    assert report.skipped["oasst1: tree without an assistant reply"] == 1


@pytest.mark.parametrize("k, expected", [
    (1, {"oasst1_a3-dddd", "oasst1_a7-llll"}),
    (2, {"oasst1_a3-dddd", "oasst1_a4-eeee", "oasst1_a2-gggg", "oasst1_a7-llll"}),
])
def test_clean_oasst_top_k_reply_keeps_the_best_rated_replies_at_every_node(k, expected):
    records, _ = run("oasst1", "oasst1", ConvertOptions(style="clean", top_k_reply=k))
    assert {record["id"] for record in records} == expected


# ---- sharegpt ------------------------------------------------------------------------------------------------


def test_clean_sharegpt_maps_speakers_and_repairs_or_skips_bad_turn_order():
    records, report = run("sharegpt", "sharegpt")
    got = by_id(records)
    assert set(got) == {"sharegpt_QWJhYvA_0", "sharegpt_i6IyJda_0", "sharegpt_7Xk2pLm_3", "sharegpt_mM3nQe8_1"}
    assert got["sharegpt_i6IyJda_0"]["messages"] == [  # leading gpt dropped, two human turns merged, last human cut
        {"role": "user", "content": "Tell me a fun fact.\n\nAbout octopuses, please."},
        {"role": "assistant", "content": "An octopus has three hearts and blue blood."}]
    assert [m["role"] for m in got["sharegpt_7Xk2pLm_3"]["messages"]] == ["system", "user", "assistant"]  # bing
    assert report.skipped == Counter({"sharegpt: unknown speaker 'bard'": 1,
                                      "sharegpt: no complete user/assistant exchange": 1})
    assert report.repaired["sharegpt: leading assistant turn dropped"] == 1
    assert report.repaired["sharegpt: empty turn removed"] == 1


def _conversation(n_pairs: int, system: bool = False) -> list[dict]:
    head = [{"role": "system", "content": "sys"}] if system else []
    body = [{"role": role, "content": f"{role} {i}"} for i in range(n_pairs) for role in ("user", "assistant")]
    return head + body


def test_split_by_budget_packs_whole_exchanges_and_drops_oversized_ones():
    messages = _conversation(4)
    costs = [10, 20, 5, 5, 30, 40, 8, 8]  # exchanges cost 30, 10, 70, 16; +1 BOS per part
    parts, dropped = split_by_budget(messages, costs, budget=45)
    assert dropped == 1  # the 70-token exchange cannot fit any part
    assert [[m["content"] for m in part] for part in parts] == [
        ["user 0", "assistant 0", "user 1", "assistant 1"], ["user 3", "assistant 3"]]
    parts, dropped = split_by_budget(_conversation(2, system=True), [4, 10, 10, 10, 10], budget=30)
    assert dropped == 0 and [[m["content"] for m in p] for p in parts] == [
        ["sys", "user 0", "assistant 0"], ["sys", "user 1", "assistant 1"]]  # system repeated, counted each time


def test_clean_sharegpt_split_to_a_token_budget_with_a_real_tokenizer(tmp_path, llama_tokenizer):
    long_turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": f"Turn {i}: " + "word " * 40}
                  for i in range(8)]
    raw = tmp_path / "sg.json"
    raw.write_text(json.dumps([{"id": "long", "conversations": long_turns}]))
    options = ConvertOptions(style="clean", split_max_tokens=128, tokenizer=str(Path(llama_tokenizer.name_or_path)))
    records, report = run("sharegpt", raw, options)
    assert [r["id"] for r in records] == [f"sharegpt_long_part{i}" for i in range(len(records))]
    assert len(records) > 1
    assert [m["content"] for r in records for m in r["messages"]] == [t["value"] for t in long_turns]
    for record in records:  # every part fits: BOS + headers + content + eos per assistant turn
        text = "".join(f"<|{m['role']}|>\n{m['content'].strip()}\n" for m in record["messages"])
        assert len(llama_tokenizer(text)["input_ids"]) + len(record["messages"]) // 2 <= 128 + 2


# ---- super_ni -------------------------------------------------------------------------------------------------


def test_clean_super_ni_zero_and_few_shot_variants_per_task():
    records, report = run("super_ni", "super_ni", replace(SMALL_SUPER_NI, style="clean"))
    assert report.skipped["super_ni: mmmlu task (evaluation leakage)"] == 1
    quoref = [r for r in records if r["id"].startswith("super_ni_task001-")]
    assert len(quoref) == 4
    few_shot = [r for r in quoref if "Example input:" in r["messages"][0]["content"]]
    assert len(few_shot) == 2  # instances after the zero-shot ones get 2 positive examples each
    for record in few_shot:
        prompt = record["messages"][0]["content"]
        assert prompt.startswith("In this task, you're given a passage.") and prompt.count("Example output:") == 2
        assert prompt.rstrip().endswith("Output:")
    everything, report = run("super_ni", "super_ni", ConvertOptions(style="clean", zero_shot_per_task=10,
                                                                  few_shot_per_task=0))
    assert len(everything) == 9 and report.skipped["empty output"] == 1  # task1564-0004 has an empty output list
    violin = by_id(everything)["super_ni_task001-0002"]["messages"]
    assert violin[1]["content"] == "Who owned the violin until 1902?"  # the first reference output
    assert "The violin belonged to Anton until 1902." in violin[0]["content"]


# ---- determinism and sampling -------------------------------------------------------------------------------


def _alpaca_array(path: Path, n: int, *, indent: int | None = 4) -> Path:
    records = [{"instruction": f"Instruction number {i} ✓", "input": f"input {i}" if i % 3 else "",
                "output": f"Output {i}: " + "é" * (i % 7)} for i in range(n)]
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("style", ["v1", "clean"])
def test_same_seed_is_byte_identical_and_another_seed_changes_templates(tmp_path, style):
    raw = _alpaca_array(tmp_path / "alpaca_data.json", 300)
    outputs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert("stanford_alpaca", raw, tmp_path / f"{name}.jsonl", ConvertOptions(style=style, seed=seed))
        outputs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert outputs["a"] == outputs["b"]
    assert outputs["a"] != outputs["c"]


def test_clean_templates_are_used_in_proportion_to_their_weights():
    for templates, input_text in ((TEMPLATES_WITH_INPUT, "INPUT"), (TEMPLATES_WITHOUT_INPUT, None)):
        rendered = [render_instruction("INSTR", input_text, 7, f"x_{i}") for i in range(4000)]
        expected = {t.format(instruction="INSTR", input="INPUT"): weight for t, weight in templates}
        counts = Counter(rendered)
        assert set(counts) == set(expected)
        for text, weight in expected.items():
            assert abs(counts[text] / 4000 - weight) < 0.03


@pytest.mark.parametrize("style", ["v1", "clean"])
def test_max_examples_is_an_exact_seeded_subset_in_file_order(tmp_path, style):
    raw = _alpaca_array(tmp_path / "alpaca_data.json", 3000)
    full = [r["id"] for r in run("stanford_alpaca", raw, ConvertOptions(style=style))[0]]

    def sample(k: int, seed: int) -> list[str]:
        out = tmp_path / f"s{k}_{seed}.jsonl"
        report = convert("stanford_alpaca", raw, out, ConvertOptions(style=style, seed=seed, max_examples=k), force=True)
        assert report.sampled_out == 3000 - k
        return [r["id"] for r in read_conversations(out)]

    small, large, other = sample(300, 5), sample(900, 5), sample(300, 6)
    assert len(small) == 300 and len(large) == 900
    assert small == sample(300, 5)
    assert set(small) <= set(large) and set(small) != set(other)
    assert small == [i for i in full if i in set(small)]  # original order kept
    # a sampled example is the same example, with the same template, as in the full conversion
    full_records = by_id(run("stanford_alpaca", raw, ConvertOptions(style=style, seed=5))[0])
    assert all(r == full_records[r["id"]] for r in read_conversations(tmp_path / "s300_5.jsonl"))


# ---- the streaming readers ------------------------------------------------------------------------------------


def test_array_reader_is_identical_across_chunk_sizes_and_counts_lines(tmp_path):
    raw = _alpaca_array(tmp_path / "alpaca_data.json", 200)
    values = list(read_json_values(raw, "test", chunk_size=1 << 20))
    tiny = list(read_json_values(raw, "test", chunk_size=7))  # elements and UTF-8 characters cut everywhere
    assert [v.value for v in tiny] == [v.value for v in values] == json.loads(raw.read_text(encoding="utf-8"))
    lines = raw.read_text(encoding="utf-8").splitlines()
    assert [v.where for v in tiny] == [v.where for v in values]
    for value in values[:20]:
        line = int(value.where.rsplit(":", 1)[1])
        assert lines[line - 1].strip() == "{"  # each element starts on the line it names
        assert lines[line].strip().startswith(f'"instruction": "Instruction number {value.index} ')


def test_json_lines_are_accepted_where_a_json_array_is_released(tmp_path):
    raw = tmp_path / "alpaca_data.jsonl"
    raw.write_text("\n".join(json.dumps({"instruction": f"Say {i}", "input": "", "output": str(i)})
                             for i in range(5)) + "\n\n")
    records, _ = run("stanford_alpaca", raw)
    assert [r["messages"][1]["content"] for r in records] == ["0", "1", "2", "3", "4"]


def test_a_few_thousand_generated_lines_convert_in_order(tmp_path):
    raw = _alpaca_array(tmp_path / "alpaca_data.json", 5000, indent=None)
    report = convert("stanford_alpaca", raw, tmp_path / "out.jsonl", ConvertOptions(), chunk_size=4096)
    records = list(read_conversations(tmp_path / "out.jsonl"))
    assert report.written == 5000 and report.records_read == 5000
    assert [r["id"] for r in records] == [f"stanford_alpaca_{i}" for i in range(5000)]
    assert records[4321]["messages"][1]["content"] == "Output 4321: " + "é" * (4321 % 7)


# ---- gzipped releases (oasst1's trees are released as .jsonl.gz) ----------------------------------------------


def _gzipped_copy(source: str, folder: Path, keep_plain: tuple[str, ...] = ()) -> Path:
    """The source's fixture folder with every file gzipped (NAME.gz), except `keep_plain`, which are copied."""
    folder.mkdir(parents=True)
    for plain in sorted((RAW / source).iterdir()):
        if plain.name in keep_plain:
            (folder / plain.name).write_bytes(plain.read_bytes())
        else:
            (folder / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    return folder


@pytest.mark.parametrize("style", ["v1", "clean"])
@pytest.mark.parametrize("source, options, keep_plain", [
    ("oasst1", ConvertOptions(), ()),
    ("stanford_alpaca", ConvertOptions(), ()),  # a JSON array, walked in chunks
    ("cot", ConvertOptions(cot_zero_shot=2, cot_few_shot=3), ()),  # v1 draws a sample: a second pass over the .gz
    ("baize", ConvertOptions(), ("alpaca_chat_data.json", "quora_chat_data.json")),  # plain and gzipped together
])
def test_a_gzipped_release_converts_as_the_plain_one(source, options, keep_plain, style, tmp_path):
    folder = _gzipped_copy(source, tmp_path / source, keep_plain)
    options = replace(options, style=style) if style == "v1" else ConvertOptions(style=style)
    read = []
    report = convert(source, folder, tmp_path / "gz.jsonl", options, chunk_size=7, on_progress=read.append)
    plain = convert(source, RAW / source, tmp_path / "plain.jsonl", options)
    assert (tmp_path / "gz.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()
    assert (report.records_read, report.skipped, report.repaired) == \
        (plain.records_read, plain.skipped, plain.repaired)
    assert [Path(name).name for name in report.inputs] == \
        [Path(name).name + ("" if Path(name).name in keep_plain else ".gz") for name in plain.inputs]
    # Progress counts the bytes as stored (compressed), so the bar's total is the folder's size.
    assert sum(read) == total_input_size(source, folder, options) == sum(p.stat().st_size for p in folder.iterdir())


def test_a_folder_holding_a_file_plain_and_gzipped_reads_it_once(tmp_path):
    folder = _gzipped_copy("oasst1", tmp_path / "oasst1")
    plain = RAW / "oasst1" / "2023-04-12_oasst_ready.trees.jsonl"
    (folder / plain.name).write_bytes(plain.read_bytes())
    records, report = run("oasst1", folder)
    assert report.inputs == [str(folder / plain.name)]
    assert records == run("oasst1", plain)[0]


def test_cli_converts_the_oasst1_release_as_downloaded_and_its_folder(tmp_path):
    from cli_cases import run_cli

    _gzipped_copy("oasst1", tmp_path / "raw")
    release = "raw/2023-04-12_oasst_ready.trees.jsonl.gz"
    for raw_path, out in ((release, "file.jsonl"), ("raw", "folder.jsonl")):
        done = run_cli(["data", "convert", "oasst1", raw_path, "-o", out], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    expected = tmp_path / "plain.jsonl"
    convert("oasst1", RAW / "oasst1", expected)
    assert (tmp_path / "file.jsonl").read_bytes() == (tmp_path / "folder.jsonl").read_bytes() == \
        expected.read_bytes()


# ---- bad input ------------------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("dolly", "malformed/dolly_broken_line.jsonl",
     ["dolly_broken_line.jsonl:3:", "not valid JSON", "'dolly' format", '{"instruction": "Name a warm colour."']),
    ("stanford_alpaca", "malformed/alpaca_truncated.json",
     ["alpaca_truncated.json:10:", "not valid JSON", "'stanford_alpaca'", '"instruction": "Name the largest planet."']),
    ("stanford_alpaca", "malformed/alpaca_trailing_comma.json", ["alpaca_trailing_comma.json:4:", "trailing comma"]),
    ("stanford_alpaca", "malformed/alpaca_output_not_string.json",
     ["alpaca_output_not_string.json:3:", "output must be a string, got list", '"List two planets."']),
    ("oasst1", "malformed/oasst_bad_role.jsonl", ["oasst_bad_role.jsonl:1:", "'m2'", "'moderator'", "'oasst1'"]),
    ("unnatural_instructions", "malformed/unnatural_instance_without_output.jsonl",
     ["unnatural_instance_without_output.jsonl:2:", "instances[0].output missing", '"Double the number."']),
    ("super_ni", "malformed/super_ni_missing_task", ["train_tasks.txt:1:", "task900_missing_task", "does not exist"]),
    ("super_ni", "malformed/super_ni_bad_task", ["task901_bad_instances.json", "Instances[0].output"]),
    # the wrong release for the source: say which one was expected and show the first bad line
    ("dolly", "stanford_alpaca/alpaca_data.json",
     ["alpaca_data.json:2:", "source 'dolly'", "response missing", "databricks-dolly-15k.jsonl",
      '"instruction": "Give three tips for staying healthy."']),
    ("oasst1", "dolly/databricks-dolly-15k.jsonl",
     ["databricks-dolly-15k.jsonl:1:", "source 'oasst1'", "prompt missing", '"When did the first person walk']),
    ("sharegpt", "baize/quora_chat_data.json", ["quora_chat_data.json:2:", "source 'sharegpt'", "conversations"]),
    ("cot", "stanford_alpaca/alpaca_data.json", ["alpaca_data.json:2:", "source 'cot'", "inputs, targets missing"]),
    ("super_ni", "dolly/databricks-dolly-15k.jsonl", ["natural-instructions folder"]),
    ("oasst1", "dolly", ["no file matching", "oasst_ready.trees.jsonl"]),
    ("dolly", "does/not/exist.jsonl", ["does/not/exist.jsonl: not found"]),
]


@pytest.mark.parametrize("source, path, fragments", BAD_INPUTS, ids=[f"{s}:{Path(p).name}" for s, p, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_naming_file_line_and_expected_source(source, path, fragments, tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(TuluError) as error:
        convert(source, RAW / path, out)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("source, options, fragment", [
    ("dolly", ConvertOptions(top_k_reply=1), "--top-k-reply only applies to source oasst1"),
    ("sharegpt", ConvertOptions(split_max_tokens=2048), "--split-max-tokens needs --tokenizer"),
    ("oasst1", ConvertOptions(top_k_reply=0), "--top-k-reply must be at least 1"),
    ("dolly", ConvertOptions(max_examples=0), "--max-examples must be at least 1"),
    ("dolyl", ConvertOptions(), "did you mean 'dolly'"),
])
def test_options_that_do_not_apply_are_errors(source, options, fragment, tmp_path):
    with pytest.raises(TuluError, match=fragment):
        convert(source, RAW / "dolly", tmp_path / "out.jsonl", options)


def test_cli_convert_writes_output_and_reports_errors_as_one_red_line(tmp_path, monkeypatch, capsys):
    from tulu_lite.cli import main

    out = tmp_path / "gpt4.jsonl"
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "convert", "gpt4_alpaca", str(RAW / "gpt4_alpaca"),
                                      "-o", str(out), "--seed", "3"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert [r["id"] for r in read_conversations(out)] == ["gpt4_alpaca_0", "gpt4_alpaca_1"]
    assert "examples written" in capsys.readouterr().out
    wrong = RAW / "gpt4_alpaca" / "alpaca_gpt4_data.json"
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "convert", "dolly", str(wrong), "-o", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as failed:
        main()
    assert failed.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "source 'dolly'" in err and "alpaca_gpt4_data.json:2:" in err


def test_a_byte_order_mark_does_not_break_json_lines(tmp_path):
    raw = tmp_path / "databricks-dolly-15k.jsonl"
    raw.write_bytes("\ufeff".encode() + b'{"instruction": "Say hi", "context": "", "response": "hi"}\n')
    records, _ = run("dolly", raw)
    assert records[0]["messages"][1] == {"role": "assistant", "content": "hi"}
