"""Atomic outputs: every directory or file tulu-lite writes appears complete or not at all.

A crash (or Ctrl-C) while a model is being saved must never leave something that looks like a finished
checkpoint, so outputs are written into a temporary sibling and renamed into place at the end. The temporary's
name carries the writer's pid (``.NAME.partial-PID-XXXX``) so the next writer of the same target can remove what
a killed run (SIGKILL, power loss) left behind, without touching a temporary of a run that is still alive.

`tempfile` creates owner-only temporaries (0700 / 0600); the final output gets the permissions an ordinary
``mkdir`` / ``open`` would have given under the current umask, so colleagues on a shared machine can read it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tulu_lite.errors import TuluError


def current_umask() -> int:
    # os.umask can only be read by setting it; set it straight back (no thread of ours creates files meanwhile).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.partial-{os.getpid()}-"


_LEFTOVER = re.compile(r"(?:partial|old)-(\d+)(?:-.*)?")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporaries/backups of `target` left by dead writers; return what was removed."""
    removed = []
    if not target.parent.is_dir():
        return removed
    for sibling in target.parent.iterdir():
        if not sibling.name.startswith(f".{target.name}."):
            continue
        match = _LEFTOVER.fullmatch(sibling.name[len(target.name) + 2:])
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def ensure_writable(target: str | os.PathLike, what: str = "output") -> None:
    """Fail early, in one line, if `target` (a file or directory to be created) can't be written.

    Checks what will be needed before any expensive work: no component of the path is a file, and the nearest
    existing directory accepts a new entry (probed by creating one: permission bits lie for root and for
    read-only mounts).
    """
    shown, target = target, Path(target).absolute()
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise TuluError(f"{what} {shown}: {parent} is a file, not a directory")
    existing = next(parent for parent in target.parents if parent.exists())
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.probe-", dir=existing)
    except OSError as exc:
        raise TuluError(f"{what} {shown}: can't write in {existing} ({os_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def os_reason(exc: OSError) -> str:
    """The short reason of an OSError ("no space left on device"), without Python's "[Errno 28]" decoration."""
    return exc.strerror.lower() if exc.strerror else str(exc)


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
    ensure_writable(target)
    created = _make_parents(target)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(created)
        _name_the_target(exc, target)
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
    """Open a temporary file next to `target`; it is renamed onto `target` only on success.

    The handle's ``name`` is the temporary's path, so a writer can read back what it wrote before it counts as
    finished (`tulu_lite.export` loads the GGUF it wrote and verifies it before the rename).
    """
    target = Path(target)
    ensure_writable(target)
    created = _make_parents(target)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), dir=target.parent)
    try:
        os.close(fd)  # reopened by name, so that `handle.name` is the path (os.fdopen would name it by the fd)
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _remove_if_empty(created)
        _name_the_target(exc, target)
        raise


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parents of `target`; return them, deepest first, so a failure can take them back."""
    missing = [parent for parent in target.parents if not parent.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(directories: list[Path]) -> None:
    for directory in directories:  # deepest first
        try:
            directory.rmdir()
        except OSError:  # not empty (someone else wrote there) or already gone
            return


def _name_the_target(exc: BaseException, target: Path) -> None:
    """A write error without a file name (a full disk while writing) becomes one line naming the output."""
    if isinstance(exc, OSError) and exc.filename is None:
        raise TuluError(f"{target}: {os_reason(exc)}") from exc


# How Rust libraries (safetensors, tokenizers) report an I/O error: SafetensorError / a bare Exception whose text
# ends like "No space left on device (os error 28)", never an OSError.
_RUST_IO_ERROR = re.compile(r"(.*?)\s*\(os error \d+\)")


@contextmanager
def write_errors(target: str | os.PathLike, what: str) -> Iterator[None]:
    """A disk that fills up (or a folder that vanishes) while a library writes `what` into `target` is one line.

    Pre-flight checks can't foresee a disk filling up mid-write; safetensors and tokenizers report it in their own
    exception types (`_RUST_IO_ERROR`), so those are mapped too. Anything else passes through unchanged.
    """
    try:
        yield
    except OSError as exc:
        raise TuluError(f"{target}: could not write {what} ({os_reason(exc)})") from exc
    except Exception as exc:
        found = _RUST_IO_ERROR.search(str(exc))
        if found is None:
            raise
        reason = found.group(1).split(":")[-1].strip().lower() or "i/o error"
        raise TuluError(f"{target}: could not write {what} ({reason})") from exc
