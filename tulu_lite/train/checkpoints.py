"""Checkpoints: what each folder carries, which ones are complete, which recipe may continue one, one run at a time.

A training run writes ``OUT.checkpoints/checkpoint-N/`` every `training.save_steps` (and when stopped with
Ctrl-C). Besides the Trainer's files (PEFT adapter, tokenizer, optimizer, scheduler, RNG and trainer state) each
carries what `merge` needs to use it on its own: the resolved ``recipe.yaml``, ``base_model.json``, the metrics so
far, and, when the best held-out evaluation was earlier, that adapter's weights (``best_adapter.safetensors``).
``checkpoint.json`` is written last and lists every file with its size: a checkpoint without it, or with a file of
another size (a crash mid-save, a full disk, a truncated copy), is incomplete and never resumed from. The
extras and the manifest are written by `write_checkpoint_extras`, once the Trainer has saved its own files.

`--resume` compares the checkpoint's recipe with the current one: what cannot continue the same run (the model,
its quantization and LoRA, the data, the batch layout, the seed, the optimizer settings the checkpoint's
optimizer and scheduler state would silently override) is refused; the rest (more steps or epochs, how often to
log, evaluate and save, the patience) proceeds and is recorded.

`run_lock` makes a run hold ``OUT.checkpoints/.lock`` (an flock, released by the kernel when the holder dies, even
by SIGKILL), so a second run of the same output is refused at once instead of writing into the same checkpoints.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_object, write_json
from tulu_lite.outputs import ensure_writable, os_reason
from tulu_lite.recipe import Recipe, load_recipe, save_recipe

CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST = "checkpoint.json"
BEST_ADAPTER = "best_adapter.safetensors"
INCOMPLETE_PREFIX = "incomplete-"
LOCK = ".lock"

# Recipe keys a resumed run may change: how long to train and how often to log, evaluate and save.
CONTINUABLE = (
    "training.epochs", "training.max_steps", "training.logging_steps", "training.eval_steps", "training.save_steps",
    "training.save_total_limit", "training.early_stopping_patience", "training.report_to",
    "training.gradient_checkpointing", "data.num_proc", "output_dir",
)


# ---- completeness -------------------------------------------------------------------------------------------------


def checkpoint_folders(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder, oldest step first."""
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found)


def incomplete_reason(folder: Path) -> str | None:
    """None when `folder` is a complete checkpoint, else what is wrong with it."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (the save did not finish)"
    try:
        sizes = read_json_object(manifest)["files"]
    except (TuluError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size:,} bytes, {size:,} were written"
    return None


def write_manifest(folder: Path, info: dict) -> None:
    """Record every file's size, then (atomically, last) the manifest that marks the checkpoint complete."""
    files = {str(path.relative_to(folder)): path.stat().st_size
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}
    write_json(folder / MANIFEST, {**info, "files": files})


def read_manifest(folder: Path) -> dict:
    return read_json_object(folder / MANIFEST)


@dataclass(frozen=True)
class Latest:
    """The newest complete checkpoint (or None) and the newer folders that are not complete, with why."""

    checkpoint: Path | None
    incomplete: list[tuple[Path, str]]


def latest_checkpoint(checkpoint_dir: Path) -> Latest:
    incomplete = []
    for _step, folder in reversed(checkpoint_folders(checkpoint_dir)):
        reason = incomplete_reason(folder)
        if reason is None:
            return Latest(folder, incomplete)
        incomplete.append((folder, reason))
    return Latest(None, incomplete)


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's way (it would count it when rotating checkpoints)."""
    target = folder.with_name(INCOMPLETE_PREFIX + folder.name)
    if target.exists():
        shutil.rmtree(target)
    folder.rename(target)
    return target


def clear_checkpoints(checkpoint_dir: Path) -> None:
    """Remove an earlier run's checkpoints and data (--force without --resume), keeping the lock we hold."""
    if not checkpoint_dir.is_dir():
        return
    for path in checkpoint_dir.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


# ---- may this recipe continue that checkpoint? --------------------------------------------------------------------


