"""Preference tuning end to end, through `train()` and the CLI: the demo learns its preference, the references
(an SFT adapter, precomputed and cached log-probs), SIGKILL and --resume, and SFT -> merge -> DPO -> merge.

The runs are tiny (a 32-wide LLaMA on a few demo pairs) except the demo itself, which runs once for the module.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from cli_cases import BadInput, check_bad_input, run_cli
from rich.console import Console
from safetensors.torch import load_file
from tiny_runs import tiny_cache, write_recipe  # noqa: F401  (keeps built tiny bases out of the user cache)

from tulu_lite.recipe import load_recipe
from tulu_lite.train import train

ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = ROOT / "recipes" / "demo-dpo.yaml"
DEMO_PAIRS = ROOT / "tulu_lite" / "assets" / "demo" / "preferences.jsonl"


def demo_pairs(count: int) -> list[dict]:
    """The first `count` bundled demo pairs."""
    return [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines()[:count]]


def write_pairs(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_dpo_recipe(folder: Path, *, pairs: Path, model: dict | None = None, dpo: dict | None = None,
                     lora: dict | None = None, name: str = "dpo.yaml", **training) -> Path:
    """A tiny DPO recipe in `folder` training on `pairs` into ``folder/dpo-out``."""
    recipe = {
        "stage": "dpo",
        "model": model or {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 32}},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, **(lora or {})},
        "data": {"train_files": [str(pairs)], "max_seq_length": 128, "padding_free": False},
        "training": {"learning_rate": 1e-2, "per_device_batch_size": 4, "gradient_checkpointing": False,
                     "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 100, "seed": 1, **training},
        "dpo": dpo or {},
        "output_dir": "dpo-out",
    }
    path = folder / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def losses(metrics: dict) -> list[float]:
    return [entry["loss"] for entry in metrics["log_history"] if "loss" in entry]


# ---- the demo: held-out reward accuracy from chance to >= 0.9 --------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """recipes/demo-dpo.yaml as shipped (only the output moved): its metrics.json."""
    out = tmp_path_factory.mktemp("demo-dpo") / "out"
    recipe = load_recipe(DEMO_RECIPE, [f"output_dir={out}"])
    train(recipe, console=quiet())
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_the_demo_learns_its_preference_on_heldout_pairs(demo_run):
    history = demo_run["heldout"]["history"]
    first, best = history[0], max(history, key=lambda entry: entry["reward_accuracy"])
    last = history[-1]
    # Step 0: policy = reference (its log-probs precomputed by the same model): every held-out pair ties.
    assert first["step"] == 0 and first["reward_accuracy"] == 0.5 and first["reward_margin"] == 0.0
    assert last["reward_accuracy"] >= 0.9 and best["reward_accuracy"] >= 0.9
    assert last["reward_margin"] > first["reward_margin"] + 1.0
    margins = [entry["reward_margin"] for entry in history]
    assert margins[len(margins) // 2] > margins[0] and margins[-1] >= margins[len(margins) // 2] * 0.9
    assert set(last["sources_reward_accuracy"]) == {"refusal", "shouting", "off-topic"}
    assert first["loss"] == pytest.approx(math.log(2)) and last["loss"] < 0.3
    assert all(last["sources_reward_accuracy"][source] >= 0.75 for source in ("refusal", "shouting", "off-topic"))
    assert demo_run["dropped"] == {}


@pytest.mark.slow
def test_the_demo_recipe_header_numbers_are_true(demo_run):
    """The header states pairs, held-out pairs and steps; the run must agree with it."""
    header = "".join(line for line in DEMO_RECIPE.read_text().splitlines() if line.startswith("#"))
    pairs = len(DEMO_PAIRS.read_text().splitlines())
    held = sum(source["examples"] for source in demo_run["heldout"]["sources"].values())
    assert f"{pairs} pairs - {held} held out = {demo_run['examples']}" in header
    assert f"= {demo_run['max_steps']} steps" in header


# ---- bad input through the CLI: one line naming the file and row, nothing written ---------------------------------


def bad_pair_setup(bad: dict | None):
    """`setup` for a BadInput: a good demo pair on line 1 of pairs.jsonl, `bad` on line 2 (None: the good pair made
    identical on both sides, alone), and a tiny DPO recipe on it."""

    def setup(tmp: Path) -> None:
        good = demo_pairs(1)[0]
        rows = [good, bad] if bad is not None else [{**good, "rejected": good["chosen"]}]
        write_pairs(tmp / "pairs.jsonl", rows)
        write_dpo_recipe(tmp, pairs=Path("pairs.jsonl"), max_steps=1)

    return setup


def _good() -> dict:
    return demo_pairs(1)[0]


def _other_question() -> dict:
    """The same replies to different questions."""
    good = _good()
    return {**good, "rejected": [*good["rejected"][:-2], {"role": "user", "content": "What is the capital of Peru?"},
                                 good["rejected"][-1]]}


BAD_PAIRS = [
    BadInput("differ before the last reply", ["train", "dpo.yaml"],
             r"pairs\.jsonl:2: chosen and rejected differ before the last assistant reply \(message \d: user ",
             setup=bad_pair_setup(_other_question())),
    # open-instruct would train on it (its gradient is zero); tulu-lite drops and counts it, and a file of nothing
    # else has no example to train on.
    BadInput("identical sides, dropped", ["train", "dpo.yaml"],
             r"data: no trainable example in .*pairs\.jsonl.*chosen and rejected are identical': 1",
             setup=bad_pair_setup(None)),
    BadInput("a side without an assistant reply", ["train", "dpo.yaml"],
             r"pairs\.jsonl:2: rejected: no assistant message \(nothing to train on\)",
             setup=bad_pair_setup({**_good(), "rejected": _good()["rejected"][:-1]})),
    BadInput("a side that is not a list", ["train", "dpo.yaml"],
             r"pairs\.jsonl:2: chosen must be a list of messages .*got dict",
             setup=bad_pair_setup({**_good(), "chosen": _good()["chosen"][-1]})),
    BadInput("a column missing", ["train", "dpo.yaml"],
             r"pairs\.jsonl:2: no 'rejected' key \(keys: chosen, dataset, id\)",
             setup=bad_pair_setup({key: value for key, value in _good().items() if key != "rejected"})),
]


@pytest.mark.parametrize("case", BAD_PAIRS, ids=str)
def test_bad_pairs_are_one_line_errors_and_nothing_is_written(case, tmp_path):
    check_bad_input(dataclasses.replace(case, timeout=600), tmp_path)  # a loaded machine starts slowly
    assert not (tmp_path / "dpo-out").exists() and not (tmp_path / "dpo-out.checkpoints").exists()


# ---- the references: an SFT adapter, and reference log-probs precomputed and cached -----------------------------


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory):
    """A few SFT steps on the demo chats (the same tiny base as `write_dpo_recipe`'s): the adapter folder."""
    root = tmp_path_factory.mktemp("sft")
    train(load_recipe(write_recipe(root, max_steps=3)), console=quiet())
    return root / "out"


@pytest.mark.slow
def test_reference_adapter_starts_from_the_sft_adapter_at_log_2(sft_adapter, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", demo_pairs(8))
    path = write_dpo_recipe(tmp_path, pairs=pairs, dpo={"reference": "adapter", "adapter": str(sft_adapter)},
                            max_steps=2)
    metrics = train(load_recipe(path), console=quiet()).metrics
    first = metrics["log_history"][0]
    # The policy is the SFT adapter and the reference its frozen copy: equal at the first step, so every pair's
    # reward is 0 and the sigmoid loss is -log sigmoid(0) = log 2.
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert losses(metrics)[-1] != pytest.approx(math.log(2), abs=1e-5)  # and then it moved
    # The SFT adapter is not the base (its B moved off zero), so this really starts somewhere else than `base`.
    sft = load_file(sft_adapter / "adapter_model.safetensors")
    assert any(value.abs().max() > 0 for key, value in sft.items() if "lora_B" in key)
    assert load_recipe(tmp_path / "dpo-out" / "recipe.yaml").dpo.adapter == sft_adapter


@pytest.mark.slow
def test_precomputed_reference_gives_the_live_losses_and_a_second_run_reads_the_cache(tmp_path, monkeypatch):
    import tulu_lite.train.reference as reference

    records = demo_pairs(12)
    records.append({**records[0], "id": "same", "rejected": records[0]["chosen"]})  # no preference: dropped
    pairs = write_pairs(tmp_path / "pairs.jsonl", records)
    path = write_dpo_recipe(tmp_path, pairs=pairs, max_steps=3)

    def run(name: str, precompute: bool) -> dict:
        overrides = [f"output_dir={tmp_path / name}", f"dpo.precompute_reference={str(precompute).lower()}"]
        return train(load_recipe(path, overrides), console=quiet()).metrics

    cache = Path(reference.reference_cache(load_recipe(path, ["dpo.precompute_reference=true"])).folder)
    earlier = set(cache.glob("*.safetensors"))  # the module's other runs (the demo) share the cache folder
    live = run("live", False)
    assert set(cache.glob("*.safetensors")) == earlier  # the live reference caches nothing
    first = run("first", True)
    assert len(set(cache.glob("*.safetensors")) - earlier) == 1
    assert losses(first) == pytest.approx(losses(live), rel=1e-5, abs=1e-6)
    assert live["dropped"] == first["dropped"] == {"chosen and rejected are identical": 1}

    def no_reference_pass(*args, **kwargs):
        raise AssertionError("the reference ran again instead of reading the cache")

    monkeypatch.setattr(reference, "compute_reference_logps", no_reference_pass)
    again = run("again", True)
    assert losses(again) == losses(first)


# ---- SIGKILL, then --resume -------------------------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from tulu_lite.recipe import load_recipe
    from tulu_lite.train import train

    class Kill(TrainerCallback):
        # No cleanup at all (a lost machine, the OOM killer): the checkpoint of an earlier step is all that is left.
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    train(load_recipe(sys.argv[1]), callbacks=[Kill()])
""")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_adapter(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", demo_pairs(24))
    common = {"max_steps": 6, "save_steps": 4, "logging_steps": 2}
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir()
    killed_dir.mkdir()
    # LoRA dropout on, so the restored RNG state matters too; the live reference runs in every step.
    straight = load_recipe(write_dpo_recipe(straight_dir, pairs=pairs, lora={"dropout": 0.1}, **common))
    train(straight, console=quiet())

    path = write_dpo_recipe(killed_dir, pairs=pairs, lora={"dropout": 0.1}, **common)
    killed = subprocess.run([sys.executable, "-c", KILLED, str(path), "5"], cwd=killed_dir, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    recipe = load_recipe(path)
    assert not recipe.output_dir.exists()
    assert (recipe.checkpoint_dir / "checkpoint-4" / "trainer_state.json").is_file()
    resumed = run_cli(["train", str(path), "--resume"], cwd=killed_dir, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "resuming from" in resumed.stdout

    expected = load_file(straight.output_dir / "adapter_model.safetensors")
    got = load_file(recipe.output_dir / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    metrics = json.loads((recipe.output_dir / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["log_history"]] == [2, 4, 6]
    assert losses(metrics) == pytest.approx(losses(json.loads((straight.output_dir / "metrics.json").read_text())),
                                            rel=1e-5)


# ---- SFT -> merge -> DPO on the merged model -> merge ----------------------------------------------------------


@pytest.mark.slow
def test_sft_merge_dpo_merge_verifies(sft_adapter, tmp_path):
    from tulu_lite.merge import merge

    merge(sft_adapter, tmp_path / "sft-merged", console=quiet())
    pairs = write_pairs(tmp_path / "pairs.jsonl", demo_pairs(8))
    path = write_dpo_recipe(tmp_path, pairs=pairs, model={"name_or_path": str(tmp_path / "sft-merged")}, max_steps=2)
    train(load_recipe(path), console=quiet())
    done = run_cli(["merge", str(tmp_path / "dpo-out"), "-o", str(tmp_path / "dpo-merged")], cwd=tmp_path,
                   timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    settings = json.loads((tmp_path / "dpo-merged" / "merge.json").read_text())
    assert settings["verification"]["passed"] is True
    assert settings["verification"]["merged"]["max_abs"] <= settings["verification"]["tolerance"]
    assert load_recipe(tmp_path / "dpo-merged" / "recipe.yaml").stage == "dpo"
    # The DPO adapter changed the merged SFT model.
    before = load_file(tmp_path / "sft-merged" / "model.safetensors")
    after = load_file(tmp_path / "dpo-merged" / "model.safetensors")
    changed = [key for key in before if "q_proj" in key and not torch.equal(before[key], after[key])]
    assert changed
