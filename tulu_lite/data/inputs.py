"""Where conversations come from: tulu-lite's JSON Lines, and the places the ecosystem keeps them.

Everywhere a conversation file is accepted (``data.train_files``, mixture sources, ``data stats``, ``inspect``) an
input is a `tulu_lite.recipe.DataSource`, one of:

- a conversation JSON Lines file (tulu-lite's own format, read as a stream with line numbers),
- a JSON file holding an array of rows, or a Parquet file,
- a folder written by `datasets`' ``save_to_disk`` (a Dataset, or a DatasetDict and its ``split``),
- a dataset repository folder (what ``hf download --repo-type dataset`` writes: data files, optional README configs),
- a hub dataset id (``hf:allenai/tulu-v2-sft-mixture``), loaded with `datasets` (and its cache) when the hub can be
  reached; ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are obeyed.

Rows need a list of turns in the `messages` column; other column and key names are mapped per input (ShareGPT's
``conversations`` of ``from``/``value``, ``roles: {human: user, gpt: assistant}``). Every row is validated exactly
like a JSON Lines line, with ``FILE: row N`` where a line number is not available. Rows that come through
`datasets` or Parquet keep only ``messages`` and, when present, ``id`` and ``dataset``.

What a row holds is a `RowFormat`: conversations (`CONVERSATIONS`, the default everywhere) or preference pairs
(`tulu_lite.data.pairs.PAIRS`: ``chosen`` / ``rejected``, optionally ``prompt``), read through the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Literal

import yaml
from pydantic import ValidationError

from tulu_lite.data.conversations import (
    ROLES,
    parse_line,
    read_conversations,
    validate_messages,
)
from tulu_lite.data.raw import first_char, read_json_values
from tulu_lite.errors import TuluError, at, first_line
from tulu_lite.json_files import MAX_LINE_BYTES, iter_lines, json_object
from tulu_lite.recipe import DataSource
from tulu_lite.typed_yaml import validation_problems

InputKind = Literal["jsonl", "json", "parquet", "saved", "repo", "hub"]
_KEPT_COLUMNS = ("id", "dataset")  # what rows from Parquet / datasets carry besides messages


def as_source(item: DataSource | str | os.PathLike | dict) -> DataSource:
    """A DataSource from what callers hold: a DataSource, a path, ``hf:ID[:SPLIT]``, or a mapping."""
    if isinstance(item, DataSource):
        return item
    try:
        return DataSource.model_validate(str(item) if isinstance(item, os.PathLike) else item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, p.loc)) or 'input'}: {p.what}"
                             for p in validation_problems(exc, DataSource))
        raise TuluError(f"input {item!r}: {problems}") from None


def parse_input(text: str) -> DataSource:
    """A command-line input: a path, ``hf:ID[:SPLIT]``, or an inline YAML mapping ``{path: x.json, messages: ...}``."""
    if text.lstrip().startswith("{"):
        try:
            mapping = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TuluError(f"input {text!r}: not a YAML mapping ({first_line(exc)})") from None
        return as_source(mapping)
    return as_source(text)


def default_columns(source: DataSource) -> bool:
    """Rows are already in tulu-lite's format (no column or role mapping)."""
    names = (source.messages, source.chosen, source.rejected, source.prompt, source.role, source.content)
    return names == ("messages", "chosen", "rejected", "prompt", "role", "content") and not source.roles


class RowFormat:
    """What one row of an input holds and how it becomes a validated record: a conversation here; preference
    pairs subclass it (`tulu_lite.data.pairs.PairRows`). The readers below are the same for every format."""

    what = "conversation"  # for messages: "holds no conversation"

    def required(self, source: DataSource) -> list[str]:
        """The columns every row needs."""
        return [source.messages]

    def optional(self, source: DataSource) -> list[str]:
        """Columns read when the input has them (besides id and dataset)."""
        return []

    def to_record(self, row: object, source: DataSource, where: str, *, keep: Iterable[str] | None = None) -> dict:
        return to_conversation(row, source, where, keep=keep)

    def parse_line(self, line: str, where: str) -> dict:
        """One line of a JSON Lines file in tulu-lite's own format (no column mapping)."""
        return parse_line(line, where)

    def content_chars(self, record: dict) -> int:
        return sum(len(message["content"]) for message in record["messages"])

    def mapping_hint(self, source: DataSource) -> str:
        return ("map the column holding the turns with {path: ..., messages: COLUMN} (and role, content, roles "
                "for its keys)")


