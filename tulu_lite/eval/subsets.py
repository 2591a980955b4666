"""Seeded example subsets, drawn exactly as open-instruct draws them (protocol tulu-v1).

open-instruct seeds Python's global `random` with 42 at the start of each task and then calls `random.sample` /
`random.shuffle` in a fixed order: GSM `sample(test, 200)`, BBH `sample(task, 40)` per task file, TydiQA
`sample(language, 100)` per language then `sample(train language, 1)` per language, ToxiGen `shuffle(group)` per
prompt file, HumanEval `sample(problems, n)`. `random.Random(seed)` has the same state as `random.seed(seed)`, so
replaying the same calls on the same lists selects the same examples.

Two of those orders are not fixed by the reference itself, and tulu-lite pins them:
- files come from `glob.glob`, i.e. in the directory's listing order (not sorted). `glob_order` uses the same
  call, so on the same folder the same files come in the same order; the order is saved in settings.json.
- TydiQA walks its languages in the iteration order of a Python `set` of strings, which depends on the
  interpreter's hash seed (random per process unless PYTHONHASHSEED is set). `set_order` computes that order in a
  child interpreter with PYTHONHASHSEED=0, i.e. what the reference does when run with PYTHONHASHSEED=0 on the
  same Python version.
"""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from tulu_lite.errors import TuluError

T = TypeVar("T")
HASH_SEED = 0
_SET_ORDER = "import json, sys; print(json.dumps(list(set(json.load(sys.stdin)))))"


def reference_rng(seed: int) -> random.Random:
    """The generator open-instruct's `random.seed(seed)` sets up (module-level `random` is one `Random`)."""
    return random.Random(seed)


def sample_if_longer(rng: random.Random, items: Sequence[T], n: int | None) -> list[T]:
    """`random.sample(items, n)` when there are more than n items (the reference's rule), else all, in order."""
    if n is not None and len(items) > n:
        return rng.sample(list(items), n)
    return list(items)


def glob_order(folder: Path, pattern: str) -> list[Path]:
    """Files as `glob.glob(os.path.join(folder, pattern))` lists them (directory order, as the reference)."""
    return [Path(name) for name in glob.glob(os.path.join(str(folder), pattern))]


def set_order(values: Sequence[str]) -> list[str]:
    """The iteration order of `set(values)` in a Python of this version started with PYTHONHASHSEED=0."""
    env = {"PYTHONHASHSEED": str(HASH_SEED), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        done = subprocess.run([sys.executable, "-S", "-c", _SET_ORDER], input=json.dumps(list(values)), env=env,
                              capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TuluError(f"could not compute the reference's language order ({exc})") from exc
    return json.loads(done.stdout)
