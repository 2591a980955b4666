"""Interrupted runs: generations kept until their task is scored, and tasks that already finished.

Generating is the expensive part of most tasks, and scoring can fail or be killed after it (HumanEval executes
thousands of programs; ToxiGen and TruthfulQA load classifier models). So a task's generations are written to
`OUT_DIR/.<task>.generations.jsonl` (a normal predictions file) before scoring starts, with the run's identity
beside them in `.<task>.generations.json`; a rerun of the same command scores them instead of generating again,
and they are removed once the task's folder is complete.

A task folder only appears complete (it is written atomically), so after Ctrl-C a rerun skips the tasks whose
folder holds a finished result of the same run (same model and task settings) and says so; `--force` runs them
again. A folder holding something else is an error rather than a silent skip.

"Same model" means the same folder holding the same weights: a model re-merged or retrained into the same folder
is another model, and results of the old weights are stale. Each result records a fingerprint of the weights
(`model.base_fingerprint`: every safetensors file's size and header, and the first and last 4 KiB of every
tensor's data, hashed; config.json hashed whole; pickle `.bin` files by size and modification time, having no
tensor table to sample). Content rather than modification times, so a model copied or touched keeps its results,
while a merge of another adapter changes every merged tensor from its first bytes on. A task whose result was
made from other weights in the same folder is run again and replaced (its results describe a model that is
gone). A folder whose weights are absent cannot contradict a result: it is taken as the same model, so saved
generations are scored without the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from tulu_lite.errors import TuluError
from tulu_lite.eval.settings import EvalSettings
from tulu_lite.json_files import read_json_object, read_jsonl, write_json, write_jsonl


def identity(settings: EvalSettings, module, *, with_scoring: bool) -> dict:
    """What makes two runs of a task the same: the model and the task's resolved settings (as saved in JSON).
    Without `with_scoring`, settings that only change scoring (timeouts, classifiers, judges) are left out."""
    resolved = {key: value for key, value in module.resolved(settings).items()
                if with_scoring or key not in module.SCORING_KEYS}
    return json.loads(json.dumps({"model_dir": str(settings.model_dir) if settings.model_dir else None,
                                  "task_settings": resolved}))


def model_weights(model_dir: Path | None) -> dict | None:
    """The fingerprint of the weights in `model_dir` (see the module's docstring); None when it holds none."""
    if model_dir is None or not model_dir.is_dir():
        return None
    pickled = sorted(model_dir.glob("*.bin"))
    if not pickled and not any(model_dir.glob("*.safetensors")):
        return None
    # Imported here: tulu_lite.model imports torch, which re-scoring saved predictions never needs.
    from tulu_lite.model.files import base_fingerprint

    stats = {path.name: {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns} for path in pickled}
    return json.loads(json.dumps(base_fingerprint(model_dir) | {"pickle_files": stats}))


def same_weights(recorded: dict | None, current: dict | None) -> bool:
    """Whether a result's recorded weights are those in the model folder now (absent weights contradict nothing)."""
    return current is None or recorded == current


def generations_file(settings: EvalSettings, task: str) -> Path:
    return settings.output_dir / f".{task}.generations.jsonl"


def _identity_file(settings: EvalSettings, task: str) -> Path:
    return settings.output_dir / f".{task}.generations.json"


def save_generations(settings: EvalSettings, task: str, module, records: list[dict], weights: dict | None) -> Path:
    path = generations_file(settings, task)
    write_jsonl(records, path)
    write_json(_identity_file(settings, task), identity(settings, module, with_scoring=False)
               | {"model_weights": weights})
    return path


def saved_generations(settings: EvalSettings, task: str, module, weights: dict | None) -> list[dict] | None:
    """The generations an interrupted run of the same settings and `weights` (`model_weights`) left, or None
    (always None with --force)."""
    path, marker = generations_file(settings, task), _identity_file(settings, task)
    if settings.force or not (path.is_file() and marker.is_file()):
        return None
    try:
        saved = read_json_object(marker)
        if {key: saved.get(key) for key in ("model_dir", "task_settings")} != \
                identity(settings, module, with_scoring=False) or \
                not same_weights(saved.get("model_weights"), weights):
            return None
        return [record for _, record in read_jsonl(path)]
    except (OSError, TuluError):
        return None  # unreadable: generate again


def discard_generations(settings: EvalSettings, task: str) -> None:
    for path in (_identity_file(settings, task), generations_file(settings, task)):
        path.unlink(missing_ok=True)


Finished = Literal["no", "yes", "stale"]


def already_finished(settings: EvalSettings, task: str, module, weights: dict | None) -> Finished:
    """Whether OUT_DIR/<task> holds this run's finished result: "yes"; "stale" when it is the result of the same
    model folder and settings made from weights other than `weights` (the folder's now: run it again); "no" when
    there is none (or --force). Raises when it holds something else."""
    target = settings.output_dir / task
    if settings.force or not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return "no"
    if not target.is_dir():
        raise TuluError(f"{target}: exists and is not a directory")
    try:
        saved = read_json_object(target / "settings.json")
        same_run = (target / "metrics.json").is_file() and saved.get("rescored_from") is None and \
            {"model_dir": saved["settings"]["model_dir"], "task_settings": saved["task_settings"]} \
            == identity(settings, module, with_scoring=True)
    except (OSError, KeyError, TypeError, TuluError):
        same_run = False
    if not same_run:
        raise TuluError(f"{target}: already exists and holds other results (another model or other settings); "
                        f"pass --force to overwrite it or choose another --output-dir")
    return "yes" if same_weights(saved.get("model_weights"), weights) else "stale"