CONVERSATIONS = RowFormat()


def input_kind(source: DataSource) -> InputKind:
    """What an input is, from the path (a folder's marker files, a file's suffix or first character)."""
    if source.hub is not None:
        return "hub"
    path = source.path
    if not path.exists():
        raise TuluError(f"{path}: file not found")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "saved"
        return "repo"
    if path.suffix.lower() == ".parquet":
        return "parquet"
    return "json" if first_char(path) == "[" else "jsonl"


def read_records(item: DataSource | str | os.PathLike | dict, rows: RowFormat = CONVERSATIONS) -> Iterator[dict]:
    """Stream the validated records (conversations, or what `rows` reads) of one input, in order."""
    source = as_source(item)
    kind = input_kind(source)
    if kind == "jsonl" and default_columns(source) and rows is CONVERSATIONS:
        yield from read_conversations(source.path)  # the fast path: tulu-lite's own format
    elif kind == "jsonl":
        for number, _, line in iter_lines(source.path):
            where = at(source.path, number)
            yield rows.to_record(json_object(line, where), source, where)
    elif kind == "json":
        for raw in read_json_values(source.path, f"a JSON array of {rows.what}s", strict=True):
            yield _bounded(rows, rows.to_record(raw.value, source, raw.where), raw.where)
    elif kind == "parquet":
        yield from _parquet_records(source, rows)
    else:
        yield from _dataset_records(source, load_dataset_input(source, kind), rows)


def to_conversation(row: object, source: DataSource, where: str, *, keep: Iterable[str] | None = None) -> dict:
    """One row as a validated conversation record: its turns mapped to ``{role, content}`` when the input maps
    columns, other keys kept (only `keep` of them when given)."""
    if not isinstance(row, dict):
        raise TuluError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if source.messages not in row:
        hint = "" if source.messages != "messages" else " (another column? map it with {path: ..., messages: COLUMN})"
        raise TuluError(f"{where}: no {source.messages!r} key (keys: {', '.join(sorted(map(str, row))) or 'none'})"
                        f"{hint}")
    turns = row[source.messages]
    if default_columns(source):
        messages = turns
    elif not isinstance(turns, list):
        raise TuluError(f"{where}: {source.messages!r} must be a list, got {type(turns).__name__}")
    else:
        messages = [map_turn(turn, index, source, where) for index, turn in enumerate(turns)]
    validate_messages(messages, where)
    names = row if keep is None else [name for name in keep if row.get(name) is not None]
    record = {name: row[name] for name in names if name != source.messages}
    record["messages"] = messages
    return record


def map_turn(turn: object, index: int, source: DataSource, where: str, column: str | None = None) -> dict:
    """One turn of column `column` (default: the messages column) as ``{role, content}``, roles renamed."""
    column = column or source.messages
    if not isinstance(turn, dict):
        raise TuluError(f"{where}: {column}[{index}] must be an object, got {type(turn).__name__}")
    role = turn.get(source.role)
    role = source.roles.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise TuluError(f"{where}: {column}[{index}].{source.role} is {turn.get(source.role)!r}, expected "
                        f"one of {', '.join(ROLES)} (rename others with roles: {{NAME: user|assistant|system}})")
    return {"role": role, "content": turn.get(source.content)}


def _bounded(rows: RowFormat, record: dict, where: str) -> dict:
    """The same bound on one record as the JSON Lines reader puts on one line."""
    if rows.content_chars(record) > MAX_LINE_BYTES:
        raise TuluError(f"{where}: {rows.what} is longer than {MAX_LINE_BYTES // 2**20} MiB (one {rows.what} "
                        f"may be at most that; split it)")
    return record


# ---- Parquet and datasets -------------------------------------------------------------------------------------------


def _wanted_columns(label: str, source: DataSource, columns: list[str], rows: RowFormat) -> list[str]:
    """The columns to read: the format's (each required one must be there), then id and dataset when present."""
    for name in rows.required(source):
        if name not in columns:
            raise TuluError(f"{label}: no {name!r} column (columns: {', '.join(columns) or 'none'}); "
                            f"{rows.mapping_hint(source)}")
    extra = [*rows.optional(source), *_KEPT_COLUMNS]
    return [*rows.required(source), *(name for name in extra if name in columns)]


