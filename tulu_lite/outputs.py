"""Atomic outputs: every directory or file tulu-lite writes appears complete or not at all.

A crash (or Ctrl-C) while a model is being saved must never leave something that looks like a finished
checkpoint, so outputs are written into a temporary sibling and renamed into place at the end. The temporary's
name carries the writer's pid (``.NAME.partial-PID-XXXX``) so the next writer of the same target can remove what
a killed run (SIGKILL, power loss) left behind, without touching a temporary of a run that is still alive.

`tempfile` creates owner-only temporaries (0700 / 0600), and some libraries write owner-only files too
(safetensors: 0600); the final output, and every file and folder inside an output directory, gets the permissions
an ordinary ``mkdir`` / ``open`` would have given under the current umask, so colleagues on a shared machine can
read it.

One rule for every output path (`resolve_output`): a symlink to a regular file or directory is followed, and its
target is replaced atomically (the temporary sits beside the target, the link stays a link); anything that is not a
regular file or directory (a FIFO, a device such as ``/dev/stdout`` or ``/dev/null``, a socket) is refused in one
line, never replaced by a regular file.

A signal that unwinds the program (Ctrl-C, or SIGTERM/SIGHUP through `tulu_lite.signals`) removes the temporary of
an output being written; `interrupted_outputs` tells the CLI what was and was not written.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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


_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _special_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def resolve_output(target: str | os.PathLike, what: str = "output",
                   expect: Literal["file", "dir"] | None = None) -> Path:
    """The path an output is really written to: `target` itself, or the file or directory a symlink points to.

    Refused in one line, before anything is written: an existing `target` (followed through links) that is neither
    a regular file nor a directory (a FIFO, a character device such as ``/dev/stdout``, a socket), which writing
    would replace by a regular file; a directory where a file is expected (`expect` "file") and a file where a
    directory is expected ("dir"). A dangling symlink resolves to where it points (the output is created there).
    """
    shown, target = target, Path(target)
    label = f"{what} {shown}" if what != "output" else f"{shown}"
    try:
        mode = os.stat(target).st_mode  # follows symlinks: what would really be replaced
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        mode = None  # a file in the path: ensure_writable names it
    except OSError as exc:  # a symlink loop, a path too long, ...
        raise TuluError(f"{label}: {os_reason(exc)}") from None
    if mode is not None:
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise TuluError(f"{label}: is a {_special_kind(mode)}, not a regular file or directory (tulu-lite writes "
                            f"only those; choose another path)")
        if expect == "file" and stat.S_ISDIR(mode):
            raise TuluError(f"{label}: is a directory (expected a file path)")
        if expect == "dir" and not stat.S_ISDIR(mode):
            raise TuluError(f"{label}: exists and is not a directory")
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def ensure_writable(target: str | os.PathLike, what: str = "output",
                    expect: Literal["file", "dir"] | None = None) -> None:
    """Fail early, in one line, if `target` (a file or directory to be created) can't be written.

    Checks what will be needed before any expensive work: the path follows the output rule (`resolve_output`: no
    FIFO or device, a file or directory as `expect`ed), no component of the path is a file, and the nearest
    existing directory accepts a new entry (probed by creating one: permission bits lie for root and for read-only
    mounts).
    """
    shown = target
    target = resolve_output(target, what, expect).absolute()
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise TuluError(f"{what} {shown}: {parent} is a file, not a directory")
    existing = next(parent for parent in target.parents if parent.exists())
    try:
        with _signals_deferred():  # an interruption between creating and removing the probe would leave it
            fd, probe = tempfile.mkstemp(prefix=f".{target.name}.probe-", dir=existing)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise TuluError(f"{what} {shown}: can't write in {existing} ({os_reason(exc)})") from None


def os_reason(exc: OSError) -> str:
    """The short reason of an OSError ("no space left on device"), without Python's "[Errno 28]" decoration."""
    return exc.strerror.lower() if exc.strerror else str(exc)


# ---- what this process wrote, for the message after an interruption ----------------------------------------------


