"""Resuming safely: recipe changes refused or accepted, a truncated last checkpoint, the run lock."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console
from tiny_runs import read_demo, tiny_cache, write_jsonl, write_recipe  # noqa: F401

from tulu_lite.errors import TuluError
from tulu_lite.recipe import load_recipe, save_recipe
from tulu_lite.train import checkpoints as ckpt
from tulu_lite.train import train

# ---- which changes may continue a run ------------------------------------------------------------------------

REFUSED = [
    ("model.tiny.hidden_size=64", "model.tiny.hidden_size"),
    ("model.chat_template=native", "model.chat_template"),
    ("quantization.quant_type=nf4", "quantization"),
    ("lora.r=4", "lora.r"),
    ("lora.target_modules=[q_proj]", "lora.target_modules"),
    ("data.train_files=[other.jsonl]", "data.train_files"),
    ("data.max_seq_length=64", "data.max_seq_length"),
    ("data.padding_free=false", "data.padding_free"),
    ("data.eval_fraction=0.1", "data.eval_fraction"),
    ("training.per_device_batch_size=4", "training.per_device_batch_size"),
    ("training.gradient_accumulation_steps=2", "training.gradient_accumulation_steps"),
    ("training.max_tokens_per_batch=256", "training.max_tokens_per_batch"),
    ("training.seed=2", "training.seed"),
    # Restored from the checkpoint's optimizer and scheduler state: a new value would be silently ignored.
    ("training.learning_rate=0.5", "training.learning_rate"),
    ("training.lr_scheduler=cosine", "training.lr_scheduler"),
]
ACCEPTED = ["training.max_steps=50", "training.epochs=3", "training.logging_steps=5", "training.save_steps=7",
            "training.save_total_limit=5", "data.eval_fraction=0.1 training.eval_steps=3",
            "data.num_proc=2", "training.gradient_checkpointing=true"]


@pytest.fixture
def saved_checkpoint(tmp_path):
    """A checkpoint folder holding the recipe it was trained with (all check_resume reads)."""
    path = write_recipe(tmp_path, max_steps=20, data={"train_files": ["demo.jsonl"], "max_seq_length": 128})
    (tmp_path / "demo.jsonl").write_text("")
    folder = tmp_path / "out.checkpoints" / "checkpoint-10"
    folder.mkdir(parents=True)
    save_recipe(load_recipe(path), folder / "recipe.yaml")
    return path, folder


@pytest.mark.parametrize("override, key", REFUSED, ids=[key for _, key in REFUSED])
def test_resume_refuses_a_change_that_cannot_continue_the_run(saved_checkpoint, override, key):
    path, folder = saved_checkpoint
    with pytest.raises(TuluError) as refused:
        ckpt.check_resume(folder, load_recipe(path, override.split()))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("--resume: checkpoint-10 ")
    assert f"{key} (" in message


def test_resume_names_every_refused_key_at_once(saved_checkpoint):
    path, folder = saved_checkpoint
    with pytest.raises(TuluError, match=r"lora\.r \(8 → 4\), training\.learning_rate \(0\.01 → 0\.5\)"):
        ckpt.check_resume(folder, load_recipe(path, ["lora.r=4", "training.learning_rate=0.5", "training.max_steps=9"]))


@pytest.mark.parametrize("overrides", ACCEPTED)
def test_resume_accepts_more_steps_and_another_cadence(saved_checkpoint, overrides):
    path, folder = saved_checkpoint
    if "eval_fraction" in overrides:  # eval_steps needs held-out data; held-out data itself is a refused change
        save_recipe(load_recipe(path, ["data.eval_fraction=0.1"]), folder / "recipe.yaml")
    changes = ckpt.check_resume(folder, load_recipe(path, overrides.split()))
    assert set(changes) <= set(ckpt.CONTINUABLE) and changes


# ---- end to end: an accepted change is applied and recorded; a truncated checkpoint is skipped ------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4 (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = load_recipe(write_recipe(root, max_steps=4, save_steps=2, save_total_limit=5))
    train(recipe, console=Console(file=io.StringIO()))
    return root


def copy_run(source, target):
    for name in ("recipe.yaml", "out", "out.checkpoints"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
        else:
            shutil.copy(source / name, target / name)
    return target / "recipe.yaml"


def test_every_checkpoint_is_complete_and_self_contained(finished_run):
    checkpoint = finished_run / "out.checkpoints" / "checkpoint-2"
    assert ckpt.incomplete_reason(checkpoint) is None
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "recipe.yaml",
                 "base_model.json", "metrics.json", "loss.png", "optimizer.pt", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    assert ckpt.read_manifest(checkpoint)["step"] == 2 and ckpt.read_manifest(checkpoint)["max_steps"] == 4
    assert load_recipe(checkpoint / "recipe.yaml") == load_recipe(finished_run / "recipe.yaml")


@pytest.mark.slow
def test_resume_with_more_steps_and_another_cadence_proceeds_and_is_recorded(finished_run, tmp_path):
    path = copy_run(finished_run, tmp_path)
    recipe = load_recipe(path, ["training.max_steps=7", "training.logging_steps=1"])
    buffer = io.StringIO()
    metrics = train(recipe, resume=True, force=True, console=Console(file=buffer, width=200)).metrics
    assert "resuming from" in buffer.getvalue() and "training.max_steps 4 → 7" in buffer.getvalue()
    assert metrics["steps"] == 7
    # Logged every 2 steps before the resume and every step after it: the new cadence was applied.
    assert [entry["step"] for entry in metrics["log_history"]] == [2, 4, 5, 6, 7]
    # (The run was copied to another folder, which is a change too, and an accepted one.)
    assert metrics["resumed"] == [{"from": "checkpoint-4", "changes": {
        "output_dir": {"before": str(finished_run / "out"), "after": str(tmp_path / "out")},
        "training.logging_steps": {"before": 2, "after": 1}, "training.max_steps": {"before": 4, "after": 7}}}]
    # The saved recipe records what was actually used.
    assert load_recipe(recipe.output_dir / "recipe.yaml").training.max_steps == 7


@pytest.mark.slow
def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path):
    path = copy_run(finished_run, tmp_path)
    last = tmp_path / "out.checkpoints" / "checkpoint-4"
    weights = last / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short, a full disk
    assert "adapter_model.safetensors has 1,000 bytes" in ckpt.incomplete_reason(last)
    buffer = io.StringIO()
    metrics = train(load_recipe(path), resume=True, force=True, console=Console(file=buffer, width=200)).metrics
    printed = buffer.getvalue()
    assert "checkpoint-4 is incomplete (adapter_model.safetensors has 1,000 bytes" in printed
    assert "set aside as incomplete-checkpoint-4" in printed
    assert "resuming from" in printed and "checkpoint-2" in printed
    assert metrics["steps"] == 4 and metrics["resumed"][0]["from"] == "checkpoint-2"
    assert ckpt.incomplete_reason(tmp_path / "out.checkpoints" / "checkpoint-4") is None  # saved again, complete


def test_checkpoints_of_an_earlier_run_need_resume_or_force(finished_run, tmp_path):
    path = copy_run(finished_run, tmp_path)
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(TuluError, match="holds checkpoints of an earlier run"):
        train(load_recipe(path), console=Console(file=io.StringIO()))
    assert ckpt.incomplete_reason(tmp_path / "out.checkpoints" / "checkpoint-4") is None  # untouched


@pytest.mark.slow
def test_resume_refuses_a_mixture_edited_since_the_checkpoints(tmp_path):
    # The recipe only names the mixture file: its content is what the checkpoints were trained on.
    write_jsonl(tmp_path / "a.jsonl", read_demo()[:12])
    write_jsonl(tmp_path / "b.jsonl", read_demo()[12:24])
    mixture = tmp_path / "mix.yaml"
    mixture.write_text("seed: 1\nsources:\n  - {name: a, path: a.jsonl}\n  - {name: b, path: b.jsonl}\n")
    path = write_recipe(tmp_path, max_steps=2, save_steps=1, data={"mixture": str(mixture), "max_seq_length": 128})
    train(load_recipe(path), console=Console(file=io.StringIO()))
    mixture.write_text("seed: 1\nsources:\n  - {name: a, path: a.jsonl}\n  - {name: b, path: b.jsonl, "
                       "max_examples: 3}\n")
    with pytest.raises(TuluError, match=r"--resume: .*mix\.yaml changed since the checkpoints were trained on it"):
        train(load_recipe(path), resume=True, force=True, console=Console(file=io.StringIO()))
    mixture.write_text("seed: 1\nsources:\n  - {name: a, path: a.jsonl}\n  - {name: b, path: b.jsonl}\n")
    # The same content again (comments and spacing aside) continues the run.
    buffer = io.StringIO()
    train(load_recipe(path, ["training.max_steps=3"]), resume=True, force=True, console=Console(file=buffer, width=200))
    assert "resuming from" in buffer.getvalue()


# ---- one run per output --------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from tulu_lite.train.checkpoints import run_lock
    from tulu_lite.recipe import load_recipe
    with run_lock(load_recipe(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_the_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, max_steps=2))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "recipe.yaml")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TuluError, match=rf"another tulu-lite run \(pid {holder.pid}\) is training into this "
                                            rf"output and out.checkpoints"):
            train(recipe, console=Console(file=io.StringIO()))
        assert (recipe.checkpoint_dir / ckpt.LOCK).is_file()  # the refused run did not remove the holder's lock
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel releases the flock
        holder.wait()
    assert (recipe.checkpoint_dir / ckpt.LOCK).is_file()  # left behind by the killed holder, but not held
    with ckpt.run_lock(recipe):
        assert (recipe.checkpoint_dir / ckpt.LOCK).read_text() == f"pid {os.getpid()}"
    assert not recipe.checkpoint_dir.exists()  # a run that left nothing leaves no folder