def _parquet_records(source: DataSource, rows: RowFormat) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(source.path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: one line, naming the file
        raise TuluError(f"{source.path}: not a readable Parquet file ({first_line(exc)})") from None
    wanted = _wanted_columns(str(source.path), source, handle.schema_arrow.names, rows)
    number = 0
    for batch in handle.iter_batches(batch_size=256, columns=wanted):
        for row in batch.to_pylist():
            number += 1
            where = f"{source.path}: row {number}"
            yield _bounded(rows, rows.to_record(row, source, where, keep=_KEPT_COLUMNS), where)


def load_dataset_input(source: DataSource, kind: InputKind):
    """The `datasets.Dataset` of a save_to_disk folder, a dataset repository folder or a hub dataset (one split)."""
    import datasets

    label = source.label
    try:
        if kind == "saved":
            loaded = datasets.load_from_disk(str(source.path))
        else:
            location = str(source.path) if kind == "repo" else source.hub
            extra = {"revision": source.revision} if kind == "hub" and source.revision else {}
            loaded = datasets.load_dataset(location, name=source.subset, split=source.split, **extra)
    except ConnectionError as exc:
        raise _unreachable(source, exc) from None
    except Exception as exc:  # datasets raises many types (EmptyDatasetError, ValueError, DatasetNotFoundError...)
        if kind == "hub" and _offline():
            raise _unreachable(source, exc) from None
        raise TuluError(f"{label}: could not load it with datasets ({_first_line(exc)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise TuluError(f"{label}: no split {source.split!r} (splits: {', '.join(loaded)}); choose one with "
                            f"{{path: ..., split: NAME}}")
        loaded = loaded[source.split]
    return loaded


def _dataset_records(source: DataSource, dataset, rows: RowFormat) -> Iterator[dict]:
    wanted = _wanted_columns(source.label, source, list(dataset.column_names), rows)
    number = 0
    for batch in dataset.select_columns(wanted).iter(batch_size=256):
        for index in range(len(batch[wanted[0]])):
            number += 1
            where = f"{source.label}: row {number}"
            row = {name: batch[name][index] for name in wanted}
            yield _bounded(rows, rows.to_record(row, source, where, keep=_KEPT_COLUMNS), where)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "TRUE")


def _unreachable(source: DataSource, exc: Exception) -> TuluError:
    why = "offline mode is on (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1)" if _offline() else _first_line(exc)
    return TuluError(f"{source.label}: can't reach the Hugging Face hub: {why}, and the dataset is not in the local "
                     f"datasets cache; download it where there is network (hf download {source.hub} --repo-type "
                     f"dataset --local-dir DIR) and give the folder DIR instead of {source.label}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---- identity, for caches ------------------------------------------------------------------------------------------


def input_fingerprint(source: DataSource) -> str:
    """Changes whenever what `read_records` would yield can change: file stamps, or the loaded dataset's own
    fingerprint for a hub dataset; plus the column mapping."""
    kind = input_kind(source)
    mapping = source.model_dump_json()
    if kind == "hub":
        return f"{mapping}|{load_dataset_input(source, kind)._fingerprint}"
    path = source.path.resolve()
    files = [path] if path.is_file() else sorted(
        candidate for candidate in path.rglob("*")
        if candidate.is_file() and not any(part.startswith(".") for part in candidate.relative_to(path).parts))
    stamps = [f"{file}:{file.stat().st_size}:{file.stat().st_mtime_ns}" for file in files]
    return "|".join([mapping, *stamps])


def input_columns(item: DataSource | str | os.PathLike | dict) -> list[str]:
    """The columns of an input: a table's, or the keys of the first record of a JSON or JSON Lines file."""
    source = as_source(item)
    kind = input_kind(source)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(source.path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: one line, naming the file
            raise TuluError(f"{source.path}: not a readable Parquet file ({first_line(exc)})") from None
    if kind in ("jsonl", "json"):
        if not first_char(source.path):  # an empty file has no columns (its readers warn that it holds nothing)
            return []
        first = next(read_json_values(source.path, "JSON rows", strict=True), None)
        return list(first.value) if first is not None and isinstance(first.value, dict) else []
    return list(load_dataset_input(source, kind).column_names)


def describe(source: DataSource) -> str:
    """A short name for tables: the file or folder name, or ``hf:ID``."""
    return source.path.name if source.path is not None else source.label


def is_plain_jsonl(source: DataSource) -> bool:
    """A JSON Lines file with tulu-lite's column names (the inputs that can be indexed by byte offset)."""
    return source.hub is None and default_columns(source) and input_kind(source) == "jsonl"
