"""One run of a training stage: its output location, where it starts (from scratch or a checkpoint), and what its
trainer carries besides TRL's arguments (`RunContext`).

Any stage goes through these before it builds its trainer: the output must be writable and new (or --force), and
--resume picks the newest complete checkpoint whose recipe may continue (`tulu_lite.train.checkpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_object
from tulu_lite.outputs import ensure_writable
from tulu_lite.recipe import Recipe
from tulu_lite.train import checkpoints as ckpt
from tulu_lite.train.data import TrainingData, check_mixture_unchanged

if TYPE_CHECKING:
    from rich.console import Console


def check_output(recipe: Recipe, *, force: bool) -> None:
    """Fail before any loading if the output exists or its location can't be written."""
    out = recipe.output_dir
    for folder, key in ((out, "output_dir"), (recipe.checkpoint_dir, "output_dir (its checkpoints folder)")):
        if folder.is_file():  # --force replaces a folder, never a file: say so before training
            raise TuluError(f"{key}: {folder} is a file, not a folder (remove it or choose another output_dir)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise TuluError(f"output_dir: {out} already exists (pass --force to overwrite, or choose another output_dir)")
    ensure_writable(out, "output_dir")


@dataclass(frozen=True)
class Start:
    """Where training starts: a checkpoint to resume (or None) and the recipe changes accepted for it."""

    checkpoint: str | None = None
    changes: dict = field(default_factory=dict)
    resumed: list = field(default_factory=list)  # the run's earlier resumes (metrics.json "resumed")


def prepare_locations(recipe: Recipe, *, resume: bool, force: bool, main: bool, console: Console) -> Start:
    """Decide where training starts: from scratch (clearing old checkpoints with --force), or a checkpoint."""
    earlier = ckpt.checkpoint_folders(recipe.checkpoint_dir)
    if not resume:
        if earlier and not force:
            raise TuluError(f"{recipe.checkpoint_dir}: holds checkpoints of an earlier run "
                            f"(pass --resume to continue it, or --force to start over)")
        if force and main:
            ckpt.clear_checkpoints(recipe.checkpoint_dir)
        return Start()
    latest = ckpt.latest_checkpoint(recipe.checkpoint_dir)
    for folder, reason in latest.incomplete:
        if main:
            aside = ckpt.set_aside(folder)
            console.print(f"[yellow]{folder.name} is incomplete ({reason}): set aside as {aside.name}[/]")
    if latest.checkpoint is None:
        if main:
            console.print(f"[yellow]no complete checkpoint in {recipe.checkpoint_dir}: starting from step 0[/]")
        return Start()
    changes = ckpt.check_resume(latest.checkpoint, recipe)
    check_mixture_unchanged(recipe)
    if main:
        note = f" with {ckpt.describe_changes(changes)}" if changes else ""
        console.print(f"resuming from [bold]{latest.checkpoint}[/]{note}", highlight=False)
    earlier_resumes = read_json_object(latest.checkpoint / "metrics.json").get("resumed", [])
    return Start(str(latest.checkpoint), changes, earlier_resumes)


@dataclass
class RunContext:
    """What a stage's trainer needs beyond TRL's arguments: the recipe, the data and how this run started."""

    recipe: Recipe
    data: TrainingData
    start: Start
    base: dict | None = None  # base_model.json, computed once (at the first checkpoint or the output)
