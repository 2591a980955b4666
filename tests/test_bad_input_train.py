"""`tulu-lite train` on bad input: one error line, exit 2, nothing created or changed (tests/cli_cases.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_cases import BadInput, check_bad_input
from tiny_runs import DEMO, tiny_cache, write_recipe  # noqa: F401

from tulu_lite.recipe import load_recipe, save_recipe
from tulu_lite.train import checkpoints as ckpt

# A folder whose tensorboard / tensorboardX / wandb packages fail to import, as on a machine without them.
NO_LOGGERS = {"PYTHONPATH": os.pathsep.join(
    [str(Path(__file__).parent / "fixtures" / "no_loggers"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def recipe(tmp: Path) -> None:
    write_recipe(tmp, max_steps=2)


def with_checkpoint(tmp: Path) -> None:
    """A run's complete checkpoint-2, trained with lora.r 8."""
    write_recipe(tmp, max_steps=2)
    folder = tmp / "out.checkpoints" / "checkpoint-2"
    folder.mkdir(parents=True)
    save_recipe(load_recipe(tmp / "recipe.yaml"), folder / "recipe.yaml")
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    ckpt.write_manifest(folder, {"step": 2, "max_steps": 2})


def with_output(tmp: Path) -> None:
    write_recipe(tmp, max_steps=2)
    (tmp / "out").mkdir()
    (tmp / "out" / "adapter_config.json").write_text("{}")


CASES = [
    BadInput("infinite epochs", ["train", "recipe.yaml", "--set", "training.epochs=.inf"],
             r"training\.epochs: input should be a finite number, got inf", setup=recipe),
    BadInput("nan learning rate", ["train", "recipe.yaml", "--set", "training.learning_rate=.nan"],
             r"training\.learning_rate: input should be a finite number, got nan", setup=recipe),
    BadInput("tensorboard not installed", ["train", "recipe.yaml", "--set", "training.report_to=tensorboard"],
             r'training\.report_to: tensorboard is not installed \(.*\); install it with: '
             r'pip install "tulu-lite\[tensorboard\]"', setup=recipe, env=NO_LOGGERS),
    BadInput("wandb not installed", ["train", "recipe.yaml", "--set", "training.report_to=wandb"],
             r'training\.report_to: wandb is not installed .*pip install "tulu-lite\[wandb\]"', setup=recipe,
             env=NO_LOGGERS),
    BadInput("missing eval file", ["train", "recipe.yaml", "--set", "data.eval_files=[missing.jsonl]"],
             r"data\.eval_files\[0\]: .*missing\.jsonl: file not found", setup=recipe),
    BadInput("eval files and fraction", ["train", "recipe.yaml", "--set", "data.eval_files=[a.jsonl]",
                                         "--set", "data.eval_fraction=0.1"],
             r"give data\.eval_files or data\.eval_fraction, not both", setup=recipe),
    BadInput("eval fraction of 1.5", ["train", "recipe.yaml", "--set", "data.eval_fraction=1.5"],
             r"data\.eval_fraction: input should be less than 1, got 1\.5", setup=recipe),
    BadInput("eval steps of 0", ["train", "recipe.yaml", "--set", "data.eval_fraction=0.1",
                                 "--set", "training.eval_steps=0"],
             r"training\.eval_steps: input should be greater than or equal to 1", setup=recipe),
    BadInput("early stopping without held-out data", ["train", "recipe.yaml",
                                                      "--set", "training.early_stopping_patience=3"],
             r"training\.early_stopping_patience needs held-out data: set data\.eval_files or "
             r"data\.eval_fraction", setup=recipe),
    BadInput("resume with another lora.r", ["train", "recipe.yaml", "--resume", "--set", "lora.r=4"],
             r"--resume: checkpoint-2 was trained with a different recipe and can't continue with this one: "
             r"lora\.r \(8 → 4\); undo these changes, or start a new run", setup=with_checkpoint),
    BadInput("checkpoints without --resume", ["train", "recipe.yaml"],
             r"out\.checkpoints: holds checkpoints of an earlier run \(pass --resume to continue it, or --force",
             setup=with_checkpoint),
    BadInput("existing output", ["train", "recipe.yaml"], r"output_dir: .*out already exists \(pass --force",
             setup=with_output),
]


# The split is made in training (`tulu_lite.train.data.encode_data`, which calls heldout.split_heldout); the check,
# `tulu_lite.data.encode.check_heldout_split`, runs right after it.
HELD_OUT_ALMOST_EVERYTHING = BadInput(
    "eval fraction of 0.999", ["train", "recipe.yaml"],
    r"recipe\.yaml:\d+: data\.eval_fraction: 0\.999 holds out [\d,]+ of [\d,]+ examples and leaves [\d,]+ to train on",
    setup=lambda tmp: write_recipe(tmp, max_steps=1, data={"train_files": [str(DEMO)], "max_seq_length": 128,
                                                           "eval_fraction": 0.999}))


@pytest.mark.parametrize("case", [*CASES, HELD_OUT_ALMOST_EVERYTHING], ids=str)
def test_bad_input(case: BadInput, tmp_path: Path) -> None:
    check_bad_input(case, tmp_path)


def test_a_held_out_split_larger_than_the_training_split_is_refused():
    from tulu_lite.data.encode import check_heldout_split
    from tulu_lite.errors import TuluError

    check_heldout_split(0.05, 95, 5, "r.yaml:4: data.eval_fraction")
    check_heldout_split(0.5, 5, 5, "r.yaml:4: data.eval_fraction")  # half and half: allowed
    with pytest.raises(TuluError, match=r"^r\.yaml:4: data\.eval_fraction: 0\.999 holds out 113 of 114 examples and "
                                        r"leaves 1 to train on; the held-out share should be small \(e\.g\. 0\.05\)"):
        check_heldout_split(0.999, 1, 113, "r.yaml:4: data.eval_fraction")
