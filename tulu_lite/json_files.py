"""The one reader and writer of JSON and JSON Lines files in tulu-lite.

Every file tulu-lite reads as JSON goes through here, so every one is strict in the same way and fails in the same
one line: text must be UTF-8 (a byte-order mark and CRLF line ends are fine); in JSON Lines ``NaN``/``Infinity``
(not JSON) and repeated keys are refused, and one line may hold at most `MAX_LINE_BYTES`, so a stray
multi-megabyte line fails at once instead of costing minutes and gigabytes of tokenization. Files are read as a
stream, one line at a time, so a multi-GB file never sits in Python lists; ``.gz`` files are read decompressed.
Writers are atomic (`tulu_lite.outputs.atomic_file`).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from tulu_lite.errors import TuluError, at, first_line
from tulu_lite.outputs import atomic_file

# About a million LLaMA tokens: far past any training length, small enough to tokenize in a few seconds.
MAX_LINE_BYTES = 4 * 2**20


# ---- strict JSON ------------------------------------------------------------------------------------------------


class NotJson(ValueError):
    """Raised from inside the decoder for what Python's json accepts but JSON does not."""


def _refuse_constant(name: str) -> None:
    raise NotJson(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise NotJson(f"key {repeated!r} appears twice in one object")
    return record


STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)


def json_error(exc: json.JSONDecodeError) -> str:
    """A JSONDecodeError in words: "Expecting ',' delimiter at column 12" (json's own messages may end in "at")."""
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


# Python's json parser recurses once per nesting level; past the interpreter's recursion limit it raises
# RecursionError. No conversation, prediction or settings file nests anywhere near this deep.
TOO_DEEP = "JSON nested too deeply to read"


def strict_json(text: str, where: str) -> object:
    """Parse one JSON document; errors (including NaN/Infinity, repeated keys and nesting deep enough to exhaust
    the parser's stack) are one line prefixed `where`."""
    try:
        return STRICT_DECODER.decode(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        raise TuluError(f"{where}: not valid JSON ({json_error(exc)})") from None
    except NotJson as exc:
        raise TuluError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise TuluError(f"{where}: {TOO_DEEP}") from None


def json_object(line: str, where: str) -> dict:
    """Parse one JSON Lines record that must be an object; errors are prefixed with `where` (``file:line``)."""
    record = strict_json(line, where)
    if not isinstance(record, dict):
        raise TuluError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


# ---- whole documents --------------------------------------------------------------------------------------------


def read_json_file(path: str | os.PathLike) -> object:
    """One whole JSON document (settings, metrics, model configs): UTF-8, a byte-order mark allowed; a bad byte
    or bad JSON is one line naming the file and line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TuluError(f"{at(path, line)}: not UTF-8 text ({exc.reason} at byte {exc.start + 1})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TuluError(f"{at(path, exc.lineno)}: not valid JSON ({json_error(exc)})") from None
    except RecursionError:
        raise TuluError(f"{path}: {TOO_DEEP}") from None


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object (a model's config.json, a manifest); anything else is one line."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise TuluError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


def write_json(target: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(target) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


# ---- JSON Lines -------------------------------------------------------------------------------------------------


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, int, str]]:
    """``(line number, byte offset, text)`` for every non-blank line of a UTF-8 file, in order (a ``.gz`` file is
    read decompressed; offsets then count decompressed bytes).

    A byte-order mark at the start is dropped; a line longer than `MAX_LINE_BYTES` or not UTF-8 is an error
    naming its line, raised before the line is parsed. A ``.gz`` file that is not gzip, is corrupt or was cut off
    (an interrupted download) is an error naming the line where decompression stopped.
    """
    path = Path(path)
    if not path.is_file():
        raise TuluError(f"{path}: file not found")
    offset, number = 0, 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            while raw := handle.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise TuluError(f"{at(path, number)}: line is longer than {MAX_LINE_BYTES // 2**20} MiB "
                                    f"(one conversation may be at most that; split it)")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise TuluError(f"{at(path, number)}: not UTF-8 text ({exc.reason} at byte {exc.start + 1} "
                                    f"of the line)") from None
                if number == 1:
                    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark some editors add
                if text.strip():
                    yield number, offset, text
                offset += len(raw)
    except GZIP_ERRORS as exc:  # only reading a damaged .gz raises these; decompression stopped at the next line
        raise gzip_error(exc, at(path, number + 1)) from None


# ---- damaged .gz files (shared with the raw-release reader, tulu_lite.data.raw.open_raw) -------------------------

GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)  # what reading a damaged .gz raises
NOT_GZIP = "not a gzip file, though its name ends in .gz (rename it without .gz if it is plain text)"


def gzip_error(exc: BaseException, where: str) -> TuluError:
    """The one line for a `.gz` file that is not gzip, is corrupt or ends early (`where`: the file, or file:line
    where decompression stopped)."""
    if isinstance(exc, EOFError):
        return TuluError(f"{where}: the gzip file ends early (truncated download? fetch it again)")
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        return TuluError(f"{where}: {NOT_GZIP}")
    return TuluError(f"{where}: corrupt gzip data ({first_line(exc)}); fetch the file again")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file whose records are objects."""
    for number, _, line in iter_lines(path):
        yield number, json_object(line, at(path, number))


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write records as JSON Lines atomically; return how many were written."""
    count = 0
    with atomic_file(path) as handle:
        for record in records:
            try:
                line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            except ValueError:  # only reachable from a caller's own records: readers refuse NaN
                raise TuluError(f"{path}: record {count + 1} ({record.get('id', '?')}) holds NaN or Infinity, "
                                f"which JSON can't represent") from None
            handle.write(line + "\n")
            count += 1
    return count
