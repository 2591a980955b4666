"""Running untrusted generated programs: each in its own Python process, with a time limit and resource limits.

Nothing generated is ever executed inside the evaluator. Each program is written to a private temporary folder and
run by a fresh interpreter (`python -I -S`: no site-packages, no PYTHON* variables; the tests need only the
standard library) in its own session, with limits on address space, CPU time, file size and core dumps; at the
wall-clock deadline the whole process group is killed. A few programs run at once (a small pool of child
processes, started and polled from one thread, so the fork-time limits never race other threads' locks).
This contains accidents (infinite loops, runaway memory, stray files); it is not a security sandbox for hostile
code: run model outputs you do not trust inside a container.
"""

from __future__ import annotations

import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MEMORY_LIMIT_BYTES = 2 * 1024**3
FILE_SIZE_LIMIT_BYTES = 16 * 1024**2


# Printed by a line appended to every program: a program that exits early with status 0 (sys.exit(0) in a
# completion) has not passed its tests. A fresh token per run, so no completion can contain it by accident.
_FINISHED = f"__tulu_lite_finished_{secrets.token_hex(8)}__"


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # "passed", "failed" or "timed out"
    detail: str = ""  # last line of stderr for a failure


def _limits(cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:
        # Runs in the child between fork and exec: only setrlimit calls (the resource module is already imported).
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


@dataclass
class _Job:
    process: subprocess.Popen
    folder: Path
    deadline: float


def _start(source: str, folder: Path, timeout: float) -> _Job:
    folder.mkdir()
    (folder / "program.py").write_text(f"{source}\nprint({_FINISHED!r})\n", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "TMPDIR": str(folder),
           "LANG": "C.UTF-8"}
    with open(folder / "stdout.txt", "wb") as stdout, open(folder / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "program.py"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, start_new_session=True, preexec_fn=_limits(int(timeout) + 1))
    return _Job(process, folder, time.monotonic() + timeout)


def _finish(job: _Job) -> Outcome:
    if job.process.poll() is None:  # past its deadline
        os.killpg(job.process.pid, signal.SIGKILL)
        job.process.wait()
        return Outcome(False, "timed out")
    finished = _FINISHED in (job.folder / "stdout.txt").read_text(encoding="utf-8", errors="replace")
    if job.process.returncode == 0 and finished:
        return Outcome(True, "passed")
    if job.process.returncode == 0:
        return Outcome(False, "failed", "exited before the end of the tests")
    lines = (job.folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return Outcome(False, "failed", lines[-1][:300] if lines else f"exit code {job.process.returncode}")


def run_programs(sources: Sequence[str], *, timeout: float, workers: int,
                 on_done: Callable[[], None] = lambda: None) -> list[Outcome]:
    """Run every program (at most `workers` at a time); an outcome per program, in order."""
    outcomes: list[Outcome | None] = [None] * len(sources)
    pending = deque(enumerate(sources))
    running: dict[int, _Job] = {}
    with tempfile.TemporaryDirectory(prefix="tulu-lite-exec-") as root:
        while pending or running:
            while pending and len(running) < workers:
                index, source = pending.popleft()
                running[index] = _start(source, Path(root) / str(index), timeout)
            now = time.monotonic()
            done = [i for i, job in running.items() if job.process.poll() is not None or now > job.deadline]
            for index in done:
                outcomes[index] = _finish(running.pop(index))
                on_done()
            if not done:
                time.sleep(0.005)
    return outcomes
