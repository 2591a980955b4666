"""Mixtures: several converted files, each capped or subsampled, shuffled together reproducibly.

A mixture YAML lists sources and a seed::

    seed: 42
    sources:
      - {path: converted/flan_v2.jsonl, max_examples: 100000}
      - {path: converted/dolly.jsonl}                  # everything
      - {path: converted/oasst1.jsonl, fraction: 0.5, name: oasst1-half}

Paths are relative to the YAML file. Mixing is two streaming passes: the first validates every line and remembers
only its byte offset; the selected offsets are shuffled with the seed and the second pass reads those lines back in
that order. Memory is 8 bytes per input line, whatever the files' sizes.
"""

from __future__ import annotations

import json
import os
import random
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.table import Table

from tulu_lite.config import Problem, format_problems, read_yaml, validation_problems
from tulu_lite.data.conversations import parse_line, write_conversations
from tulu_lite.data.sources import meta_path
from tulu_lite.errors import TuluError, at
from tulu_lite.outputs import write_json


class MixtureSource(BaseModel):
    """One converted file in a mixture: all of it, at most `max_examples` of it, or a `fraction` of it."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    name: str | None = None  # label in the summary table (default: the file name)
    max_examples: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_cap(self) -> MixtureSource:
        if self.max_examples is not None and self.fraction is not None:
            raise ValueError("give max_examples or fraction, not both")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path.name


class Mixture(BaseModel):
    """A mixture YAML, validated; `sources[*].path` are absolute once loaded."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    sources: list[MixtureSource] = Field(min_length=1)


# ---- loading and validating the YAML --------------------------------------------------------------------------


def _file_problems(data: dict, base: Path) -> list[Problem]:
    """Missing or repeated source files, read from the raw YAML so they are reported with any schema problems."""
    problems, seen = [], {}
    entries = data.get("sources") if isinstance(data.get("sources"), list) else []
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
            continue
        resolved = (base / entry["path"]).resolve()
        if not resolved.is_file():
            problems.append(Problem(("sources", index, "path"), f"file not found: {resolved}"))
        if resolved in seen:
            problems.append(Problem(("sources", index, "path"), f"same file as sources[{seen[resolved]}]"))
        seen.setdefault(resolved, index)
    return problems


def load_mixture(path: str | os.PathLike, *, check_files: bool = True) -> Mixture:
    """Read and validate a mixture YAML; every problem is reported at once, each as ``file:line: key: what``."""
    path = Path(path)
    data, lines, problems = read_yaml(path, "mixture", Mixture)
    if check_files:
        problems += _file_problems(data, path.parent)
    try:
        mixture = Mixture.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, Mixture)
    if problems:
        raise TuluError(format_problems(path, lines, problems))
    for source in mixture.sources:
        source.path = (path.parent / source.path).resolve()
    return mixture


# ---- planning: which lines of which file ----------------------------------------------------------------------


@dataclass
class SourcePlan:
    """One source after the first pass: its lines' offsets, what it holds, and which lines were picked."""

    source: MixtureSource
    offsets: array  # byte offset of every record line
    datasets: Counter
    selected: array = field(default_factory=lambda: array("q"))

    @property
    def available(self) -> int:
        return len(self.offsets)

    @property
    def requested(self) -> str:
        if self.source.max_examples is not None:
            return f"max {self.source.max_examples:,}"
        if self.source.fraction is not None:
            return f"{self.source.fraction:g} ×"
        return "all"


def index_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[array, Counter]:
    """Validate every line of a conversation file; return the byte offsets of its records and its datasets."""
    offsets, datasets, position = array("q"), Counter(), 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TuluError(f"{at(path, number)}: not UTF-8 text ({exc.reason})") from None
                record = parse_line(text, at(path, number))
                offsets.append(position)
                datasets[str(record.get("dataset", "?"))] += 1
            position += len(raw)
            if on_bytes is not None:
                on_bytes(len(raw))
    return offsets, datasets


def _take_count(source: MixtureSource, available: int) -> int:
    if source.max_examples is not None:
        return min(source.max_examples, available)
    if source.fraction is not None:
        return min(available, max(1, round(source.fraction * available))) if available else 0
    return available


