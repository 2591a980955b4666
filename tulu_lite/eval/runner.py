"""Running tasks, writing each task's outputs, re-scoring saved predictions, and the summary table.

Per task, `OUT_DIR/<task>/` holds `predictions.jsonl` (one record per example, with the raw model output and what
the scorer extracted), `metrics.json` (percentages) and `settings.json` (the resolved settings, enough to rerun).
Each task directory is written atomically, so an interrupted run never leaves half a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tulu_lite
from tulu_lite.errors import TuluError, at
from tulu_lite.eval import alpaca_eval, bbh, gsm, humaneval, mmlu, toxigen, truthfulqa, tydiqa
from tulu_lite.eval.data_files import read_json, read_predictions, require_keys, write_jsonl
from tulu_lite.eval.settings import EvalSettings
from tulu_lite.outputs import atomic_dir, write_json

# task name -> module (each has load, predict, score, headline, resolved, PREDICTION_KEYS, HEADLINE_LABEL)
TASK_MODULES = {"mmlu": mmlu, "gsm": gsm, "bbh": bbh, "tydiqa": tydiqa, "codex_humaneval": humaneval,
                "truthfulqa": truthfulqa, "toxigen": toxigen, "alpaca_eval": alpaca_eval}


@dataclass(frozen=True)
class TaskResult:
    task: str
    metrics: dict
    headline: float | None
    examples: int
    seconds: float
    output_dir: Path


def preflight(settings: EvalSettings) -> None:
    """Find missing or malformed data, occupied output folders and a missing classifier before any model loads."""
    for task in settings.tasks:
        TASK_MODULES[task].load(settings)  # reads and validates the task's files; raises on the first problem
        target = settings.output_dir / task
        if target.is_dir() and any(target.iterdir()) and not settings.force:
            raise TuluError(f"{target}: already exists and is not empty (pass --force to overwrite)")
    if "toxigen" in settings.tasks and settings.toxigen_classifier is not None \
            and not (settings.toxigen_classifier / "config.json").is_file():
        raise TuluError(f"{settings.toxigen_classifier}: not a classifier model directory (no config.json)")


def evaluate(settings: EvalSettings, lm=None) -> list[TaskResult]:
    """Run every task in `settings.tasks` on the model in `settings.model_dir` (or an already loaded `lm`)."""
    preflight(settings)
    if lm is None:
        from tulu_lite.eval.generate import LanguageModel, load_model

        if settings.model_dir is None:
            raise TuluError("a model directory is required (or --predictions FILE to re-score saved predictions)")
        model, tokenizer = load_model(settings.model_dir)
        lm = LanguageModel(model, tokenizer, batch_size=settings.batch_size, seed=settings.seed)
    results = []
    for task in settings.tasks:
        start = time.monotonic()
        module = TASK_MODULES[task]
        predictions = module.predict(settings, lm)
        results.append(score_and_write(task, predictions, settings, start))
    return results


def score_and_write(task: str, predictions: list[dict], settings: EvalSettings, start: float) -> TaskResult:
    """Score and save; if scoring fails, the (expensive) predictions are still saved for --predictions."""
    try:
        metrics = TASK_MODULES[task].score(predictions, settings)
    except Exception as exc:
        failed = {"scored": False, "reason": f"scoring failed: {exc}"}
        saved = write_task(task, predictions, failed, settings, time.monotonic() - start)
        raise TuluError(f"{task}: scoring failed ({exc}); predictions saved in {saved.output_dir} "
                        f"(re-score with --predictions)") from exc
    return write_task(task, predictions, metrics, settings, time.monotonic() - start)


def rescore(settings: EvalSettings, predictions_file: Path) -> TaskResult:
    """Score saved predictions again (no model); writes a full task folder under `settings.output_dir`."""
    if len(settings.tasks) != 1:
        raise TuluError(f"--predictions re-scores one task at a time; --tasks names {len(settings.tasks)}")
    task = settings.tasks[0]
    module = TASK_MODULES[task]
    predictions = read_predictions(predictions_file)
    for number, record in enumerate(predictions, start=1):
        require_keys(record, module.PREDICTION_KEYS, f"{at(predictions_file, number)}: not a {task} prediction")
    start = time.monotonic()
    metrics = module.score(predictions, settings)
    return write_task(task, predictions, metrics, settings, time.monotonic() - start, source=predictions_file)


def write_task(task: str, predictions: list[dict], metrics: dict, settings: EvalSettings, seconds: float,
               source: Path | None = None) -> TaskResult:
    module = TASK_MODULES[task]
    target = settings.output_dir / task
    record = {"task": task, "tulu_lite_version": tulu_lite_version(), "settings": settings.model_dump(mode="json"),
              "task_settings": module.resolved(settings) if source is None else {},
              "rescored_from": str(source) if source else None, "seconds": round(seconds, 2)}
    if source is not None and (source.parent / "settings.json").is_file():
        # The run that produced the predictions (model, prompts, decoding) stays on record.
        record["source_settings"] = read_json(source.parent / "settings.json")
    with atomic_dir(target, force=settings.force) as tmp:
        write_jsonl(tmp / "predictions.jsonl", predictions)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "settings.json", record)
        if task == "alpaca_eval":
            write_json(tmp / alpaca_eval.OUTPUTS_FILE, alpaca_eval.outputs_for_judge(predictions))
    return TaskResult(task, metrics, module.headline(metrics), len(predictions), seconds, target)


def tulu_lite_version() -> str:
    try:
        from importlib.metadata import version

        return version("tulu-lite")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return getattr(tulu_lite, "__version__", "unknown")


def summary_table(results: list[TaskResult], title: str = "tulu-lite eval") -> Table:
    table = Table(title=title)
    for column, justify in (("task", "left"), ("metric", "left"), ("score", "right"), ("examples", "right"),
                            ("time", "right")):
        table.add_column(column, justify=justify)
    for result in results:
        label = TASK_MODULES[result.task].HEADLINE_LABEL
        value = "—" if result.headline is None else f"{result.headline:.1f}"
        if result.headline is None and result.metrics.get("reason"):
            value = "[dim]not scored[/]"
        table.add_row(result.task, label, value, f"{result.examples:,}", f"{result.seconds:.0f}s")
    return table


def print_summary(results: list[TaskResult], console: Console) -> None:
    console.print(summary_table(results))
    for result in results:
        for key in ("reason", "note"):
            if result.metrics.get(key):
                console.print(f"[dim]{result.task}: {result.metrics[key]}[/]")
    folders = sorted({str(result.output_dir.parent) for result in results})
    console.print(f"results (predictions.jsonl, metrics.json, settings.json per task) in {', '.join(folders)}")
