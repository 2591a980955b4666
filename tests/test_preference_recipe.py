"""The recipe's preference stage: `stage: dpo` and its `dpo` section (DpoSettings), defaults and one-line problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulu_lite.errors import TuluError
from tulu_lite.recipe import DPO_LOSSES, load_recipe, save_recipe

DPO = """\
stage: dpo
model:
  name_or_path: tiny-llama
data:
  train_files: [data/pairs.jsonl]
  padding_free: false
output_dir: runs/dpo
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipes" / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problem(path: Path, overrides=()) -> str:
    with pytest.raises(TuluError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_an_sft_recipe_has_no_dpo_section(tmp_path):
    recipe = load_recipe(write(tmp_path, DPO.replace("stage: dpo\n", "")))
    assert recipe.stage == "sft" and recipe.dpo is None


def test_stage_dpo_gets_the_reference_defaults_and_round_trips(tmp_path):
    recipe = load_recipe(write(tmp_path, DPO))
    dpo = recipe.dpo
    assert (dpo.beta, dpo.loss_type, dpo.reference, dpo.adapter, dpo.precompute_reference) == (
        0.1, "sigmoid", "base", None, False)
    assert dpo.loss_types == ["sigmoid"] and not dpo.length_normalised
    save_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == recipe


def test_the_sft_adapter_path_is_relative_to_the_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path, DPO + "dpo: {reference: adapter, adapter: ../runs/sft}\n"))
    assert recipe.dpo.adapter == tmp_path / "runs" / "sft"
    save_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").dpo.adapter == tmp_path / "runs" / "sft"


def test_every_trl_loss_and_combinations(tmp_path):
    path = write(tmp_path, DPO)
    for name in DPO_LOSSES:
        extra = ["dpo.label_smoothing=0.001"] if name == "exo_pair" else []
        assert load_recipe(path, [f"dpo.loss_type={name}", *extra]).dpo.loss_types == [name]
    mpo = load_recipe(path, ["dpo.loss_type=[sigmoid, bco_pair, sft]", "dpo.loss_weights=[0.8, 0.2, 1.0]"]).dpo
    assert mpo.loss_types == ["sigmoid", "bco_pair", "sft"] and mpo.loss_weights == [0.8, 0.2, 1.0]
    assert load_recipe(path, ["dpo.loss_type=sigmoid_norm", "dpo.beta=5"]).dpo.length_normalised


@pytest.mark.parametrize("overrides, message", [
    (["stage=sft"], "a dpo section needs stage: dpo"),
    (["data.padding_free=true"], "stage dpo needs data.padding_free: false"),
    (["training.max_tokens_per_batch=4096"], "training.max_tokens_per_batch is not available with stage: dpo"),
    (["dpo.reference=adapter"], "recipe.yaml:8: dpo: reference: adapter needs dpo.adapter"),
    (["dpo.adapter=runs/sft"], "dpo.adapter is only used with reference: adapter"),
    (["dpo.loss_type=simpo"], "--set dpo.loss_type: unknown loss 'simpo' (TRL's DPOTrainer offers sigmoid, "),
    (["dpo.loss_type=[sigmoid, ipo]", "dpo.loss_weights=[1]"], "dpo.loss_weights: 1 weights for 2 loss types"),
    (["dpo.loss_type=[ipo, ipo]"], "give each loss at most once"),
    (["dpo.loss_type=exo_pair"], "loss_type exo_pair needs dpo.label_smoothing > 0"),
    (["dpo.beta=0"], "--set dpo.beta: input should be greater than 0, got 0"),
    (["dpo.label_smoothing=0.5"], "--set dpo.label_smoothing: input should be less than 0.5"),
    (["dpo.refrence=base"], "--set dpo.refrence: unknown key (did you mean 'dpo.reference'?)"),
])
def test_problems_are_one_line_naming_the_key(tmp_path, overrides, message):
    path = write(tmp_path, DPO + "dpo: {beta: 0.1}\n")
    text = problem(path, overrides)
    assert message in text and "\n" not in text, text


def test_a_dpo_section_in_an_sft_recipe_names_its_line(tmp_path):
    path = write(tmp_path, DPO.replace("stage: dpo\n", "") + "dpo:\n  beta: 0.2\n")
    assert problem(path) == f"{path}:7: dpo: a dpo section needs stage: dpo"
    path = write(tmp_path, DPO.replace("padding_free: false", "padding_free: true"))
    assert problem(path).startswith(f"{path}:4: data: stage dpo needs data.padding_free: false")