@dataclass
class _WriteLog:
    """Outputs finished and outputs abandoned (their temporary removed) by this process, outermost writes only: a
    file written inside an output directory's temporary is not an output of its own."""

    finished: list[Path] = field(default_factory=list)
    abandoned: list[Path] = field(default_factory=list)
    depth: int = 0  # atomic_dir blocks open right now


_LOG = _WriteLog()


def interrupted_outputs() -> tuple[list[Path], list[Path]]:
    """(outputs this process finished, outputs whose writing was abandoned), as the user named them."""
    return list(_LOG.finished), list(_LOG.abandoned)


def _record(target: Path, done: bool) -> None:
    if _LOG.depth == 0:
        (_LOG.finished if done else _LOG.abandoned).append(target)


_TERMINATION = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back for a few system calls (a temporary being created and remembered, an
    old output swapped for the new): a signal in between would leave a temporary, or no output at all.

    Python runs signal handlers in the main thread only, so this swaps the handlers there for one that notes the
    signal, then restores them and raises what arrived. (A signal mask would not do: it is per thread, and the
    kernel hands a process signal to any thread that doesn't block it, such as torch's.) Writers in other threads
    never see a KeyboardInterrupt and need no deferral.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _TERMINATION}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}  # set outside Python
    arrived: list[int] = []
    for signum in previous:
        signal.signal(signum, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)  # handled as it would have been, now that the work is done


# ---- atomic writers ---------------------------------------------------------------------------------------------


@contextmanager
def atomic_dir(target: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block finishes.

    Without `force`, an existing non-empty `target` is an error (checked before any work starts). A symlink to a
    directory stays a link: the directory it points to is replaced. On success every file and folder inside gets
    the umask's permissions (libraries such as safetensors write owner-only files).
    """
    shown = target
    target = resolve_output(target, expect="dir")
    if target.exists() and any(target.iterdir()) and not force:
        raise TuluError(f"{shown}: already exists and is not empty (pass --force to overwrite)")
    ensure_writable(target)
    created = _make_parents(target)
    remove_stale_temporaries(target)
    tmp = None
    try:
        # A signal held back here is raised when the block ends, inside the `try`: the temporary is removed.
        with _signals_deferred():
            tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), dir=target.parent))
            _LOG.depth += 1
        yield tmp
        apply_umask(tmp)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            _LOG.depth -= 1
        _remove_if_empty(created)
        _record(Path(shown), done=False)
        _name_the_target(exc, Path(shown))
        raise
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    # Never a moment without an output: the old one goes aside only for the swap. A signal held back during it is
    # raised right after, with the new output in place (and recorded as written).
    with _signals_deferred():
        _LOG.depth -= 1
        if target.exists():
            target.rename(backup)
        tmp.rename(target)
        _record(Path(shown), done=True)
    shutil.rmtree(backup, ignore_errors=True)  # interrupted here: the next writer of the target removes it


@contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file next to `target` (next to what it links to, for a symlink); it is renamed onto that
    path only on success.

    The handle's ``name`` is the temporary's path, so a writer can read back what it wrote before it counts as
    finished (`tulu_lite.export` loads the GGUF it wrote and verifies it before the rename).
    """
    shown = target
    target = resolve_output(target, expect="file")
    ensure_writable(target)
    created = _make_parents(target)
    remove_stale_temporaries(target)
    tmp = None
    try:
        # A signal held back here is raised when the block ends, inside the `try`: the temporary is removed.
        with _signals_deferred():
            fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), dir=target.parent)
        os.close(fd)  # reopened by name, so that `handle.name` is the path (os.fdopen would name it by the fd)
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _remove_if_empty(created)
        _record(Path(shown), done=False)
        _name_the_target(exc, Path(shown))
        raise
    _record(Path(shown), done=True)


def apply_umask(root: Path) -> None:
    """Give `root` and everything inside it the permissions of the umask (executables keep their x bits)."""
    mask = current_umask()
    for folder, folders, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, (0o777 if executable else 0o666) & ~mask)
        for name in folders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o777 & ~mask)
    os.chmod(root, 0o777 & ~mask)


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
