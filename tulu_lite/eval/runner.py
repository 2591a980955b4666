"""Running tasks, writing each task's outputs, re-scoring saved predictions, and the summary table.

Per task, `OUT_DIR/<task>/` holds `predictions.jsonl` (one record per example: the exact prompt, the raw model
output, the text after the stop rule, the extracted answer and whether it counted), `metrics.json` (tulu-lite's
layout in percent, plus `open_instruct`: the reference's metrics.json for the same outputs) and `settings.json`
(the resolved settings, enough to rerun). Each task directory is written atomically, so an interrupted run never
leaves half a result; `resume` keeps generations across a crash in scoring and skips finished tasks on a rerun.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import tulu_lite
from tulu_lite.errors import TuluError
from tulu_lite.eval import (
    alpaca_eval,
    bbh,
    bbh_direct,
    gsm,
    gsm_direct,
    humaneval,
    mmlu,
    resume,
    toxigen,
    truthfulqa,
    tydiqa,
)
from tulu_lite.eval.predictions import read_predictions
from tulu_lite.eval.progress import notice
from tulu_lite.eval.settings import EvalSettings
from tulu_lite.eval.task import EvalTask
from tulu_lite.json_files import read_json_file, write_json, write_jsonl
from tulu_lite.outputs import atomic_dir, ensure_writable

# task name -> the module that implements it (see eval/task.py for what each provides)
TASK_MODULES: dict[str, EvalTask] = {
    "mmlu": mmlu, "gsm": gsm, "bbh": bbh, "tydiqa": tydiqa, "codex_humaneval": humaneval, "truthfulqa": truthfulqa,
    "toxigen": toxigen, "alpaca_eval": alpaca_eval, "gsm_direct": gsm_direct, "bbh_direct": bbh_direct}


@dataclass(frozen=True)
class TaskResult:
    task: str
    metrics: dict
    headline: float | None
    label: str
    examples: int
    seconds: float
    output_dir: Path
    skipped: bool = False


def check_scoring_models(settings: EvalSettings) -> None:
    """Classifier and judge folders given for the tasks that use them must look like model folders."""
    given = [("toxigen", settings.toxigen_classifier, "classifier"), ("truthfulqa", settings.truthfulqa_judge, "judge"),
             ("truthfulqa", settings.truthfulqa_info_judge, "judge")]
    for task, folder, what in given:
        if task in settings.tasks and folder is not None and not (folder / "config.json").is_file():
            raise TuluError(f"{folder}: not a {what} model directory (no config.json)")


def check_output_dir(settings: EvalSettings) -> None:
    """OUT_DIR must be (or become) a directory we can write in: checked before anything slow happens."""
    if settings.output_dir.exists() and not settings.output_dir.is_dir():
        raise TuluError(f"--output-dir {settings.output_dir}: is a file, not a directory")
    ensure_writable(settings.output_dir / settings.tasks[0], "--output-dir")  # probes inside OUT_DIR if it exists


def preflight(settings: EvalSettings, weights: dict | None) -> dict[str, resume.Finished]:
    """Before any model loads: a writable output location, every task's data read and validated, scoring models
    present; returns which tasks already finished in an earlier run of the same command on the same `weights`."""
    check_output_dir(settings)
    for task in settings.tasks:
        TASK_MODULES[task].load(settings)  # reads and validates the task's files; raises on the first problem
    check_scoring_models(settings)
    return {task: resume.already_finished(settings, task, TASK_MODULES[task], weights) for task in settings.tasks}


class _LazyModel:
    """The model under evaluation, loaded the first time a task needs to generate; `weights` is the fingerprint
    of its folder's weights (`resume.model_weights`), recorded with every result."""

    def __init__(self, settings: EvalSettings, weights: dict | None, lm=None):
        self.settings, self.weights, self.lm = settings, weights, lm

    def get(self):
        if self.lm is None:
            from tulu_lite.eval.generate import LanguageModel, load_model

            if self.settings.model_dir is None:
                raise TuluError("a model directory is required (or --predictions FILE to re-score saved predictions)")
            model, tokenizer = load_model(self.settings.model_dir)
            self.lm = LanguageModel(model, tokenizer, batch_size=self.settings.batch_size, seed=self.settings.seed)
        return self.lm


def evaluate(settings: EvalSettings, lm=None) -> list[TaskResult]:
    """Run every task in `settings.tasks` on the model in `settings.model_dir` (or an already loaded `lm`)."""
    weights = resume.model_weights(settings.model_dir)
    finished = preflight(settings, weights)
    model = _LazyModel(settings, weights, lm)
    results = []
    for task in settings.tasks:
        if finished[task] == "yes":
            notice(f"{task}: already finished in {settings.output_dir / task} (same model and settings); "
                   f"skipped (--force runs it again)")
            results.append(read_result(task, settings.output_dir / task))
            continue
        if finished[task] == "stale":
            notice(f"{task}: {settings.output_dir / task} holds results not made from the weights now in "
                   f"{settings.model_dir} (merged or trained again since?); running it again to replace them")
        results.append(run_task(task, settings, model, replace=finished[task] == "stale"))
    return results


