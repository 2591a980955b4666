"""Training end to end on CPU: a tiny LLaMA with the real LLaMA tokenizer, plain LoRA and 4-bit QLoRA, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_runs import DEMO, StopAfter, tiny_cache, write_recipe  # noqa: F401
from transformers import TrainerCallback

from tulu_lite.errors import TuluError
from tulu_lite.recipe import load_recipe
from tulu_lite.train import train

ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "recipe.yaml",
                 "metrics.json", "loss.png", "base_model.json"]


class Snapshot(TrainerCallback):
    """Copies every parameter/buffer of the model when training starts and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def changed(self) -> set[str]:
        return {k for k in self.before if not torch.equal(self.before[k], self.after[k])}


def check_training(tmp_path: Path, recipe_path: Path, snapshot: Snapshot, result) -> dict:
    out = tmp_path / "out"
    assert result.output_dir == out
    for name in ADAPTER_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [entry["loss"] for entry in metrics["log_history"]]
    assert losses[-1] < losses[0] - 1.0, losses  # the loss visibly falls
    changed = snapshot.changed()
    assert changed and all("lora_" in key for key in changed), sorted(changed)
    # Every LoRA matrix moved (B starts at zero, so an untrained adapter would be a no-op).
    lora_keys = {key for key in snapshot.before if "lora_" in key}
    assert changed == lora_keys
    # The saved adapter is exactly the trained LoRA weights, and nothing else.
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("lora_" in key for key in saved)
    trained = {key.replace(".default", ""): value for key, value in snapshot.after.items() if "lora_" in key}
    for key, value in saved.items():
        assert torch.equal(value, trained[key]), key
    # The resolved recipe reloads to the same run.
    assert load_recipe(out / "recipe.yaml") == load_recipe(recipe_path)
    return metrics


