"""Scoring untrusted generated programs: each in a sandbox, judged by a harness it cannot reach.

Nothing generated ever runs inside the evaluator. Each program gets a harness process (`tulu_lite.eval.sandbox`,
a fresh ``python -I -S`` per program) that starts the program in a sandbox, runs the test itself and reports a
verdict on a pipe only the evaluator reads. The test calls the program's function across a process boundary and
receives plain data, so a program can fail or time out but never forge a pass (see the sandbox module for what
the sandbox prevents). A few programs run at once, started and polled from one thread.

On Linux with unprivileged user namespaces (checked once per process by running a trivial program) each program
also gets its own user, mount, PID and network namespaces: read-only file system except its folder, no network,
no view of other processes. Without them it still runs in its own session with resource limits and every
process it forks is killed, and a one-line note says that isolation is missing.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tulu_lite.errors import TuluError
from tulu_lite.eval.sandbox.compiling import compile_program
from tulu_lite.eval.sandbox.wire import describe

MEMORY_LIMIT_BYTES = 2 * 1024**3
FILE_SIZE_LIMIT_BYTES = 16 * 1024**2
SANDBOX = Path(__file__).with_name("sandbox")  # a folder run as a script (its __main__.py)
# The harness enforces the deadline itself (and then removes the program); this much later the evaluator kills
# a harness that did not answer.
HARNESS_GRACE_SECONDS = 10.0
Isolation = Literal["auto", "namespaces", "none"]


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # "passed", "failed" or "timed out"
    detail: str = ""  # why it failed: what the test or the program raised, or "exited before the end of the tests"


@dataclass(frozen=True)
class Program:
    """A program to score, in parts: `candidate` (prompt + completion) runs in the sandbox; `test` (trusted: the
    prompt and the benchmark's tests, defining ``check(candidate)``) runs in the harness and calls `entry_point`.

    A plain string is accepted too: ``PROMPT COMPLETION TEST check(NAME)`` is split at its last ``def check``
    (helpers the test uses then come from the program, as with the original harness); a string without a final
    ``check(...)`` is a script that passes by running to its end.
    """

    candidate: str
    test: str
    entry_point: str


@dataclass
class _Job:
    process: subprocess.Popen
    deadline: float
    stderr: Path


def run_programs(sources: Sequence[str | Program], *, timeout: float, workers: int,
                 on_done: Callable[[], None] = lambda: None, isolation: Isolation = "auto") -> list[Outcome]:
    """Run every program (at most `workers` at a time); an outcome per program, in order.

    `isolation`: ``auto`` uses namespaces when the system allows them (else prints a note once); ``namespaces``
    requires them; ``none`` does without (tests of the fallback).
    """
    return _run_all(sources, timeout, workers, on_done, _use_namespaces(isolation))


def _run_all(sources: Sequence[str | Program], timeout: float, workers: int, on_done: Callable[[], None],
             isolate: bool) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(sources)
    pending = deque(enumerate(sources))
    running: dict[int, _Job] = {}
    with tempfile.TemporaryDirectory(prefix="tulu-lite-exec-") as root:
        while pending or running:
            while pending and len(running) < workers:
                index, source = pending.popleft()
                outcomes[index] = _fails_to_compile(source)
                if outcomes[index] is not None:
                    on_done()
                    continue
                running[index] = _start(_job(source, Path(root) / str(index), timeout, isolate), timeout)
            now = time.monotonic()
            done = [i for i, job in running.items() if job.process.poll() is not None or now > job.deadline]
            for index in done:
                outcomes[index] = _finish(running.pop(index))
                on_done()
            if not done:
                time.sleep(0.005)
    return outcomes


def _fails_to_compile(source: str | Program) -> Outcome | None:
    """The outcome of a program whose candidate does not compile, which needs no sandbox: compiling runs nothing
    of it, and the harness would compile it the same way and fail it with the same detail (most of what an
    undertrained model writes; starting a harness costs about 0.1 s). None for every other program."""
    if not isinstance(source, Program):
        return None  # a plain text is split by the harness first, with its own messages
    try:
        compile_program(source.candidate)
    except SyntaxError as exc:  # IndentationError and TabError too
        return Outcome(False, "failed", describe(exc))
    except Exception:  # noqa: BLE001 - anything else (null bytes, too deep) is the harness's to report
        return None
    return None


def _job(source: str | Program, folder: Path, timeout: float, isolate: bool) -> tuple[dict, dict]:
    """(settings for the harness's command line, the job with the program and its test, for its stdin)."""
    folder.mkdir()
    settings = {"folder": str(folder), "timeout": timeout, "isolate": isolate, "memory_bytes": MEMORY_LIMIT_BYTES,
                "file_bytes": FILE_SIZE_LIMIT_BYTES}
    if isinstance(source, Program):
        return settings, {"candidate": source.candidate, "test": source.test, "entry_point": source.entry_point}
    return settings, {"source": source}


def _start(settings_and_job: tuple[dict, dict], timeout: float) -> _Job:
    """The harness, in its own session; the job (with the test) goes through its stdin, never through a file."""
    settings, job = settings_and_job
    stderr = Path(settings["folder"]).with_suffix(".harness-stderr")
    with open(stderr, "wb") as errors:
        process = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(SANDBOX), json.dumps(settings)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                   start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                                "LANG": "C.UTF-8"})
    try:
        process.stdin.write(json.dumps(job).encode())
        process.stdin.close()
    except BrokenPipeError:  # the harness died at once; _finish reports it
        pass
    return _Job(process, time.monotonic() + timeout + HARNESS_GRACE_SECONDS, stderr)


def _finish(job: _Job) -> Outcome:
    if job.process.poll() is None:  # the harness itself hung: kill it (its candidate dies with it)
        os.killpg(job.process.pid, 9)
        job.process.wait()
        job.process.stdout.close()
        return Outcome(False, "timed out")
    output = job.process.stdout.read().decode("utf-8", errors="replace")
    job.process.stdout.close()
    try:
        verdict = json.loads(output.strip().splitlines()[-1])
        return Outcome(verdict["status"] == "passed", verdict["status"], verdict.get("detail", ""))
    except (IndexError, ValueError, KeyError, TypeError):
        lines = job.stderr.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        reason = lines[-1][:300] if lines else f"exit code {job.process.returncode}"
        return Outcome(False, "failed", f"the harness failed: {reason}")


# ---- isolation: available here? -------------------------------------------------------------------------------


def _use_namespaces(isolation: Isolation) -> bool:
    if isolation == "none":
        return False
    available, reason = namespaces_available()
    if isolation == "namespaces" and not available:
        raise TuluError(f"program isolation with namespaces is not available here ({reason})")
    if not available:
        _note_once(reason)
    return available


@functools.cache
def namespaces_available() -> tuple[bool, str]:
    """Whether programs can run in their own namespaces here, and if not why (runs one trivial program)."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    [outcome] = _run_all(["x = 1"], 30.0, 1, lambda: None, True)
    if outcome.passed:
        return True, ""
    return False, outcome.detail.removeprefix("sandbox: ")


@functools.cache
def _note_once(reason: str) -> None:
    print(f"note: HumanEval programs run without namespace isolation ({reason}): each keeps its own session and "
          f"resource limits, but a hostile program could write your files, use the network and reach your other "
          f"processes; score untrusted outputs in a container", file=sys.stderr)
