"""Streaming readers for raw releases: JSON Lines files and (possibly huge) top-level JSON arrays, either of them
possibly gzipped (``.gz``, as oasst1's trees are released).

A JSON array is walked element by element with an incremental decoder over fixed-size chunks, so a multi-GB
download never sits in memory; every value comes with the ``file:line`` where it starts, for error messages.
Raw releases are parsed as leniently as their authors' own tools did (Python's `json`); conversation files that
go through here (JSON arrays of conversations) ask for the strict parser of `tulu_lite.data.conversations`.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import random
import re
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from tulu_lite.errors import TuluError, at
from tulu_lite.json_files import (
    GZIP_ERRORS,
    NOT_GZIP,
    STRICT_DECODER,
    TOO_DEEP,
    NotJson,
    gzip_error,
    json_error,
)


class RawRecord(NamedTuple):
    """One top-level JSON value of a raw file: where it is, its 0-based position, the value and its first chars."""

    where: str
    index: int
    value: Any
    preview: str


def preview(text: str, limit: int = 70) -> str:
    """The start of a line, on one line, for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


_READ_SIZE = 1 << 16  # bytes read from disk at a time (and the steps a progress bar moves in)
_GZIP_MAGIC = b"\x1f\x8b"


class _CountedReads(io.RawIOBase):
    """A file whose every read from disk is told to `on_bytes`, so progress counts the bytes the file holds."""

    def __init__(self, file: BinaryIO, on_bytes: Callable[[int], None]):
        self.file, self.on_bytes = file, on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.file.readinto(buffer)
        if count:
            self.on_bytes(count)
        return count


