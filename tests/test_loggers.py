"""`report_to: tensorboard | wandb`: the training and held-out curves reach the logger (wandb offline)."""

from __future__ import annotations

import io
import json
import os

import pytest
from cli_cases import run_cli
from rich.console import Console
from tiny_runs import DEMO, tiny_cache, write_recipe  # noqa: F401

from tulu_lite.recipe import load_recipe
from tulu_lite.train import train

DATA = {"train_files": [str(DEMO)], "eval_fraction": 0.1, "max_seq_length": 128}


@pytest.mark.slow
def test_tensorboard_gets_training_and_per_source_heldout_curves(tmp_path):
    pytest.importorskip("tensorboard", reason='needs pip install "tulu-lite[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(write_recipe(tmp_path, data=DATA, max_steps=4, eval_steps=2, report_to="tensorboard"))
    train(recipe, console=Console(file=io.StringIO()))
    runs = [path for path in (recipe.checkpoint_dir / "runs").rglob("events.out.tfevents.*")]
    assert runs, list(recipe.checkpoint_dir.rglob("*"))
    events = EventAccumulator(str(runs[0].parent))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "eval/loss", "eval/loss/demo"} <= set(scalars), scalars
    assert [event.step for event in events.Scalars("eval/loss")] == [0, 2, 4]
    metrics = json.loads((recipe.output_dir / "metrics.json").read_text())
    logged = [event.value for event in events.Scalars("eval/loss/demo")]
    assert logged == pytest.approx([entry["sources"]["demo"] for entry in metrics["heldout"]["history"]])


@pytest.mark.slow
def test_wandb_offline_run(tmp_path):
    pytest.importorskip("wandb", reason='needs pip install "tulu-lite[wandb]"')
    recipe = write_recipe(tmp_path, data=DATA, max_steps=2, eval_steps=2, report_to="wandb")
    done = run_cli(["train", str(recipe)], cwd=tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"},
                   timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # By default the wandb files go beside the checkpoints, under the project "tulu-lite".
    runs = list((tmp_path / "out.checkpoints" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    history = list(runs[0].glob("*.wandb"))
    assert history and history[0].stat().st_size > 0
    assert os.environ.get("WANDB_PROJECT") is None  # nothing leaked into the test process
