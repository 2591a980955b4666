"""Run the CLI as a user would (a subprocess) on bad input and check the promise every command makes.

The promise (docs/safety.md): exit code 2, one line on stderr that starts with ``error:`` and names the
problem, no traceback, every file that existed before byte-identical, no temporary left behind. Test modules
declare their cases as `BadInput` rows and call `check_bad_input` from a parametrized test, so the table for
each command lives next to that command's other tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Files a failed command may never leave behind: atomic writers' temporaries and backups.
TEMPORARY = re.compile(r"\.partial-|\.old-")


@dataclass
class BadInput:
    """One bad-input case: `setup(tmp)` writes the inputs, `args` may use ``{tmp}``, `expect` is a regex the
    error line must match (search, not full match)."""

    name: str
    args: list[str]
    expect: str
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    allow_new: tuple[str, ...] = ()  # glob patterns (relative to tmp) of new files the command may create
    timeout: float = 180

    def __str__(self) -> str:  # pytest ids
        return self.name


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 180):
    """`python -m tulu_lite ARGS` with a hub-free environment; returns the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tulu_lite", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mode) for every file under `root` (directories by mode only)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.exists():
            state[rel] = ("link", 0)
        elif path.is_dir():
            state[rel] = ("dir", path.stat().st_mode)
        elif not path.is_file():  # a FIFO or a device: reading it would block or never end
            state[rel] = ("special", path.stat().st_mode)
        else:
            state[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return state


def assert_untouched(case, before: dict, after: dict) -> None:
    """Every file of `before` is byte-identical in `after`; a new file is no temporary and one `case` allows."""
    for rel, state in before.items():
        assert after.get(rel) == state, f"{case.name}: {rel} was changed or removed"
    for rel in after.keys() - before.keys():
        assert not TEMPORARY.search(rel), f"{case.name}: temporary left behind: {rel}"
        assert any(Path(rel).match(pattern) for pattern in case.allow_new), f"{case.name}: unexpected new {rel}"


def check_bad_input(case: BadInput, tmp: Path) -> str:
    """Run `case` in `tmp` and assert the bad-input promise; return the error line."""
    if case.setup is not None:
        case.setup(tmp)
    before = snapshot(tmp)
    args = [arg.replace("{tmp}", str(tmp)) for arg in case.args]
    done = run_cli(args, cwd=tmp, env=case.env, timeout=case.timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 2, f"{case.name}: exit {done.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, f"{case.name}: traceback\n{output[-3000:]}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"{case.name}: expected one 'error:' line on stderr, got\n{done.stderr}"
    assert re.search(case.expect, errors[0]), f"{case.name}: {errors[0]!r} does not match {case.expect!r}"
    assert_untouched(case, before, snapshot(tmp))
    return errors[0]


# ---- interrupted commands ---------------------------------------------------------------------------------------

# Runs the CLI with the atomic writers wrapped so that, once the output named $PAUSE_AT is complete in its temporary
# (the block that writes it has finished, the rename has not happened), the process says so in $READY and waits:
# the signal then arrives at that known point, where the most is at stake (a whole output, about to appear).
PAUSED_CLI = """
import os, sys, time
from contextlib import contextmanager
from pathlib import Path
import tulu_lite.outputs as outputs

def pausing(original):
    @contextmanager
    def wrapper(target, *args, **kwargs):
        with original(target, *args, **kwargs) as tmp:
            yield tmp
            if Path(target).name == os.environ["PAUSE_AT"]:
                Path(os.environ["READY"]).write_text("paused")
                time.sleep(120)
    return wrapper

outputs.atomic_file, outputs.atomic_dir = pausing(outputs.atomic_file), pausing(outputs.atomic_dir)
sys.argv[0] = "tulu-lite"
from tulu_lite.cli import main
main()
"""


@dataclass
class Interrupted:
    """One interruption case: `args` run until the output named `pause_at` is written into its temporary, then
    `signum` arrives; `expect` is a regex the one ``interrupted`` line must match."""

    name: str
    args: list[str]
    pause_at: str
    signum: int
    expect: str
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    allow_new: tuple[str, ...] = ()
    timeout: float = 300

    def __str__(self) -> str:
        return self.name


def run_interrupted(case: Interrupted, cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Run `args` under `PAUSED_CLI`, send the case's signal once it paused (kill it if it never does)."""
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as side:
        ready = Path(side) / "ready"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200", **case.env,
               "PAUSE_AT": case.pause_at, "READY": str(ready)}
        process = subprocess.Popen([sys.executable, "-c", PAUSED_CLI, *args], cwd=cwd, env=env, text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + case.timeout
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if ready.exists():
            process.send_signal(case.signum)
        else:
            process.kill()
        stdout, stderr = process.communicate(timeout=60)
        assert ready.exists(), \
            f"{case.name}: never reached {case.pause_at} (exit {process.returncode})\n{stderr[-3000:]}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def check_interrupted(case: Interrupted, tmp: Path) -> str:
    """Run `case` in `tmp` and assert what an interruption promises: the signal's exit code (128 + its number),
    exactly one ``interrupted`` line on stderr and no traceback, every file that existed before byte-identical, no
    temporary left behind; return the line."""
    if case.setup is not None:
        case.setup(tmp)
    before = snapshot(tmp)
    done = run_interrupted(case, tmp, [arg.replace("{tmp}", str(tmp)) for arg in case.args])
    output = done.stdout + done.stderr
    assert done.returncode == 128 + case.signum, f"{case.name}: exit {done.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, f"{case.name}: traceback\n{output[-3000:]}"
    lines = [line for line in done.stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, f"{case.name}: expected one 'interrupted' line on stderr, got\n{done.stderr}"
    assert re.search(case.expect, lines[0]), f"{case.name}: {lines[0]!r} does not match {case.expect!r}"
    assert_untouched(case, before, snapshot(tmp))
    return lines[0]
