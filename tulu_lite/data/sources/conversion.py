"""What every converter shares: a conversion's options, report and running state, the `Source` row type the table
is made of, the check that a released record has its source's fields, and the output record.

Converters (`clean`, `v1`, `super_ni`) import from here and never from the table or the pipeline, so the table can
refer to them without an import cycle.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

from tulu_lite.data.conversations import validate_messages
from tulu_lite.data.raw import RawRecord, preview
from tulu_lite.errors import TuluError

Messages = list[dict]
Example = tuple[str, Messages]  # (id, messages)
Style = Literal["v1", "clean"]
STYLES: tuple[str, ...] = ("v1", "clean")
SHAREGPT_SPLIT_DEFAULT = 2048  # LLaMA tokens per part, as TÜLU v1 split ShareGPT

# ---- options and report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that changes a conversion's output (saved beside the output as ``*.meta.json``)."""

    style: Style = "v1"
    seed: int = 42
    max_examples: int | None = None  # keep this many output examples (seeded bottom-k sample), None = all
    top_k_reply: int | None = None  # oasst1: keep the K best replies by quality at every node, None = all
    zero_shot_per_task: int = 60  # super_ni: zero-shot instances per task (open-instruct's default)
    few_shot_per_task: int = 20  # super_ni: few-shot instances per task
    n_few_shot: int = 2  # super_ni: positive examples shown in a few-shot prompt
    cot_zero_shot: int = 50000  # cot, v1: examples drawn from cot_zsopt.jsonl (the reference's cap)
    cot_few_shot: int = 50000  # cot, v1: examples drawn from cot_fsopt.jsonl
    split_max_tokens: int | None = None  # sharegpt: tokens per split part (2048 when a tokenizer is given)
    tokenizer: str | None = None  # sharegpt: tokenizer directory whose tokens are counted to split

    @property
    def split_budget(self) -> int | None:
        """Tokens per ShareGPT part, or None when no tokenizer is given (nothing is split)."""
        if self.tokenizer is None:
            return None
        return self.split_max_tokens if self.split_max_tokens is not None else SHAREGPT_SPLIT_DEFAULT


@dataclass
class ConvertReport:
    """What a conversion read, wrote, skipped and repaired (reason -> count)."""

    source: str
    inputs: list[str]
    style: str = "v1"
    records_read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    sampled_out: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "skipped": dict(self.skipped), "repaired": dict(self.repaired)}


# ---- a source and one conversion of it ---------------------------------------------------------------------------


@dataclass
class Run:
    """State shared by one conversion: options, report, the current file, the splitter and v1's generator."""

    source: Source
    options: ConvertOptions
    report: ConvertReport
    file_stem: str = ""
    count_tokens: Callable[[list[str]], list[int]] | None = None
    rng: random.Random = field(default_factory=random.Random)  # v1: the one generator the reference seeded
    counter: int = 0  # v1: the running number the reference gave ids

    @property
    def v1(self) -> bool:
        return self.options.style == "v1"

    def next_id(self) -> str:
        """v1's ids: the source name and a running number over the conversion (records or examples)."""
        self.counter += 1
        return f"{self.source.name}_{self.counter - 1}"


Converter = Callable[[RawRecord, Run], Iterator[Example]]


@dataclass(frozen=True)
class Source:
    """One row of the sources table: what the authors release and how a record becomes examples in each style."""

    name: str
    release: str  # the raw files as released, for help and error messages
    patterns: tuple[str, ...]  # globs used when RAW_PATH is a directory (the first that matches)
    fields: dict[str, tuple[type, ...]]  # required top-level keys of a record and their JSON types
    convert: Converter | None  # clean; None: super_ni reads a folder
    convert_v1: Converter | None
    options: frozenset[str] = frozenset()  # ConvertOptions fields that only this source uses
    id_with_file: bool = False  # clean ids include the file stem (sources usually converted from several files)
    v1_files: tuple[str, ...] = ()  # v1, RAW_PATH a directory: exactly these files, in this order (the reference's)
    # v1 with --tokenizer (the conversion splits): the files the reference's split script read, instead of v1_files
    v1_split_files: tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        return f"the '{self.name}' format: {self.release}"


# ---- released records: their fields, and the output record --------------------------------------------------------

TEXT = (str,)
OPTIONAL_TEXT = (str, type(None))
_JSON_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", type(None): "null"}


def check_fields(record: object, required: dict[str, tuple[type, ...]], raw: RawRecord, source: Source,
                 context: str = "") -> None:
    """Raise the "wrong file?" error when a record lacks the source's keys or has the wrong types."""
    prefix = f"{context}." if context else ""
    if not isinstance(record, dict):
        raise TuluError(f"{raw.where}: {prefix or 'record '}is {type(record).__name__}, not an object; "
                        f"expected {source.expected}; starts: {preview(raw.preview)}")
    missing = [name for name, types in required.items() if name not in record and type(None) not in types]
    if missing:
        found = ", ".join(sorted(record)[:8]) or "none"
        raise TuluError(f"{raw.where}: record does not match source '{source.name}': "
                        f"{prefix}{', '.join(missing)} missing (found keys: {found}); expected {source.expected}; "
                        f"starts: {preview(raw.preview)}")
    for name, types in required.items():
        if name in record and not isinstance(record[name], types):
            wanted = " or ".join(_JSON_TYPE_NAMES[kind] for kind in types)
            raise TuluError(f"{raw.where}: {prefix}{name} must be {wanted}, got {type(record[name]).__name__} "
                            f"(expected {source.expected}); starts: {preview(raw.preview)}")


def emit(run: Run, example_id: str, messages: Messages, where: str) -> dict | None:
    """The output record, validated (a converter bug must not ship); None for what v1 wrote but can't be trained."""
    if run.v1 and not any(message["role"] == "assistant" for message in messages):
        run.report.skipped["no assistant message (v1 wrote it; nothing to train on)"] += 1
        return None
    validate_messages(messages, f"{where} (converted by {run.source.name})")
    return {"dataset": run.source.name, "id": example_id, "messages": messages}


# ---- oasst1's message trees, read alike by both styles -------------------------------------------------------------

_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def oasst_message(node: dict, raw: RawRecord, run: Run) -> dict:
    """One message of a tree as a conversation message; a node without a known role or a text is an error."""
    role, text = node.get("role"), node.get("text")
    if role not in _OASST_ROLES or not isinstance(text, str):
        raise TuluError(f"{raw.where}: message {node.get('message_id', '?')!r}: expected role prompter|assistant "
                        f"and a text string (expected {run.source.expected}); got role {role!r}")
    return {"role": _OASST_ROLES[role], "content": text}


def oasst_quality(node: dict) -> float:
    """A reply's quality label (0.0 when it has none, as in open-instruct), for --top-k-reply."""
    quality = (node.get("labels") or {}).get("quality") or {}
    value = quality.get("value", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0
