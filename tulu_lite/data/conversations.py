"""The conversation format every tulu-lite file uses.

One JSON object per line::

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...], "id": "...", "dataset": "..."}

Keys other than ``messages`` are kept as they are. Files are read and written through `tulu_lite.json_files`
(streamed, strict: a training set should mean one thing); this module adds what makes a record a conversation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tulu_lite.errors import TuluError, at
from tulu_lite.json_files import iter_lines, json_object
from tulu_lite.outputs import ensure_writable, resolve_output

ROLES = ("system", "user", "assistant")


def validate_messages(messages: object, where: str) -> list[dict]:
    """Check a ``messages`` value; raise `TuluError` prefixed with `where` on the first problem."""
    if not isinstance(messages, list):
        raise TuluError(f"{where}: 'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        raise TuluError(f"{where}: 'messages' is empty")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TuluError(f"{where}: messages[{index}] must be an object, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise TuluError(f"{where}: messages[{index}].role is {role!r}, expected one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            got = type(message.get("content")).__name__ if "content" in message else "nothing"
            raise TuluError(f"{where}: messages[{index}].content must be a string, got {got}")
    if not any(message["role"] == "assistant" for message in messages):
        raise TuluError(f"{where}: no assistant message (nothing to train on)")
    return messages


def parse_line(line: str, where: str) -> dict:
    """Parse and validate one conversation record."""
    record = json_object(line, where)
    if "messages" not in record:
        raise TuluError(f"{where}: no 'messages' key (keys: {', '.join(sorted(record)) or 'none'})")
    validate_messages(record["messages"], where)
    return record


def read_conversations(path: str | os.PathLike) -> Iterator[dict]:
    """Stream validated records from a JSON Lines file; blank lines are skipped."""
    for number, _, line in iter_lines(path):
        yield parse_line(line, at(path, number))


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, force: bool,
                 sidecars: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, an output that is one of the command's inputs or that exists without `force`.

    `sidecars` are other files the command writes (``OUT.meta.json``), checked against the inputs too. An output
    that is a FIFO or a device is refused even with `force` (`tulu_lite.outputs.resolve_output`).
    """
    out = Path(out)
    targets = [out, *map(Path, sidecars)]
    resolved_inputs = {Path(path).resolve(): Path(path) for path in inputs}
    for target in targets:
        if target.resolve() in resolved_inputs:
            raise TuluError(f"{target}: is also an input ({resolved_inputs[target.resolve()]}); writing it would "
                            f"destroy that input (choose another output path)")
    for target in targets:
        resolve_output(target, expect="file")
    if out.exists() and not force:
        raise TuluError(f"{out}: already exists (pass --force to overwrite)")
    ensure_writable(out, "output", expect="file")
