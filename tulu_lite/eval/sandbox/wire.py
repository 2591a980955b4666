"""The sandbox's wire format: length-prefixed JSON messages over pipes, with tags for the values JSON lacks.

The harness and the candidate (see the package's docstring) talk only through these messages. `decode` builds
plain values (numbers, strings, lists, tuples, dicts, sets, bytes, ...) and never calls code of the program, so a
value the candidate returns cannot run anything in the harness. Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

MAX_MESSAGE = 16 * 1024**2  # bytes of one value passed between test and program
MAX_ITEMS = 1_000_000  # items taken from an iterator the program returns


class Gone(Exception):
    """The other side closed its pipe (the candidate died or exited)."""


class Timeout(Exception):
    """The deadline passed while waiting for the candidate."""


def send(fd: int, message: dict, deadline: float | None = None) -> None:
    data = json.dumps(message).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        _wait(fd, deadline, write=True)
        view = view[os.write(fd, view):]


def _wait(fd: int, deadline: float | None, *, write: bool = False) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0 or not any(select.select([], [fd], [], left) if write else select.select([fd], [], [], left)):
        raise Timeout


def receive(fd: int, deadline: float | None = None) -> dict:
    """One message; raises Gone at end of file, Timeout at the deadline, ValueError for a malformed message."""
    (length,) = struct.unpack(">I", _read_exactly(fd, 4, deadline))
    if length > MAX_MESSAGE:
        raise ValueError(f"a value of {length:,} bytes is more than the test accepts ({MAX_MESSAGE:,})")
    message = json.loads(_read_exactly(fd, length, deadline))
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    return message


def _read_exactly(fd: int, count: int, deadline: float | None) -> bytes:
    chunks, missing = [], count
    while missing:
        _wait(fd, deadline)
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise Gone
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def encode(value: object) -> object:
    """A plain value as JSON; containers JSON lacks become one-key objects ({"tuple": [...]})."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    for kind in (tuple, set, frozenset):
        if isinstance(value, kind):
            return {kind.__name__: [encode(item) for item in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):  # generator, map, zip, ...
        items = []
        for item in value:
            if len(items) == MAX_ITEMS:
                raise TypeError(f"an iterator of more than {MAX_ITEMS:,} items")
            items.append(encode(item))
        return {"iterator": items}
    raise TypeError(f"a {type(value).__name__} value cannot be passed between the test and the program")


_DECODERS = {
    "tuple": lambda body: tuple(decode(item) for item in body),
    "set": lambda body: {decode(item) for item in body},
    "frozenset": lambda body: frozenset(decode(item) for item in body),
    "dict": lambda body: {decode(key): decode(value) for key, value in body},
    "bytes": bytes.fromhex,
    "complex": lambda body: complex(float(body[0]), float(body[1])),
    "range": lambda body: range(*(int(part) for part in body)),
    "iterator": lambda body: iter([decode(item) for item in body]),
}


def decode(data: object) -> object:
    """The inverse of `encode`; builds only plain values (anything else raises), never calls program code."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        if len(data) != 1 or next(iter(data)) not in _DECODERS:
            raise ValueError("malformed value")
        (tag, body), = data.items()
        return _DECODERS[tag](body)
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise ValueError("malformed value")


def describe(exc: BaseException) -> str:
    """The last line of a traceback: ``ValueError: boom``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}"[:300] if text else type(exc).__name__