def plan_mixture(mixture: Mixture, on_bytes: Callable[[int], None] | None = None) -> list[SourcePlan]:
    """First pass: index every file and pick, per source, which lines go in (seeded, independent of order)."""
    plans = []
    for source in mixture.sources:
        offsets, datasets = index_file(source.path, on_bytes)
        plan = SourcePlan(source, offsets, datasets)
        count = _take_count(source, plan.available)
        rng = random.Random(f"{mixture.seed}:mix:{source.label}")
        picked = sorted(rng.sample(range(plan.available), count)) if count < plan.available else range(count)
        plan.selected = array("q", (offsets[index] for index in picked))
        plans.append(plan)
    return plans


_OFFSET_BITS = 44  # files up to 16 TiB, up to 2**19 sources


def iter_mixture(plans: list[SourcePlan], seed: int) -> Iterator[dict]:
    """Second pass: the selected records of all sources, shuffled with `seed`, read back one line at a time."""
    # (source number, byte offset) packed into one int64 per record: 8 bytes each, shuffled in place.
    order = array("q", (number << _OFFSET_BITS | offset for number, plan in enumerate(plans)
                        for offset in plan.selected))
    random.Random(f"{seed}:shuffle").shuffle(order)
    handles = [plan.source.path.open("rb") for plan in plans]
    try:
        for packed in order:
            number, offset = packed >> _OFFSET_BITS, packed & ((1 << _OFFSET_BITS) - 1)
            handle = handles[number]
            handle.seek(offset)
            line = handle.readline().decode("utf-8")
            yield parse_line(line, f"{plans[number].source.path} (byte {offset}; changed while mixing?)")
    finally:
        for handle in handles:
            handle.close()


# ---- the whole command ----------------------------------------------------------------------------------------


@dataclass
class MixReport:
    """What each source contributed to a written mixture."""

    out: Path
    seed: int
    rows: list[dict]

    @property
    def total(self) -> int:
        return sum(row["taken"] for row in self.rows)


def _report(out: Path, mixture: Mixture, plans: list[SourcePlan]) -> MixReport:
    rows = [{"name": plan.source.label, "path": str(plan.source.path), "datasets": dict(plan.datasets),
             "available": plan.available, "requested": plan.requested, "taken": len(plan.selected)}
            for plan in plans]
    return MixReport(out, mixture.seed, rows)


def mix(mixture_path: str | os.PathLike, out: str | os.PathLike,
        on_bytes: Callable[[int], None] | None = None) -> MixReport:
    """Write the mixture described by a YAML file to `out` (atomic) plus ``*.meta.json`` with the resolved mixture."""
    mixture = load_mixture(mixture_path)
    plans = plan_mixture(mixture, on_bytes)
    report = _report(Path(out), mixture, plans)
    write_conversations(iter_mixture(plans, mixture.seed), out)
    write_json(meta_path(out), {"command": "mix", "mixture": str(Path(mixture_path).resolve()),
                                "resolved": json.loads(mixture.model_dump_json()), "sources": report.rows,
                                "total": report.total})
    return report


def input_size(mixture: Mixture) -> int:
    """Bytes the first pass reads (for a progress bar)."""
    return sum(source.path.stat().st_size for source in mixture.sources)


def summary_table(report: MixReport) -> Table:
    """A rich table of what each source contributed."""
    table = Table(title=f"mixture → {report.out} (seed {report.seed})")
    for column, justify in (("source", "left"), ("datasets", "left"), ("available", "right"),
                            ("requested", "right"), ("taken", "right"), ("share", "right")):
        table.add_column(column, justify=justify)
    for row in report.rows:
        share = row["taken"] / report.total if report.total else 0.0
        datasets = ", ".join(sorted(row["datasets"]))
        table.add_row(row["name"], datasets, f"{row['available']:,}", row["requested"], f"{row['taken']:,}",
                      f"{share:.1%}")
    table.add_section()
    table.add_row("total", "", f"{sum(row['available'] for row in report.rows):,}", "", f"{report.total:,}", "100%")
    return table
