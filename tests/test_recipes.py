"""Every shipped recipe loads; the TÜLU v1 ones carry the paper's hyperparameters; the demo runs from the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tulu_lite.cli import app
from tulu_lite.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))
TULU = [path for path in SHIPPED if path.name.startswith("tulu_v1_")]


def test_the_expected_recipes_ship():
    names = {path.name for path in SHIPPED}
    assert {"demo.yaml", "tulu_v1_7b_qlora.yaml", "tulu_v1_13b_qlora.yaml", "tulu_v1_30b_qlora.yaml",
            "tulu_v1_65b_qlora.yaml", "tulu_v1_7b_qlora_human_mix.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_recipe_loads_and_header_gives_the_command(path):
    recipe = load_recipe(path)
    header = path.read_text().split("\nmodel:")[0]
    assert f"tulu-lite train recipes/{path.name}" in header
    assert recipe.output_dir.parent == RECIPES.parent / "runs"


@pytest.mark.parametrize("path", TULU, ids=lambda p: p.name)
def test_tulu_recipes_use_the_paper_hyperparameters(path):
    recipe = load_recipe(path)
    t = recipe.training
    assert recipe.quantization is not None and recipe.quantization.quant_type == "nf4"
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (64, 16, 0.1)
    assert len(recipe.lora.target_modules) == 7
    assert (t.epochs, t.learning_rate, t.lr_scheduler, t.warmup_ratio) == (2, 1e-4, "linear", 0.03)
    assert recipe.data.max_seq_length == 2048 and recipe.model.chat_template == "tulu"
    assert t.per_device_batch_size * t.gradient_accumulation_steps == 128
    header = path.read_text().split("\nmodel:")[0]
    stated = re.search(r"= (\d+) x (\d+) x 1 = 128 examples", header)
    assert stated and (int(stated[1]), int(stated[2])) == (t.per_device_batch_size, t.gradient_accumulation_steps)
    expected_mix = "tulu_v1_human_mix.yaml" if "human" in path.name else "tulu_v1_mix.yaml"
    assert recipe.data.mixture == RECIPES / "mixtures" / expected_mix


def test_demo_recipe_runs_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(RECIPES / "demo.yaml")
    assert recipe.model.is_tiny and recipe.quantization is not None
    assert all(item.path.is_file() for item in recipe.data.train_files)
    out = tmp_path / "demo-out"
    result = CliRunner().invoke(app, ["train", str(RECIPES / "demo.yaml"), "--set", "training.max_steps=4",
                                      "--set", "training.logging_steps=2", "--set", f"output_dir={out}"])
    assert result.exit_code == 0, result.output
    assert "loss" in result.output and "done" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert load_recipe(out / "recipe.yaml").training.max_steps == 4


def test_cli_reports_a_bad_recipe_in_red_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name_or_path: tiny-llama}\ndata: {train_files: [a.jsonl]}\noutput_dir: o\ntraning: {}\n")
    done = subprocess.run([sys.executable, "-m", "tulu_lite", "train", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "error:" in done.stderr and f"{bad}:4: traning: unknown key (did you mean 'training'?)" in done.stderr
    assert "Traceback" not in done.stderr


def test_dpo_recipes_carry_the_reference_numbers():
    demo = load_recipe(RECIPES / "demo-dpo.yaml")
    assert demo.stage == "dpo" and demo.model.is_tiny and demo.data.eval_fraction
    tulu2 = load_recipe(RECIPES / "tulu2_dpo_7b_qlora.yaml")
    t = tulu2.training
    assert (tulu2.lora.r, tulu2.lora.alpha, tulu2.lora.dropout) == (64, 16, 0.1)
    assert (t.learning_rate, t.warmup_ratio, t.epochs, tulu2.data.max_seq_length) == (1e-4, 0.03, 5, 1024)
    assert t.per_device_batch_size * t.gradient_accumulation_steps == 128
    assert (tulu2.dpo.beta, tulu2.dpo.loss_type, tulu2.dpo.reference) == (0.1, "sigmoid", "base")
    tulu3 = load_recipe(RECIPES / "tulu3_dpo_llama31_8b.yaml")
    assert (tulu3.dpo.loss_type, tulu3.dpo.beta, tulu3.training.epochs) == ("sigmoid_norm", 5.0, 1)
    assert tulu3.model.chat_template == "native" and "Llama-3.1-8B" in tulu3.model.name_or_path
    assert "STARTING POINT" in (RECIPES / "tulu3_dpo_llama31_8b.yaml").read_text().split("\nstage:")[0]
