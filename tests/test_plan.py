"""`tulu-lite plan`: the memory formula checked against real models, and token counts against the encoder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tulu_lite import cli
from tulu_lite.cli import app
from tulu_lite.config import Recipe, load_recipe
from tulu_lite.plan import estimate_memory, lora_param_count, plan, shapes_from_config

DEMO = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "train.jsonl"


def recipe_for(**sections) -> Recipe:
    base = {"model": {"name_or_path": "tiny-llama"}, "data": {"train_files": [str(DEMO)], "max_seq_length": 128},
            "output_dir": "/tmp/unused"}
    return Recipe.model_validate({**base, **sections})


def test_lora_count_matches_peft_on_a_grouped_query_model():
    from tulu_lite.model import add_lora

    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2)
    recipe = recipe_for(lora={"r": 4, "target_modules": ["q_proj", "k_proj", "v_proj", "down_proj"]})
    model = add_lora(LlamaForCausalLM(config), recipe.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_param_count(shapes_from_config(config), recipe) == trainable


def test_llama_7b_figures():
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32)
    recipe = recipe_for(quantization={"quant_type": "nf4", "double_quant": True},
                        data={"train_files": ["x"], "max_seq_length": 2048},
                        training={"per_device_batch_size": 1}, lora={"r": 64})
    shapes = shapes_from_config(config)
    assert shapes.linear_params + shapes.other_params == 6_738_415_616  # LLaMA-7B's parameter count
    memory = estimate_memory(shapes, recipe)
    assert memory.lora_params == 159_907_840  # QLoRA r=64 on all linear layers of LLaMA-7B
    rows = {name: size for name, size, _ in memory.rows}
    assert rows["base weights, 4-bit nf4"] == int(6_476_005_376 * (0.5 + 1 / 64 + 4 / (64 * 256)))
    assert memory.total_with_checkpointing < memory.total_without_checkpointing
    longer = estimate_memory(shapes, recipe_for(**{**recipe.model_dump(), "data": {"train_files": ["x"],
                                                                                     "max_seq_length": 4096}}))
    grown = longer.total_with_checkpointing - memory.total_with_checkpointing
    assert grown == rows["activations, checkpointing"] + rows["LM head (chunked log-probs)"]  # linear in tokens


def test_4bit_weight_estimate_matches_a_quantized_model(tmp_path, monkeypatch, llama_tokenizer):
    """The weight rows equal what bitsandbytes actually allocates (packed weights + quantization constants)."""
    from tulu_lite.model import load_base_model

    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    recipe = recipe_for(model={"name_or_path": "tiny-llama", "tiny": {"hidden_size": 128}},
                        quantization={"quant_type": "nf4", "double_quant": True})
    model = load_base_model(recipe.model, recipe.quantization)
    packed = other = 0
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.dtype == torch.uint8:
                state = param.quant_state
                packed += param.numel() + state.absmax.numel() * state.absmax.element_size()
                # (state2.code, a 1 KiB codebook per layer, is left out: 0.2 MiB for all of LLaMA-7B)
                packed += state.state2.absmax.numel() * state.state2.absmax.element_size()
            else:
                other += param.numel() * param.element_size()
    shapes = shapes_from_config(model.config)
    rows = {name: size for name, size, _ in estimate_memory(shapes, recipe).rows}
    assert rows["embeddings, lm_head, norms (fp32)"] == other
    assert rows["base weights, 4-bit nf4"] == pytest.approx(packed, rel=0.005)


def test_plan_counts_tokens_like_the_encoder(monkeypatch, tmp_path):
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    recipe = recipe_for(training={"per_device_batch_size": 8, "gradient_accumulation_steps": 2, "epochs": 3})
    result = plan(recipe)
    from tulu_lite.data.encode import encode_dataset
    from tulu_lite.model import load_recipe_tokenizer

    dataset, report = encode_dataset([str(DEMO)], load_recipe_tokenizer(recipe.model), "tulu", 128)
    assert result.data.examples == len(dataset) == 114
    assert result.data.tokens == sum(len(ids) for ids in dataset["input_ids"])
    assert result.data.trained_tokens == report.trained_tokens
    assert result.data.steps_per_epoch == math.ceil(math.ceil(114 / 8) / 2)
    assert result.data.total_steps == 3 * result.data.steps_per_epoch


def test_plan_command_prints_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name_or_path": "tiny-llama"}, "quantization": {"quant_type": "nf4"},
                                    "data": {"train_files": [str(DEMO)], "max_seq_length": 128}, "output_dir": "o"}))
    # The CLI's console reads the terminal width once, at import: widen it so no row wraps.
    monkeypatch.setattr(cli.console, "_width", 200)
    result = CliRunner().invoke(app, ["plan", str(path), "--set", "training.per_device_batch_size=4"])
    assert result.exit_code == 0, result.output
    for text in ("examples (dropped)", "114 (0)", "base weights, 4-bit nf4", "total with gradient checkpointing",
                 "4 examples per micro-batch"):
        assert text in result.output
    assert load_recipe(path).quantization is not None