def run_task(task: str, settings: EvalSettings, model: _LazyModel, replace: bool = False) -> TaskResult:
    """Generate (or take an interrupted run's generations), score and write one task; `replace` overwrites a stale
    result of the same task."""
    module = TASK_MODULES[task]
    records = resume.saved_generations(settings, task, module, model.weights)
    if records is None:
        lm = model.get()
        start = time.monotonic()
        records = [{"protocol": settings.protocol, **record} for record in module.predict(settings, lm)]
        saved = resume.save_generations(settings, task, module, records, model.weights)
    else:
        start = time.monotonic()
        saved = resume.generations_file(settings, task)
        notice(f"{task}: continuing from {len(records):,} generations saved by an interrupted run ({saved})")
    try:
        metrics = module.score(records, settings)
    except Exception as exc:
        raise TuluError(f"{task}: scoring failed ({type(exc).__name__}: {exc}); the generations are kept in {saved}: "
                        f"rerun the same command to score them (or re-score with --predictions {saved})") from exc
    result = write_task(task, records, metrics, settings, time.monotonic() - start, weights=model.weights,
                        replace=replace)
    resume.discard_generations(settings, task)
    return result


def read_result(task: str, folder: Path) -> TaskResult:
    """The result of a task that finished in an earlier run."""
    metrics = read_json_file(folder / "metrics.json")
    saved = read_json_file(folder / "settings.json")
    with open(folder / "predictions.jsonl", encoding="utf-8") as handle:
        examples = sum(1 for line in handle if line.strip())
    module = TASK_MODULES[task]
    return TaskResult(task, metrics, module.headline(metrics), module.headline_label(metrics), examples,
                      float(saved.get("seconds", 0.0)), folder, skipped=True)


def rescore(settings: EvalSettings, predictions_file: Path) -> TaskResult:
    """Score saved predictions again (no model); writes a full task folder under `settings.output_dir`."""
    if len(settings.tasks) != 1:
        raise TuluError(f"--predictions re-scores one task at a time; --tasks names {len(settings.tasks)}")
    task = settings.tasks[0]
    module = TASK_MODULES[task]
    check_output_dir(settings)
    target = settings.output_dir / task
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not settings.force:
        raise TuluError(f"{target}: already exists and is not empty (pass --force to overwrite)")
    predictions = read_predictions(predictions_file, task, module.PREDICTION_KEYS, settings)
    check_scoring_models(settings)
    start = time.monotonic()
    metrics = module.score(predictions, settings)
    return write_task(task, predictions, metrics, settings, time.monotonic() - start, source=predictions_file)


def write_task(task: str, predictions: list[dict], metrics: dict, settings: EvalSettings, seconds: float,
               source: Path | None = None, weights: dict | None = None, replace: bool = False) -> TaskResult:
    """OUT_DIR/<task> written atomically: predictions, metrics, settings (with the fingerprint of the model's
    `weights`, or the re-scored file as `source`) and the task's extra files."""
    module = TASK_MODULES[task]
    target = settings.output_dir / task
    record = {"task": task, "tulu_lite_version": tulu_lite_version(), "settings": settings.model_dump(mode="json"),
              "task_settings": module.resolved(settings) if source is None else {}, "model_weights": weights,
              "rescored_from": str(source) if source else None, "seconds": round(seconds, 2)}
    if source is not None and (source.parent / "settings.json").is_file():
        # The run that produced the predictions (model, prompts, decoding) stays on record.
        record["source_settings"] = read_json_file(source.parent / "settings.json")
    with atomic_dir(target, force=settings.force or replace) as tmp:
        write_jsonl(predictions, tmp / "predictions.jsonl")
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "settings.json", record)
        for name, value in module.extra_files(predictions).items():
            write_json(tmp / name, value)
    return TaskResult(task, metrics, module.headline(metrics), module.headline_label(metrics), len(predictions),
                      seconds, target)


def tulu_lite_version() -> str:
    try:
        from importlib.metadata import version

        return version("tulu-lite")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return getattr(tulu_lite, "__version__", "unknown")


def summary_table(results: list[TaskResult], title: str = "tulu-lite eval") -> Table:
    protocols = sorted({r.metrics.get("protocol", "tulu-lite") for r in results})
    table = Table(title=f"{title} (protocol {', '.join(protocols)})" if protocols else title)
    for column, justify in (("task", "left"), ("metric", "left"), ("score", "right"), ("examples", "right"),
                            ("time", "right")):
        table.add_column(column, justify=justify)
    for result in results:
        value = "—" if result.headline is None else f"{result.headline:.1f}"
        if result.headline is None and result.metrics.get("reason"):
            value = "[dim]not scored[/]"
        time_cell = "done" if result.skipped else f"{result.seconds:.0f}s"
        table.add_row(result.task, result.label, value, f"{result.examples:,}", time_cell)
    return table


def print_summary(results: list[TaskResult], console: Console) -> None:
    console.print(summary_table(results))
    for result in results:
        for key in ("reason", "note"):
            if result.metrics.get(key):
                console.print(f"[dim]{result.task}: {result.metrics[key]}[/]")
    folders = sorted({str(result.output_dir.parent) for result in results})
    console.print(f"results (predictions.jsonl, metrics.json, settings.json per task) in {', '.join(folders)}")