def _flat(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def recipe_changes(before: Recipe, after: Recipe) -> dict[str, tuple[object, object]]:
    """Dotted key -> (before, after) for every resolved value that differs; a section added or removed as a whole
    (``quantization``) is one change."""
    old_dump, new_dump = before.model_dump(mode="json"), after.model_dump(mode="json")
    old, new = _flat(old_dump), _flat(new_dump)
    changes: dict[str, tuple[object, object]] = {}
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            section = key.split(".")[0]
            if old_dump.get(section) is None or new_dump.get(section) is None:
                key = section
            changes[key] = (old.get(key, old_dump.get(key)), new.get(key, new_dump.get(key)))
    return changes


def _show(value: object) -> str:
    if isinstance(value, list) and len(value) > 2:
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "set"
    return "unset" if value is None else str(value)


def check_resume(checkpoint: Path, recipe: Recipe) -> dict[str, tuple[object, object]]:
    """Refuse (one line naming the keys) a recipe that can't continue `checkpoint`; return the accepted changes."""
    saved = checkpoint / "recipe.yaml"
    if not saved.is_file():
        raise TuluError(f"{checkpoint}: no recipe.yaml, so it can't be checked against this recipe; start over "
                        f"with --force")
    changes = recipe_changes(load_recipe(saved), recipe)
    refused = {key: change for key, change in changes.items() if key not in CONTINUABLE}
    if refused:
        listed = ", ".join(f"{key} ({_show(old)} → {_show(new)})" for key, (old, new) in refused.items())
        raise TuluError(f"--resume: {checkpoint.name} was trained with a different recipe and can't continue with "
                        f"this one: {listed}; undo these changes, or start a new run (another output_dir, or --force)")
    return changes


def describe_changes(changes: dict[str, tuple[object, object]]) -> str:
    return ", ".join(f"{key} {_show(old)} → {_show(new)}" for key, (old, new) in changes.items())


# ---- what a checkpoint carries besides the Trainer's files --------------------------------------------------------


def write_checkpoint_extras(trainer, folder: Path) -> None:
    """What makes a checkpoint usable on its own (merge, eval, resume checks), then the manifest, last.

    `trainer` is a stage's trainer: it carries `run` (`tulu_lite.train.run.RunContext`) and `best`
    (`tulu_lite.train.heldout.BestAdapter`).
    """
    from tulu_lite.train.heldout import save_weights
    from tulu_lite.train.report import (
        base_record,
        plot_loss,
        summarise,
        write_model_card,
    )

    run = trainer.run
    save_recipe(run.recipe, folder / "recipe.yaml")
    if run.base is None:
        run.base = base_record(run.recipe, trainer.model)
    write_json(folder / "base_model.json", run.base)
    metrics = summarise(trainer)
    write_json(folder / "metrics.json", metrics)
    plot_loss(metrics, folder / "loss.png", title=f"{run.recipe.output_dir.name} at step {trainer.state.global_step}")
    write_model_card(run.recipe, metrics, folder / "README.md")  # over PEFT's empty template
    best = trainer.best
    if best.weights is not None and best.step != trainer.state.global_step:
        save_weights(best.weights, folder / BEST_ADAPTER)
    write_manifest(folder, {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
                            "best_step": best.step})


# ---- one run per output -------------------------------------------------------------------------------------------


@contextmanager
def run_lock(recipe: Recipe, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``OUT.checkpoints/.lock`` for the duration of a run; refuse at once if another process holds it.

    The lock file is removed on the way out (and the folder too when the run left nothing in it, so a run refused
    by a later check leaves no trace); one left by a killed run is simply locked again. Only the main process of a
    data-parallel launch locks: flock excludes other processes.
    """
    if not enabled:
        yield
        return
    directory = recipe.checkpoint_dir
    ensure_writable(directory / LOCK, "checkpoints")
    try:
        handle = _acquire(directory / LOCK, recipe)
    except OSError as exc:  # a full disk: the lock's pid line can't be written
        _release(directory)
        raise TuluError(f"{directory / LOCK}: {os_reason(exc)}") from None
    try:
        yield
    finally:
        _release(directory)
        handle.close()


def _release(directory: Path) -> None:
    # Removed while still held; a process that opened the old file re-checks it after locking (`_acquire`).
    (directory / LOCK).unlink(missing_ok=True)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _acquire(path: Path, recipe: Recipe):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TuluError(f"{recipe.output_dir}: another tulu-lite run ({holder}) is training into this output and "
                        f"{recipe.checkpoint_dir.name}; wait for it to finish or stop it, or choose another "
                        f"output_dir") from None
    # A finishing run may have removed the file between our open and our lock: then we hold a lock on nothing.
    if not path.exists() or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
        handle.close()
        return _acquire(path, recipe)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
    except OSError:
        handle.close()
        raise
    return handle
