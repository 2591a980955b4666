"""Run the CLI as a user would (a subprocess) on bad input and check the promise every command makes.

The promise (README, "Bad input"): exit code 2, one line on stderr that starts with ``error:`` and names the
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
        else:
            state[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return state


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
    after = snapshot(tmp)
    for rel, state in before.items():
        assert after.get(rel) == state, f"{case.name}: {rel} was changed or removed"
    for rel in after.keys() - before.keys():
        assert not TEMPORARY.search(rel), f"{case.name}: temporary left behind: {rel}"
        assert any(Path(rel).match(pattern) for pattern in case.allow_new), f"{case.name}: unexpected new {rel}"
    return errors[0]
