"""Mixtures: several conversation inputs, each capped, subsampled or upsampled, shuffled together reproducibly.

A mixture YAML lists sources and a seed::

    seed: 42
    sources:
      - {path: converted/flan_v2.jsonl, max_examples: 100000}
      - {path: converted/dolly.jsonl}                  # everything
      - {path: converted/oasst1.jsonl, fraction: 0.5, name: oasst1-half}
      - {path: converted/lima.jsonl, fraction: 2}      # every conversation twice
      - {hub: allenai/tulu-v2-sft-mixture, max_examples: 1000}

A source is any conversation input (`tulu_lite.data.inputs`); local paths are relative to the YAML file. Mixing is
two streaming passes: the first validates every record and remembers only where it is (a byte offset into the
JSON Lines file; other inputs are first written, validated, to a temporary JSON Lines file beside the output); the
selected records are shuffled with the seed and the second pass reads them back in that order. Memory is 8 bytes
per record, whatever the inputs' sizes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.table import Table

from tulu_lite.data.conversations import check_output, parse_line
from tulu_lite.data.inputs import (
    CONVERSATIONS,
    RowFormat,
    describe,
    is_plain_jsonl,
    read_records,
)
from tulu_lite.data.sources import meta_path
from tulu_lite.errors import TuluError, at
from tulu_lite.json_files import iter_lines, write_json, write_jsonl
from tulu_lite.recipe import DataSource
from tulu_lite.typed_yaml import (
    Problem,
    format_problems,
    read_yaml,
    validation_problems,
)

# Upsampling repeats every conversation of a source; past this many copies a fraction is a typo (1e7 of a 64-byte
# file is 6.4 GB of the same conversations), not a mixture.
MAX_FRACTION = 100


class MixtureSource(DataSource):
    """One input of a mixture: all of it, at most `max_examples` of it, or `fraction` of it.

    A fraction above 1 upsamples: every conversation ``int(fraction)`` times, plus a seeded sample for the rest; at
    most `MAX_FRACTION`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # label in the summary table (default: the file name, or hf:ID)
    max_examples: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=MAX_FRACTION)

    @model_validator(mode="after")
    def _one_cap(self) -> MixtureSource:
        if self.max_examples is not None and self.fraction is not None:
            raise ValueError("give max_examples or fraction, not both")
        return self

    @property
    def label(self) -> str:
        return self.name or describe(self)


