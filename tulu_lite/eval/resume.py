"""Interrupted runs: generations kept until their task is scored, and tasks that already finished.

Generating is the expensive part of most tasks, and scoring can fail or be killed after it (HumanEval executes
thousands of programs; ToxiGen and TruthfulQA load classifier models). So a task's generations are written to
`OUT_DIR/.<task>.generations.jsonl` (a normal predictions file) before scoring starts, with the run's identity
beside them in `.<task>.generations.json`; a rerun of the same command scores them instead of generating again,
and they are removed once the task's folder is complete.

A task folder only appears complete (it is written atomically), so after Ctrl-C a rerun skips the tasks whose
folder holds a finished result of the same run (same model and task settings) and says so; `--force` runs them
again. A folder holding something else is an error rather than a silent skip.
"""

from __future__ import annotations

import json
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.eval.settings import EvalSettings
from tulu_lite.json_files import write_json
from tulu_lite.outputs import atomic_file


def identity(settings: EvalSettings, module, *, with_scoring: bool) -> dict:
    """What makes two runs of a task the same: the model and the task's resolved settings (as saved in JSON).
    Without `with_scoring`, settings that only change scoring (timeouts, classifiers, judges) are left out."""
    resolved = {key: value for key, value in module.resolved(settings).items()
                if with_scoring or key not in module.SCORING_KEYS}
    return json.loads(json.dumps({"model_dir": str(settings.model_dir) if settings.model_dir else None,
                                  "task_settings": resolved}))


def generations_file(settings: EvalSettings, task: str) -> Path:
    return settings.output_dir / f".{task}.generations.jsonl"


def _identity_file(settings: EvalSettings, task: str) -> Path:
    return settings.output_dir / f".{task}.generations.json"


def save_generations(settings: EvalSettings, task: str, module, records: list[dict]) -> Path:
    path = generations_file(settings, task)
    with atomic_file(path) as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_json(_identity_file(settings, task), identity(settings, module, with_scoring=False))
    return path


def saved_generations(settings: EvalSettings, task: str, module) -> list[dict] | None:
    """The generations an interrupted run of the same settings left, or None (always None with --force)."""
    path, marker = generations_file(settings, task), _identity_file(settings, task)
    if settings.force or not (path.is_file() and marker.is_file()):
        return None
    try:
        if json.loads(marker.read_text(encoding="utf-8")) != identity(settings, module, with_scoring=False):
            return None
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: generate again


def discard_generations(settings: EvalSettings, task: str) -> None:
    for path in (_identity_file(settings, task), generations_file(settings, task)):
        path.unlink(missing_ok=True)


def already_finished(settings: EvalSettings, task: str, module) -> bool:
    """True when OUT_DIR/<task> holds this run's finished result; raises when it holds something else."""
    target = settings.output_dir / task
    if settings.force or not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return False
    if not target.is_dir():
        raise TuluError(f"{target}: exists and is not a directory")
    try:
        saved = json.loads((target / "settings.json").read_text(encoding="utf-8"))
        finished = (target / "metrics.json").is_file() and saved.get("rescored_from") is None and \
            {"model_dir": saved["settings"]["model_dir"], "task_settings": saved["task_settings"]} \
            == identity(settings, module, with_scoring=True)
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        finished = False
    if not finished:
        raise TuluError(f"{target}: already exists and holds other results (another model or other settings); "
                        f"pass --force to overwrite it or choose another --output-dir")
    return True