@contextmanager
def open_raw(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[BinaryIO]:
    """A raw file's bytes, a ``.gz`` file's decompressed; `on_bytes` is told of the bytes read from disk (compressed
    ones for ``.gz``, so a progress bar's total is the files' size either way).

    A ``.gz`` file that is not gzip data, is corrupt or ends early is one line naming it.
    """
    with open(path, "rb", buffering=0) as file:
        handle = io.BufferedReader(file if on_bytes is None else _CountedReads(file, on_bytes), _READ_SIZE)
        if path.suffix != ".gz":
            yield handle
            return
        head = handle.peek(64)[:64]
        if head and not head.startswith(_GZIP_MAGIC):  # said before a converter reads anything
            raise TuluError(f"{path}: {NOT_GZIP}")
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped
        except GZIP_ERRORS as exc:
            raise gzip_error(exc, str(path)) from None


def first_char(path: Path) -> str:
    with open_raw(path) as handle:
        head = handle.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def read_json_values(path: str | os.PathLike, expected: str, *, chunk_size: int = 1 << 20,
                     on_bytes: Callable[[int], None] | None = None, strict: bool = False) -> Iterator[RawRecord]:
    """Stream the top-level records of a JSON array file or a JSON Lines file (detected from the first char).

    `expected` names the source and file the caller wanted; it goes into every parse error. `strict` refuses
    NaN/Infinity and repeated keys (for conversation data; raw releases are read as their authors' tools read them).
    """
    path = Path(path)
    first = first_char(path)
    decoder = _StrictValue() if strict else json.JSONDecoder()
    if first == "[":
        yield from _read_array(path, expected, chunk_size, on_bytes, decoder)
    elif first == "{":
        yield from _read_lines(path, expected, on_bytes, decoder)
    elif not first:
        raise TuluError(f"{path}: file is empty (expected {expected})")
    else:
        raise TuluError(f"{at(path, 1)}: not JSON or JSON Lines (expected {expected}); starts: {first!r}")


class _StrictValue:
    """`raw_decode` with the strict conversation parser's rules (its errors are already one-line TuluErrors)."""

    def raw_decode(self, text: str, pos: int = 0):
        try:
            return STRICT_DECODER.raw_decode(text, pos)
        except NotJson as exc:
            raise TuluError(f"not valid JSON ({exc})") from None

    def decode(self, text: str):
        value, end = self.raw_decode(text.strip(" \t\r\n"))
        return value


def _line_value(path: Path, number: int, raw: bytes, expected: str, decoder) -> tuple[Any, str] | None:
    """The JSON value of one raw line and its text (None for a blank line); errors name the file and line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TuluError(f"{at(path, number)}: not UTF-8 text ({exc.reason}; expected {expected})") from None
    if number == 1:
        text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark some editors add
    if not text.strip():
        return None
    try:
        return decoder.decode(text), text
    except json.JSONDecodeError as exc:
        raise TuluError(f"{at(path, number)}: not valid JSON ({json_error(exc)}); "
                        f"expected {expected}; line starts: {preview(text)}") from None
    except TuluError as exc:
        raise TuluError(f"{at(path, number)}: {exc}; line starts: {preview(text)}") from None
    except RecursionError:
        raise TuluError(f"{at(path, number)}: {TOO_DEEP} (expected {expected})") from None


def _read_lines(path: Path, expected: str, on_bytes: Callable[[int], None] | None,
                decoder=json.JSONDecoder()) -> Iterator[RawRecord]:
    index = 0
    with open_raw(path, on_bytes) as handle:
        for number, raw in enumerate(handle, start=1):
            parsed = _line_value(path, number, raw, expected, decoder)
            if parsed is not None:
                yield RawRecord(at(path, number), index, parsed[0], parsed[1][:200])
                index += 1


def read_sampled(path: str | os.PathLike, expected: str, count: int, rng: random.Random,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """`count` records of a file in the order ``rng.sample(records, count)`` draws them from the list of all its
    records (all of them, in file order, when it holds no more), as a reference that loaded the list would.

    `rng.sample` picks positions the same way whatever the population holds, so sampling ``range(n)`` selects the
    same records. JSON Lines are not held in memory: a first pass keeps each record's byte offset (a ``.gz`` file,
    where going back means decompressing from the start, keeps the drawn records' lines instead).
    """
    path = Path(path)
    if first_char(path) != "{":  # a JSON array (or a wrong file): hold its records, as the reference did
        records = list(read_json_values(path, expected, on_bytes=on_bytes))
        chosen = rng.sample(range(len(records)), count) if count < len(records) else range(len(records))
        for index, pick in enumerate(chosen):
            yield records[pick]._replace(index=index)
        return
    offsets, numbers, position = array("q"), array("q"), 0
    with open_raw(path, on_bytes) as handle:
        for number, raw in enumerate(handle, start=1):
            if _holds_record(raw):
                offsets.append(position)
                numbers.append(number)
            position += len(raw)
    chosen = rng.sample(range(len(offsets)), count) if count < len(offsets) else range(len(offsets))
    lines = _drawn_lines(path, chosen) if path.suffix == ".gz" else _lines_at(path, offsets, chosen)
    decoder = json.JSONDecoder()
    for index, (pick, raw) in enumerate(zip(chosen, lines)):
        value, text = _line_value(path, numbers[pick], raw, expected, decoder)
        yield RawRecord(at(path, numbers[pick]), index, value, text[:200])


def _holds_record(raw: bytes) -> bool:
    return bool(raw.strip()) and raw.strip() != b"\xef\xbb\xbf"


def _lines_at(path: Path, offsets: array, chosen) -> Iterator[bytes]:
    """The chosen records' lines, one seek each."""
    with open_raw(path) as handle:
        for pick in chosen:
            handle.seek(offsets[pick])
            yield handle.readline()


def _drawn_lines(path: Path, chosen) -> list[bytes]:
    """The chosen records' lines in one pass through a file that can't seek back cheaply, in the drawn order."""
    wanted, kept, position = set(chosen), {}, 0
    with open_raw(path) as handle:
        for raw in handle:
            if _holds_record(raw):
                if position in wanted:
                    kept[position] = raw
                position += 1
    return [kept[pick] for pick in chosen]


class _ArrayScanner:
    """Walks a top-level JSON array in fixed-size chunks, so memory holds one chunk plus the current element."""

    _SPACE = re.compile(r"[ \t\r\n]*")

    def __init__(self, handle, chunk_size: int):
        self.handle, self.chunk_size = handle, chunk_size
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.line_base = 1  # line number of buf[0]
        self.line_cursor = (0, 1)  # (offset in buf, its line), so line lookups never rescan the buffer

    def fill(self) -> bool:
        data = self.handle.read(self.chunk_size)
        if not data:
            self.buf += self.decoder.decode(b"", final=True)
            self.eof = True
            return False
        self.buf += self.decoder.decode(data)
        return True

    def compact(self) -> None:
        if self.pos > self.chunk_size:
            line = self.line_at(self.pos)
            self.buf, self.pos = self.buf[self.pos:], 0
            self.line_base, self.line_cursor = line, (0, line)

    def line_at(self, offset: int) -> int:
        start, line = self.line_cursor
        if offset < start:
            start, line = 0, self.line_base
        line += self.buf.count("\n", start, offset)
        self.line_cursor = (offset, line)
        return line

    def skip_space(self) -> str:
        """Advance past whitespace and return the next char ('' at end of file)."""
        while True:
            self.pos = self._SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def decode_value(self, decoder: json.JSONDecoder) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.fill():  # the element may just be cut by the chunk boundary
                    continue
                raise exc
            self.pos = end
            return value


def _read_array(path: Path, expected: str, chunk_size: int, on_bytes: Callable[[int], None] | None,
                decoder=json.JSONDecoder()) -> Iterator[RawRecord]:
    with open_raw(path, on_bytes) as handle:
        scan = _ArrayScanner(handle, chunk_size)
        scan.skip_space()
        if scan.buf.startswith("\ufeff", scan.pos):
            scan.pos += 1
            scan.skip_space()
        scan.pos += 1  # the "[" read_json_values already saw
        index = 0
        while True:
            scan.compact()
            char = scan.skip_space()
            if char == "]" and index == 0:
                scan.pos += 1
                break
            start, line = scan.pos, scan.line_at(scan.pos)
            where = at(path, line)
            try:
                value = scan.decode_value(decoder)
            except json.JSONDecodeError as exc:
                bad_line = scan.line_at(exc.pos)
                raise TuluError(f"{at(path, bad_line)}: not valid JSON ({exc.msg}); expected {expected}; "
                                f"element {index} starts: {preview(scan.buf[start:start + 200])}") from None
            except TuluError as exc:  # the strict decoder's refusals (NaN, repeated keys)
                raise TuluError(f"{where}: {exc}; element {index} starts: "
                                f"{preview(scan.buf[start:start + 200])}") from None
            except RecursionError:
                raise TuluError(f"{where}: {TOO_DEEP} (element {index}; expected {expected})") from None
            yield RawRecord(where, index, value, scan.buf[start:start + 200])
            index += 1
            char = scan.skip_space()
            if char == ",":
                scan.pos += 1
                if scan.skip_space() == "]":
                    raise TuluError(f"{at(path, scan.line_at(scan.pos))}: trailing comma before ']' "
                                    f"(not valid JSON; expected {expected})")
                continue
            if char == "]":
                scan.pos += 1
                break
            got = "end of file" if not char else repr(char)
            raise TuluError(f"{at(path, scan.line_at(scan.pos))}: expected ',' or ']' after element {index - 1}, "
                            f"got {got} (truncated download? expected {expected})")
        if scan.skip_space():
            raise TuluError(f"{at(path, scan.line_at(scan.pos))}: text after the closing ']' (expected {expected})")
