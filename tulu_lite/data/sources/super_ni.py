"""super_ni: Super-NaturalInstructions is read as its repository lays it out, a folder and not a file.

A split list (``splits/xlingual/train_tasks.txt`` for v1, about 1.4k tasks with non-English ones;
``splits/default/train_tasks.txt`` for clean, about 756 English ones) names the task files ``tasks/NAME.json``;
each task contributes zero-shot and few-shot instances (``--zero-shot-per-task``, ``--few-shot-per-task``,
``--n-few-shot``), sampled in v1 from the conversion's one generator as the reference did, in clean from a
generator seeded per task.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

from tulu_lite.data.sources.conversion import ConvertReport, Example, Run, Style, emit
from tulu_lite.data.templates import (
    few_shot_prompt,
    few_shot_prompt_v1,
    render_instruction,
    render_instruction_v1,
)
from tulu_lite.errors import TuluError, at
from tulu_lite.json_files import read_json_file


def _listing(root: Path, style: Style) -> Path:
    """v1 trained on the cross-lingual task list (about 1.4k tasks, non-English ones included); clean on the
    English default list (about 756)."""
    return root / "splits" / ("xlingual" if style == "v1" else "default") / "train_tasks.txt"


def _tasks(root: Path, style: Style, report: ConvertReport) -> list[tuple[str, str]]:
    listing = _listing(root, style)
    if not listing.is_file():
        other = "clean" if style == "v1" else "v1"
        raise TuluError(f"{root}: not a natural-instructions folder for source 'super_ni' "
                        f"(no {listing.relative_to(root)}; --style {other} reads "
                        f"{_listing(root, other).relative_to(root)})")
    tasks = []
    with listing.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            name = line.strip()
            if not name:
                continue
            if "_mmmlu_" in name:  # translated MMLU tasks would leak the MMLU evaluation (as open-instruct notes)
                report.skipped["super_ni: mmmlu task (evaluation leakage)"] += 1
                continue
            tasks.append((at(listing, number), name))
    return tasks


def _load_task(root: Path, listed_at: str, name: str) -> dict:
    path = root / "tasks" / f"{name}.json"
    if not path.is_file():
        raise TuluError(f"{listed_at}: task {name!r} is listed but {path} does not exist")
    try:
        task = read_json_file(path)
    except TuluError as exc:  # not UTF-8 or not JSON: json_files' line, naming the file and line
        raise TuluError(f"{exc}; expected a natural-instructions task file") from None
    problems = _task_problems(task)
    if problems:
        raise TuluError(f"{path}: not a natural-instructions task file for 'super_ni': {problems}")
    return task


def _task_problems(task: object) -> str:
    if not isinstance(task, dict):
        return f"top level is {type(task).__name__}, expected an object"
    definition = task.get("Definition")
    if not (isinstance(definition, list) and definition and isinstance(definition[0], str)):
        return "Definition must be a non-empty list of strings"
    for key in ("Positive Examples", "Instances"):
        items = task.get(key)
        if not isinstance(items, list):
            return f"{key!r} must be a list"
        for number, item in enumerate(items):
            if not (isinstance(item, dict) and isinstance(item.get("input"), str) and "output" in item):
                return f"{key}[{number}] must be an object with input and output"
    for number, instance in enumerate(task["Instances"]):
        if not (isinstance(instance["output"], list) and all(isinstance(o, str) for o in instance["output"])):
            return f"Instances[{number}].output must be a list of strings"
    return ""


def task_count(root: Path, style: Style) -> int:
    """The tasks a conversion will read (for a progress bar); 0 when the split list is missing."""
    listing = _listing(root, style)
    if not listing.is_file():
        return 0
    with listing.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip() and "_mmmlu_" not in line)


def convert_folder(root: Path, run: Run, on_task: Callable[[int], None] | None) -> Iterator[dict]:
    """The output records of every listed task, in list order; `on_task` is told of each task done."""
    for listed_at, name in _tasks(root, run.options.style, run.report):
        task = _load_task(root, listed_at, name)
        run.report.records_read += 1
        where = f"{root / 'tasks' / name}.json"
        examples = _task_v1(task, name, run) if run.v1 else _task_clean(task, name, run)
        for example_id, messages in examples:
            record = emit(run, example_id, messages, where)
            if record is not None:
                yield record
        if on_task is not None:
            on_task(1)


def _task_clean(task: dict, name: str, run: Run) -> Iterator[Example]:
    options = run.options
    rng = random.Random(f"{options.seed}:super_ni:{name}")
    wanted = options.zero_shot_per_task + options.few_shot_per_task
    instances = task["Instances"]
    instances = rng.sample(instances, wanted) if wanted < len(instances) else list(instances)
    definition = task["Definition"][0]
    for position, instance in enumerate(instances):
        if not instance["output"] or not instance["output"][0].strip():
            run.report.skipped["empty output"] += 1
            continue
        example_id = f"super_ni_{instance.get('id', f'{name}-{position}')}"
        if position < options.zero_shot_per_task:
            prompt = render_instruction(definition, instance["input"], options.seed, example_id)
        else:
            positives = task["Positive Examples"]
            shots = rng.sample(positives, options.n_few_shot) if options.n_few_shot < len(positives) else positives
            prompt = few_shot_prompt(definition, shots, instance["input"])
        yield example_id, [{"role": "user", "content": prompt},
                           {"role": "assistant", "content": instance["output"][0].strip()}]


def _task_v1(task: dict, name: str, run: Run) -> Iterator[Example]:
    """As v1: sample zero+few-shot instances from the shared generator, the first ones zero-shot with a random
    template, the rest few-shot with sampled positive examples; the first reference output, empty or not."""
    options, rng = run.options, run.rng
    wanted = options.zero_shot_per_task + options.few_shot_per_task
    instances = task["Instances"]
    instances = rng.sample(instances, wanted) if wanted < len(instances) else instances
    definition, positives = task["Definition"][0], task["Positive Examples"]
    for position, instance in enumerate(instances):
        example_id = f"super_ni_{instance.get('id', f'{name}-{position}')}"
        output = instance["output"][0] if instance["output"] else None
        if position < options.zero_shot_per_task:
            prompt, completion = render_instruction_v1(definition, instance["input"], output or "", rng)
        else:
            shots = rng.sample(positives, options.n_few_shot) if options.n_few_shot < len(positives) else positives
            prompt, completion = few_shot_prompt_v1(definition, shots, instance["input"]), (output or "").strip()
        if output is None:  # the reference stops with an IndexError here; the draws above keep the sequence
            run.report.skipped["super_ni: instance without any output (the reference stops here)"] += 1
            continue
        yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
