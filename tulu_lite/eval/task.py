"""The contract every eval task satisfies: what the runner, re-scoring, resuming and `eval compare` call.

A task is a module of `tulu_lite.eval` (`mmlu`, `gsm`, `codex_humaneval`'s `humaneval`, ...) listed in the
runner's table; modules satisfy `EvalTask` as a `typing.Protocol` (PEP 544 lets a module implement one). The
runner never asks which task it is running: what differs between tasks (TruthfulQA's headline depends on whether
answers were judged, AlpacaEval writes its judge's input file) is behind these members. To add a task: write a
module with every member below, add it to `runner.TASK_MODULES` and its name to `settings.TaskName`;
`interface_problems(module)` (run by the tests for every task in the table) says what is missing or misshapen.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # generate imports torch: only for type checkers
    from tulu_lite.eval.generate import LanguageModel
    from tulu_lite.eval.settings import EvalSettings


@runtime_checkable
class EvalTask(Protocol):
    """One benchmark: reading its data, generating or scoring with the model, and scoring saved predictions."""

    NAME: str  # the task's name in `--tasks` and its output folder (OUT_DIR/NAME)
    PREDICTION_KEYS: tuple[str, ...]  # keys every saved prediction needs for `score` (checked on re-scoring)
    SCORING_KEYS: tuple[str, ...]  # keys of `resolved` that change scoring only: saved generations stay usable

    def load(self, settings: EvalSettings) -> Any:
        """Read and validate the task's data (raises TuluError on the first problem); runs before a model loads."""

    def predict(self, settings: EvalSettings, lm: LanguageModel) -> list[dict]:
        """One record per example (per sample): the prompt, the model's raw output or scores, the gold answer."""

    def score(self, predictions: list[dict], settings: EvalSettings) -> dict:
        """The metrics of the records (adds what was extracted and judged to each record); needs no model."""

    def headline(self, metrics: dict) -> float | None:
        """The one number of the summary table and `eval compare`; None when the task has none."""

    def headline_label(self, metrics: dict) -> str:
        """What the headline number is (it may depend on the metrics, e.g. judged or multiple choice)."""

    def resolved(self, settings: EvalSettings) -> dict:
        """Every setting that decides the numbers, resolved for this task (saved in settings.json)."""

    def extra_files(self, predictions: list[dict]) -> dict[str, Any]:
        """Files written beside predictions.jsonl: name -> JSON value (e.g. an external judge's input)."""


def members() -> dict[str, inspect.Signature | None]:
    """The contract's members: functions with their signatures (without `self`), constants with None."""
    found: dict[str, inspect.Signature | None] = dict.fromkeys(EvalTask.__annotations__)
    for name, value in vars(EvalTask).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            signature = inspect.signature(value)
            found[name] = signature.replace(parameters=list(signature.parameters.values())[1:])
    return found


def interface_problems(task: object) -> list[str]:
    """What keeps `task` (a module) from satisfying `EvalTask`: missing members, constants of the wrong type, and
    functions that cannot be called as the contract calls them (other parameter names, order or kinds; extra
    parameters are fine when they have defaults)."""
    problems = []
    for name, wanted in members().items():
        if not hasattr(task, name):
            problems.append(f"no {name}")
        elif wanted is None:
            value = getattr(task, name)
            expected = str if name == "NAME" else tuple
            if not isinstance(value, expected) or (expected is tuple and not all(isinstance(v, str) for v in value)):
                problems.append(f"{name} is not a {'str' if expected is str else 'tuple of str'}")
        elif not callable(getattr(task, name)):
            problems.append(f"{name} is not a function")
        else:
            problems += [f"{name}: {problem}" for problem in _call_problems(getattr(task, name), wanted)]
    return problems


def _call_problems(function: object, wanted: inspect.Signature) -> list[str]:
    """How `function`'s parameters differ from `wanted`'s (same names, order and kinds; extras defaulted)."""
    have = list(inspect.signature(function).parameters.values())
    need = list(wanted.parameters.values())
    problems = [f"parameter {i + 1} is {p.name!r} ({p.kind.description}), expected {q.name!r} ({q.kind.description})"
                for i, (p, q) in enumerate(zip(have, need)) if (p.name, p.kind) != (q.name, q.kind)]
    if len(have) < len(need):
        problems.append(f"takes {len(have)} parameters, expected {len(need)}")
    problems += [f"extra parameter {p.name!r} has no default" for p in have[len(need):]
                 if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return problems