class Mixture(BaseModel):
    """A mixture YAML, validated; local `sources[*].path` are absolute once loaded."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    sources: list[MixtureSource] = Field(min_length=1)


# ---- loading and validating the YAML --------------------------------------------------------------------------


def _file_problems(data: dict, base: Path) -> list[Problem]:
    """Missing or repeated local inputs, read from the raw YAML so they are reported with any schema problems."""
    problems, seen = [], {}
    entries = data.get("sources") if isinstance(data.get("sources"), list) else []
    for index, entry in enumerate(entries):
        location = entry if isinstance(entry, str) else entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(location, str) or location.startswith("hf:"):
            continue
        resolved = (base / location).resolve()
        if not resolved.exists():
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
        if source.path is not None:
            source.path = (path.parent / source.path).resolve()
    return mixture


# ---- planning: which records of which input -------------------------------------------------------------------


@dataclass
class SourcePlan:
    """One source after the first pass: where its records are, what it holds, and which were picked."""

    source: MixtureSource
    file: Path  # the JSON Lines file the records are read back from (the input itself, or its spooled copy)
    offsets: array  # byte offset of every record
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


def index_file(path: Path, on_bytes: Callable[[int], None] | None = None,
               parse: Callable[[str, str], dict] = parse_line) -> tuple[array, Counter]:
    """Validate every line of a conversation file (or pair file, with `PAIRS.parse_line`); return the byte offsets
    of its records and its datasets."""
    offsets, datasets, done = array("q"), Counter(), 0
    for number, offset, text in iter_lines(path):
        record = parse(text, at(path, number))
        offsets.append(offset)
        datasets[str(record.get("dataset", "?"))] += 1
        if on_bytes is not None:
            on_bytes(offset - done)
            done = offset
    if on_bytes is not None:
        on_bytes(path.stat().st_size - done)
    return offsets, datasets


def _spool(source: MixtureSource, spool_dir: Path, number: int, rows: RowFormat) -> Path:
    """An input that is not tulu-lite JSON Lines, validated and written as such (only for the length of the mix)."""
    target = spool_dir / f"source-{number}.jsonl"
    with target.open("w", encoding="utf-8") as handle:
        for record in read_records(source, rows):
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return target


def take_indices(source: MixtureSource, available: int, rng: random.Random) -> array:
    """Which records of a source go in (positions, in file order; an upsampled one repeats positions).

    `max_examples` and a fraction up to 1 sample without replacement; a fraction above 1 takes every record
    ``int(fraction)`` times and samples the remainder, so each record appears as evenly as the count allows.
    An array of int64 (8 bytes a position), not a list: an upsampled source costs no Python object per repeat.
    """
    if not available:
        return array("q")
    if source.max_examples is not None:
        count = min(source.max_examples, available)
    elif source.fraction is not None:
        count = max(1, round(source.fraction * available))
    else:
        count = available
    repeats, rest = divmod(count, available)
    extra = set(rng.sample(range(available), rest))
    return array("q", (index for index in range(available) for _ in range(repeats + (index in extra))))


def plan_mixture(mixture: Mixture, spool_dir: Callable[[], Path],
                 on_bytes: Callable[[int], None] | None = None, rows: RowFormat = CONVERSATIONS) -> list[SourcePlan]:
    """First pass: index every input and pick, per source, which records go in (seeded, independent of order).

    `spool_dir()` gives the folder where inputs other than tulu-lite JSON Lines are written as JSON Lines. `rows`:
    what the records are (conversations, or `tulu_lite.data.pairs.PAIRS`).
    """
    plans = []
    for number, source in enumerate(mixture.sources):
        plain = is_plain_jsonl(source)
        file = source.path if plain else _spool(source, spool_dir(), number, rows)
        offsets, datasets = index_file(file, on_bytes if plain else None, rows.parse_line)  # progress: input bytes
        plan = SourcePlan(source, file, offsets, datasets)
        rng = random.Random(f"{mixture.seed}:mix:{source.label}")
        plan.selected = array("q", (offsets[index] for index in take_indices(source, plan.available, rng)))
        plans.append(plan)
    return plans


_OFFSET_BITS = 44  # files up to 16 TiB, up to 2**19 sources


def iter_mixture(plans: list[SourcePlan], seed: int, rows: RowFormat = CONVERSATIONS) -> Iterator[dict]:
    """Second pass: the selected records of all sources, shuffled with `seed`, read back one line at a time."""
    # (source number, byte offset) packed into one int64 per record: 8 bytes each, shuffled in place.
    order = array("q", (number << _OFFSET_BITS | offset for number, plan in enumerate(plans)
                        for offset in plan.selected))
    random.Random(f"{seed}:shuffle").shuffle(order)
    with _OpenFiles([plan.file for plan in plans]) as files:
        for packed in order:
            number, offset = packed >> _OFFSET_BITS, packed & ((1 << _OFFSET_BITS) - 1)
            handle = files.get(number)
            handle.seek(offset)
            line = handle.readline().decode("utf-8").removeprefix("\ufeff")
            yield rows.parse_line(line, f"{plans[number].file} (byte {offset}; changed while mixing?)")


class _OpenFiles:
    """The sources' files, at most `limit` of them open at once (the least recently read is closed first).

    A mixture of thousands of files must not need thousands of file descriptors (``ulimit -n`` is often 1024);
    with at most a few dozen sources, as usual, every file is opened once.
    """

    def __init__(self, paths: list[Path], limit: int = 64) -> None:
        self.paths, self.limit = paths, limit
        self.handles: OrderedDict[int, BinaryIO] = OrderedDict()

    def get(self, number: int) -> BinaryIO:
        handle = self.handles.get(number)
        if handle is not None:
            self.handles.move_to_end(number)
            return handle
        if len(self.handles) >= self.limit:
            self.handles.popitem(last=False)[1].close()
        handle = self.handles[number] = self.paths[number].open("rb")
        return handle

    def __enter__(self) -> _OpenFiles:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles.values():
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
    rows = [{"name": plan.source.label, "path": str(plan.source.path or plan.source.label),
             "datasets": dict(plan.datasets),
             "available": plan.available, "requested": plan.requested, "taken": len(plan.selected)}
            for plan in plans]
    return MixReport(out, mixture.seed, rows)


def mix(mixture_path: str | os.PathLike, out: str | os.PathLike, *, force: bool = False,
        on_bytes: Callable[[int], None] | None = None, rows: RowFormat | None = None) -> MixReport:
    """Write the mixture described by a YAML file to `out` (atomic) plus ``*.meta.json`` with the resolved mixture.

    Refused before anything is read: an output that is one of the sources (or the YAML), an existing output
    without `force`. `rows` None: preference pairs when the first source has chosen and rejected columns, else
    conversations.
    """
    mixture, out = load_mixture(mixture_path), Path(out)
    local = [source.path for source in mixture.sources if source.path is not None]
    check_output(out, [*local, Path(mixture_path)], force=force, sidecars=[meta_path(out)])
    rows = rows or _record_format(mixture)
    spool: list[Path] = []

    def spool_dir() -> Path:  # made on first use, beside the output; named so a killed run's copy is cleaned up
        if not spool:
            out.parent.mkdir(parents=True, exist_ok=True)
            spool.append(Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-spool", dir=out.parent)))
        return spool[0]

    try:
        plans = plan_mixture(mixture, spool_dir, on_bytes, rows)
        report = _report(out, mixture, plans)
        write_jsonl(iter_mixture(plans, mixture.seed, rows), out)
    finally:
        for folder in spool:
            shutil.rmtree(folder, ignore_errors=True)
    write_json(meta_path(out), {"command": "mix", "mixture": str(Path(mixture_path).resolve()),
                                "resolved": mixture.model_dump(mode="json"), "sources": report.rows,
                                "total": report.total})
    return report


def _record_format(mixture: Mixture) -> RowFormat:
    """Pairs when the first source looks like pairs; conversations otherwise (its errors then come from reading)."""
    from tulu_lite.data.pairs import PAIRS, looks_like_pairs

    try:
        return PAIRS if looks_like_pairs(mixture.sources[0]) else CONVERSATIONS
    except TuluError:
        return CONVERSATIONS


def input_size(mixture: Mixture) -> int:
    """Bytes the first pass reads from local JSON Lines inputs (for a progress bar; other inputs add none)."""
    return sum(source.path.stat().st_size for source in mixture.sources
               if source.path is not None and source.path.is_file())


def summary_table(report: MixReport) -> Table:
    """A rich table of what each source contributed (taken above available: upsampled)."""
    table = Table(title=f"mixture → {report.out} (seed {report.seed})")
    for column, justify in (("source", "left"), ("datasets", "left"), ("available", "right"),
                            ("requested", "right"), ("taken", "right"), ("share", "right")):
        table.add_column(column, justify=justify)
    for row in report.rows:
        share = row["taken"] / report.total if report.total else 0.0
        datasets = ", ".join(sorted(row["datasets"]))
        taken = f"{row['taken']:,}" + (" (upsampled)" if row["taken"] > row["available"] else "")
        table.add_row(row["name"], datasets, f"{row['available']:,}", row["requested"], taken, f"{share:.1%}")
    table.add_section()
    table.add_row("total", "", f"{sum(row['available'] for row in report.rows):,}", "", f"{report.total:,}", "100%")
    return table
