"""Recipe loading: typed defaults, path resolution, overrides, and every problem reported at once with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulu_lite.errors import TuluError
from tulu_lite.recipe import ALL_LINEAR, Recipe, load_recipe, save_recipe

MINIMAL = """\
model:
  name_or_path: tiny-llama
data:
  train_files: [data/train.jsonl]
output_dir: runs/demo
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / "recipes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(TuluError) as info:
        load_recipe(path, overrides)
    return str(info.value).splitlines()


def test_minimal_recipe_gets_paper_defaults_and_absolute_paths(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.quantization is None
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (64, 16, 0.1)
    assert recipe.lora.target_modules == ALL_LINEAR
    assert (recipe.training.learning_rate, recipe.training.epochs, recipe.training.warmup_ratio) == (1e-4, 2, 0.03)
    assert recipe.training.lr_scheduler == "linear" and recipe.training.report_to == "none"
    assert recipe.data.max_seq_length == 2048 and recipe.data.padding_free
    assert not recipe.model.trust_remote_code and not recipe.model.allow_pickle_weights
    # Relative to the recipe file, not to the current directory.
    assert [item.path for item in recipe.data.train_files] == [tmp_path / "recipes" / "data" / "train.jsonl"]
    assert recipe.output_dir == tmp_path / "recipes" / "runs" / "demo"
    assert recipe.checkpoint_dir == tmp_path / "recipes" / "runs" / "demo.checkpoints"
    assert recipe.model.name_or_path == "tiny-llama"
    assert recipe.model.tokenizer_path.endswith("assets/tokenizers/llama")


def test_hub_ids_stay_and_local_model_dirs_resolve(tmp_path):
    text = MINIMAL.replace("tiny-llama", "huggyllama/llama-7b")
    assert load_recipe(write(tmp_path, text)).model.name_or_path == "huggyllama/llama-7b"
    text = MINIMAL.replace("tiny-llama", "../models/base")
    assert load_recipe(write(tmp_path, text)).model.name_or_path == str(tmp_path / "models" / "base")


def test_every_problem_is_listed_with_its_line_and_a_suggestion(tmp_path):
    path = write(tmp_path, """\
model:
  name_or_path: tiny-llama
  dtyp: float32
quantization:
  quant_type: nf5
lora:
  r: many
data:
  train_files: [a.jsonl]
training:
  lerning_rate: 1e-4
  epochs: -1
warmup_ratio: 0.1
output_dir: out
""")
    lines = problems(path)
    assert lines[0] == f"{path}: 6 problems:" and all(line.startswith(f"  {path}:") for line in lines[1:])
    body = "\n".join(lines[1:])
    assert f"{path}:3: model.dtyp: unknown key (did you mean 'model.dtype'?)" in body
    assert f"{path}:5: quantization.quant_type: input should be 'nf4' or 'fp4', got 'nf5'" in body
    assert f"{path}:7: lora.r:" in body and "'many'" in body
    assert f"{path}:11: training.lerning_rate: unknown key (did you mean 'training.learning_rate'?)" in body
    assert f"{path}:12: training.epochs: input should be greater than 0, got -1" in body
    # A key in the wrong section points at the section that has it.
    assert f"{path}:13: warmup_ratio: unknown key (did you mean 'training.warmup_ratio'?)" in body


def test_one_problem_is_one_line(tmp_path):
    path = write(tmp_path, MINIMAL.replace("output_dir: runs/demo\n", ""))
    assert problems(path) == [f"{path}: output_dir: required key is missing"]


def test_overrides_are_yaml_values_validated_the_same_way(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["training.learning_rate=3e-4", "lora.target_modules=[q_proj, v_proj]",
                                "quantization.quant_type=fp4", "training.max_steps=5", "output_dir=elsewhere"])
    assert recipe.training.learning_rate == 3e-4
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.quantization is not None and recipe.quantization.quant_type == "fp4"
    assert recipe.training.max_steps == 5
    assert recipe.output_dir == Path.cwd() / "elsewhere"  # --set paths are relative to where you run
    lines = problems(path, ["training.seed=abc", "training.lr=1", "nonsense"])
    body = "\n".join(lines)
    assert "--set training.seed: input should be a valid integer" in body
    assert "--set training.lr: unknown key" in body
    assert "--set nonsense: expected KEY=VALUE" in body


def test_data_needs_exactly_one_source_and_budget_needs_padding_free(tmp_path):
    both = MINIMAL.replace("  train_files: [data/train.jsonl]\n", "  train_files: [a.jsonl]\n  mixture: mix.yaml\n")
    assert "give exactly one of data.train_files or data.mixture" in problems(write(tmp_path, both))[0]
    path = write(tmp_path, MINIMAL)
    [line] = problems(path, ["data.padding_free=false", "training.max_tokens_per_batch=4096"])
    assert "max_tokens_per_batch needs data.padding_free: true" in line


def test_yaml_errors_and_unsafe_tags_are_refused(tmp_path):
    broken = write(tmp_path, "model: {name_or_path: tiny-llama\ndata: [\n", "broken.yaml")
    assert "not valid YAML" in problems(broken)[0] and f"{broken}:" in problems(broken)[0]
    unsafe = write(tmp_path, MINIMAL + "x: !!python/object/apply:os.system ['echo hacked']\n", "unsafe.yaml")
    assert "not valid YAML" in problems(unsafe)[0]
    duplicate = write(tmp_path, MINIMAL + "output_dir: again\n", "dup.yaml")
    assert any("output_dir: duplicate key" in line for line in problems(duplicate))
    with pytest.raises(TuluError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_saved_recipe_reloads_identically(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), ["quantization.quant_type=nf4", "training.max_steps=3"])
    save_recipe(recipe, tmp_path / "out" / "recipe.yaml")
    again = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert again == recipe
    assert isinstance(again, Recipe)