@pytest.mark.slow
def test_lora_padding_free_token_budget_trains_only_lora(tmp_path):
    recipe_path = write_recipe(tmp_path, max_steps=16, max_tokens_per_batch=512)
    recipe = load_recipe(recipe_path)
    assert recipe.data.padding_free and recipe.quantization is None
    snapshot = Snapshot()
    result = train(recipe, callbacks=[snapshot])
    metrics = check_training(tmp_path, recipe_path, snapshot, result)
    assert metrics["steps"] == 16 and metrics["trained_tokens"] < metrics["tokens"]

    # The adapter loads with PEFT on a freshly rebuilt base and reproduces the trained model's behaviour.
    from peft import PeftModel

    from tulu_lite.model.loading import load_base_model
    from tulu_lite.model.tiny import weights_sha256

    reloaded = load_recipe(tmp_path / "out" / "recipe.yaml")
    base = load_base_model(reloaded.model, reloaded.quantization)
    record = json.loads((tmp_path / "out" / "base_model.json").read_text())
    assert weights_sha256(base.name_or_path) == record["weights_sha256"]
    model = PeftModel.from_pretrained(base, tmp_path / "out")
    ids = torch.tensor([[1, 529, 29989, 1792, 29989, 29958]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.allclose(adapted, plain)


@pytest.mark.slow
def test_qlora_4bit_padded_from_mixture(tmp_path):
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(yaml.safe_dump({"seed": 3, "sources": [{"path": str(DEMO), "max_examples": 80}]}))
    data = {"mixture": "mix.yaml", "max_seq_length": 128, "padding_free": False}
    recipe_path = write_recipe(tmp_path, quantized=True, data=data, max_steps=16, gradient_checkpointing=True)
    recipe = load_recipe(recipe_path)
    assert recipe.data.mixture == mixture.resolve() and recipe.training.gradient_checkpointing
    snapshot = Snapshot()
    result = train(recipe, callbacks=[snapshot])
    metrics = check_training(tmp_path, recipe_path, snapshot, result)
    assert metrics["examples"] == 80
    # The base really was 4-bit: its linear weights are packed uint8 and did not change.
    packed = [key for key, value in snapshot.before.items() if value.dtype == torch.uint8]
    assert any("q_proj" in key for key in packed)


@pytest.mark.slow
def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    common = {"max_steps": 8, "save_steps": 4, "learning_rate": 1e-3}
    straight_dir, crashed_dir = tmp_path / "straight", tmp_path / "crashed"
    straight_dir.mkdir()
    crashed_dir.mkdir()
    # Dropout on, so the restored RNG state matters too.
    lora = ["lora.dropout=0.1"]
    straight = load_recipe(write_recipe(straight_dir, **common), lora)
    train(straight)

    crashed = load_recipe(write_recipe(crashed_dir, **common), lora)
    with pytest.raises(KeyboardInterrupt):
        train(crashed, callbacks=[StopAfter(6)])
    assert not crashed.output_dir.exists()  # no half-written output
    assert (crashed.checkpoint_dir / "checkpoint-4" / "trainer_state.json").is_file()
    with pytest.raises(TuluError, match="--resume"):
        train(crashed)
    train(crashed, resume=True)

    expected = load_file(straight.output_dir / "adapter_model.safetensors")
    resumed = load_file(crashed.output_dir / "adapter_model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-5, atol=1e-6)
    steps = [entry["step"] for entry in json.loads((crashed.output_dir / "metrics.json").read_text())["log_history"]]
    assert steps == [2, 4, 6, 8]


def test_existing_output_is_refused_before_loading(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, max_steps=2), ["model.name_or_path=./no-such-model"])
    recipe.output_dir.mkdir()
    (recipe.output_dir / "adapter_config.json").write_text("{}")
    with pytest.raises(TuluError, match="already exists"):
        train(recipe)


def test_missing_data_file_is_one_clear_error(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, data={"train_files": ["nope.jsonl"]}))
    with pytest.raises(TuluError, match=r"data.train_files\[0\]: .*nope.jsonl: file not found"):
        train(recipe)


@pytest.mark.slow
def test_two_process_cpu_data_parallel(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m tulu_lite train` runs data-parallel (gloo on CPU)."""
    # With held-out data: each process evaluates its share of the batches and the sums are all-reduced.
    data = {"train_files": [str(DEMO)], "max_seq_length": 128, "eval_fraction": 0.1}
    recipe_path = write_recipe(tmp_path, data=data, max_steps=4, per_device_batch_size=4, eval_steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "tulu_lite", "train", str(recipe_path)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    # Each optimizer step took one micro-batch of 4 examples per process: an epoch of the 103 examples left after
    # holding out 11 is 13 steps.
    assert metrics["examples"] == 103
    assert metrics["log_history"][-1]["epoch"] == pytest.approx(4 / math.ceil(103 / (2 * 4)))
    assert [entry["step"] for entry in metrics["heldout"]["history"]] == [0, 2, 4]
    assert metrics["heldout"]["history"][-1]["loss"] < metrics["heldout"]["history"][0]["loss"]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_pickle_weights_are_refused_unless_the_recipe_opts_in(tmp_path, llama_tokenizer):
    from tulu_lite.model.loading import load_base_model
    from tulu_lite.model.tiny import build_tiny_llama
    from tulu_lite.recipe import ModelSettings

    model = build_tiny_llama(llama_tokenizer, hidden_size=32)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle: unpickling can run code
    with pytest.raises(TuluError, match="only pickle .bin weights found: set model.allow_pickle_weights"):
        load_base_model(ModelSettings(name_or_path=str(tmp_path)), None)
    loaded = load_base_model(ModelSettings(name_or_path=str(tmp_path), allow_pickle_weights=True), None)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert not any(param.requires_grad for param in loaded.parameters())  # the base is frozen
    with pytest.raises(TuluError, match="not a model directory"):
        load_base_model(ModelSettings(name_or_path=str(tmp_path.parent)), None)


@pytest.mark.slow
def test_cli_shows_no_library_bars_and_writes_a_model_card(tmp_path):
    """train, merge and eval as a user runs them: no transformers "Loading weights" or datasets "Generating train
    split" bar (a fresh datasets cache, so the split is generated), and a card naming base, data and recipe in the
    adapter and every checkpoint instead of PEFT's and TRL's empty templates."""
    recipe_path = write_recipe(tmp_path, quantized=True, max_steps=4, save_steps=2)
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets-cache")
    eval_data = Path(__file__).parent / "fixtures" / "eval"
    commands = [["train", str(recipe_path)], ["merge", "out", "-o", "merged"],
                ["eval", "merged", "--tasks", "gsm", "--data-dir", str(eval_data), "--limit", "2",
                 "--max-new-tokens", "8", "-o", "results"]]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "tulu_lite", *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        for noise in ("Loading weights", "Generating train split", "it/s]"):
            assert noise not in done.stdout + done.stderr, (command[0], noise)
    assert list((tmp_path / "datasets-cache").iterdir())  # the data did go through a fresh datasets cache
    out, checkpoints = tmp_path / "out", tmp_path / "out.checkpoints"
    card = (out / "README.md").read_text()
    assert "tiny-llama" in card and "recipe.yaml" in card and "train.jsonl" in card and "4 of 4 steps" in card
    assert "base_model:" not in card  # the tiny base is no hub model; PEFT wrote its local cache path there
    assert (checkpoints / "checkpoint-2" / "README.md").read_text().count("tiny-llama") == 1
    assert not (checkpoints / "README.md").exists()  # TRL's card ("a fine-tuned version of [None]")
    for folder in (out, checkpoints):
        for path in folder.rglob("*.md"):
            text = path.read_text()
            assert "[More Information Needed]" not in text and "[None]" not in text, path
