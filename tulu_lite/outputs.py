"""Atomic outputs: every directory or file tulu-lite writes appears complete or not at all.

A crash (or Ctrl-C) while a model is being saved must never leave something that looks like a finished
checkpoint, so outputs are written into a temporary sibling and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tulu_lite.errors import TuluError


@contextmanager
def atomic_dir(target: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block finishes.

    Without `force`, an existing non-empty `target` is an error (checked before any work starts).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TuluError(f"{target}: exists and is not a directory")
    if target.exists() and any(target.iterdir()) and not force:
        raise TuluError(f"{target}: already exists and is not empty (pass --force to overwrite)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(backup)
    tmp.rename(target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file next to `target`; it is renamed onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(target: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(target) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
