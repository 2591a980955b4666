"""The conversation format every tulu-lite file uses.

One JSON object per line::

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...], "id": "...", "dataset": "..."}

Keys other than ``messages`` are kept as they are. Files are read as a stream, one line at a time, so a
multi-GB file never sits in Python lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.outputs import atomic_file

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


def json_object(line: str, where: str) -> dict:
    """Parse one JSON Lines record that must be an object; errors are prefixed with `where` (``file:line``)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TuluError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise TuluError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def parse_line(line: str, where: str) -> dict:
    """Parse and validate one conversation record."""
    record = json_object(line, where)
    if "messages" not in record:
        raise TuluError(f"{where}: no 'messages' key (keys: {', '.join(sorted(record)) or 'none'})")
    validate_messages(record["messages"], where)
    return record


def read_conversations(path: str | os.PathLike) -> Iterator[dict]:
    """Stream validated records from a JSON Lines file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise TuluError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield parse_line(line, f"{path}:{number}")


def write_conversations(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write records as JSON Lines atomically; return how many were written."""
    count = 0
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
