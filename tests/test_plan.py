"""`tulu-lite plan`: the memory formula checked against real models, and token counts against the encoder."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_cases import BadInput, check_bad_input, run_cli
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tulu_lite import cli
from tulu_lite.cli import app
from tulu_lite.plan import (
    data_stats,
    estimate_memory,
    lora_param_count,
    plan,
    shapes_from_config,
)
from tulu_lite.recipe import Recipe, load_recipe

DEMO = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "train.jsonl"


def recipe_for(**sections) -> Recipe:
    base = {"model": {"name_or_path": "tiny-llama"}, "data": {"train_files": [str(DEMO)], "max_seq_length": 128},
            "output_dir": "/tmp/unused"}
    return Recipe.model_validate({**base, **sections})


def test_lora_count_matches_peft_on_a_grouped_query_model():
    from tulu_lite.model.loading import add_lora

    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2)
    recipe = recipe_for(lora={"r": 4, "target_modules": ["q_proj", "k_proj", "v_proj", "down_proj"]})
    model = add_lora(LlamaForCausalLM(config), recipe.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_param_count(shapes_from_config(config), recipe) == trainable


LLAMA_7B = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32)


def qlora_7b(**training):
    """recipes/tulu_v1_7b_qlora.yaml's shape: nf4 + double quantization, r=64 on all 7 linears, dropout 0.1,
    4 x 2048 tokens per micro-batch, padding-free."""
    return recipe_for(quantization={"quant_type": "nf4", "double_quant": True},
                      data={"train_files": ["x"], "max_seq_length": 2048},
                      training={"per_device_batch_size": 4, **training}, lora={"r": 64, "dropout": 0.1})


def test_llama_7b_qlora_estimate_is_the_formula():
    """The 7B recipe, the formula written out: what PEFT, bitsandbytes, autocast, TRL's head and sdpa allocate."""
    h, i, kv, V, L, T, r = 4096, 11008, 4096, 32000, 32, 8192, 64
    c, s = 2, 4  # bf16 compute; fp32 hidden states (PEFT upcasts embeddings, norms; Linear4bit keeps the input dtype)
    p_lin = L * (2 * h * h + 2 * h * kv + 3 * h * i)
    p_oth = 2 * V * h + (2 * L + 1) * h
    p_lora = L * r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    weights = int(p_lin * (0.5 + 1 / 64 + 4 / (64 * 256))) + p_oth * 4
    lora = p_lora * 16 + p_lora * c  # fp32 weight, grad, 2 AdamW moments + autocast's bf16 copy
    head = T * h * (s + 4) + 4096 * (32768 + h) * c + V * h * c  # hidden, fp32 grad, tile + chunk, lm_head cast
    mask = T * T * (1 + c)  # boolean block-diagonal mask + SDPA's additive copy
    lora_inputs = 6 * h + i  # q, k, v, o, gate, up take h; down takes i
    layer = T * (s * (5 * h + 2 * kv + 4 * i) + c * (2 * h + kv) + lora_inputs * (c + 1))
    expected = weights + lora + head + mask + int(0.75 * 1024**3) + L * s * T * h + layer

    shapes = shapes_from_config(LLAMA_7B)
    assert shapes.linear_params + shapes.other_params == 6_738_415_616  # LLaMA-7B's parameter count
    memory = estimate_memory(shapes, qlora_7b())
    assert memory.lora_params == p_lora == 159_907_840  # QLoRA r=64 on all linear layers of LLaMA-7B
    assert memory.total_with_checkpointing == expected
    assert expected / 1024**3 == pytest.approx(15.70, abs=0.005)  # the figure in the recipe header and docs/training.md
    assert memory.total_without_checkpointing == expected - (L * s * T * h + layer) + L * layer
    rows = {name: size for name, size, _ in memory.rows}
    assert rows["attention mask (sdpa)"] == mask and rows["LM head (TRL chunked log-probs)"] == head
    # flash-attention has no mask to build
    flash = estimate_memory(shapes, qlora_7b(), attention="flash_attention_2")
    assert flash.total_with_checkpointing == expected - mask


def test_fsdp_divides_what_it_shards():
    """--gpus 2: 4-bit weights (stored in bf16, nothing upcast), LoRA state and the rest are halved; activations,
    head, mask are not; two gathered layers are added; the whole 4-bit base sits on each GPU while loading."""
    h, i, kv, V, L, T, r, n = 4096, 11008, 4096, 32000, 32, 8192, 64, 2
    c = s = m = 2
    p_lin = L * (2 * h * h + 2 * h * kv + 3 * h * i)
    p_oth = 2 * V * h + (2 * L + 1) * h
    p_lora = L * r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    constants = 1 / 64 + 4 / (64 * 256)
    weights = int(p_lin * 0.5) // n + int(p_lin * constants) + p_oth * m // n
    lora = p_lora * 16 // n
    gathered = 2 * int(p_lin // L * 0.5 + 2 * h * m + p_lora // L * 4)
    head = T * h * (s + 4) + 4096 * (32768 + h) * c  # lm_head already bf16: no cast copy
    mask = T * T * (1 + c)
    layer = T * (s * (5 * h + 2 * kv + 4 * i) + c * (2 * h + kv) + (6 * h + i) * (c + 1))
    training = weights + lora + gathered + head + mask + int(0.75 * 1024**3) + L * s * T * h + layer
    loading = int(p_lin * (0.5 + constants)) + p_oth * m + int(0.75 * 1024**3)

    memory = estimate_memory(shapes_from_config(LLAMA_7B), qlora_7b(), gpus=n)
    assert memory.gpus == n and memory.loading_peak == loading
    assert memory.total_with_checkpointing == max(training, loading) == training
    assert training < estimate_memory(shapes_from_config(LLAMA_7B), qlora_7b()).total_with_checkpointing


def test_4bit_weight_estimate_matches_a_quantized_model(tmp_path, monkeypatch, llama_tokenizer):
    """The weight rows equal what bitsandbytes actually allocates (packed weights + quantization constants)."""
    from tulu_lite.model.loading import load_base_model

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
    from tulu_lite.model.loading import load_recipe_tokenizer

    dataset, report = encode_dataset([str(DEMO)], load_recipe_tokenizer(recipe.model), "tulu", 128)
    assert result.data.examples == len(dataset) == 114
    assert result.data.tokens == sum(len(ids) for ids in dataset["input_ids"])
    assert result.data.trained_tokens == report.trained_tokens
    assert result.data.steps_per_epoch == math.ceil(math.ceil(114 / 8) / 2)
    assert result.data.total_steps == 3 * result.data.steps_per_epoch
    # on 3 GPUs each takes every third micro-batch (accelerate evens them out): ceil(ceil(15 / 3) / 2) steps
    three = data_stats(recipe, [len(ids) for ids in dataset["input_ids"]], report, gpus=3)
    assert three.steps_per_epoch == math.ceil(math.ceil(math.ceil(114 / 8) / 3) / 2) == 3



def test_plan_encodes_the_data_without_importing_the_trainer(tmp_path):
    """`tulu-lite plan` needs `tulu_lite.train.data` only: the SFT trainer (and TRL, seconds to import) stays out."""
    script = (
        "import sys\n"
        "from tulu_lite.plan import plan\n"
        "from tulu_lite.recipe import Recipe\n"
        f"recipe = Recipe.model_validate({{'model': {{'name_or_path': 'tiny-llama'}}, 'output_dir': 'unused', "
        f"'data': {{'train_files': [{str(DEMO)!r}], 'max_seq_length': 128}}}})\n"
        "assert plan(recipe).data.examples == 114\n"
        "print(sorted(name for name in ('tulu_lite.train.trainer', 'trl') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TULU_LITE_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

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


def test_plan_for_several_gpus_is_fsdp(tmp_path, monkeypatch):
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name_or_path": "tiny-llama"}, "quantization": {"quant_type": "nf4"},
                                    "data": {"train_files": [str(DEMO)], "max_seq_length": 128}, "output_dir": "o"}))
    monkeypatch.setattr(cli.console, "_width", 200)
    result = CliRunner().invoke(app, ["plan", str(path), "--skip-data", "--gpus", "2"])
    assert result.exit_code == 0, result.output
    for text in ("FSDP over 2 GPUs", "x 2 GPUs = 2 examples", "peak while loading", "FSDP: 2 gathered decoder layers",
                 "attention sdpa"):
        assert text in result.output


BAD_INPUT = [
    BadInput("hub model offline", ["plan", "{tmp}/r.yaml", "--skip-data"],
             r"^error: model\.name_or_path: tulu-lite-tests/absent-model: not in the local Hugging Face cache and "
             r"offline mode is on \(HF_HUB_OFFLINE=1\); download it where there is network",
             setup=lambda tmp: (tmp / "r.yaml").write_text(yaml.safe_dump(
                 {"model": {"name_or_path": "tulu-lite-tests/absent-model"}, "data": {"train_files": [str(DEMO)]},
                  "output_dir": "o"}))),
    BadInput("no-gpus", ["plan", "{tmp}/r.yaml", "--skip-data", "--gpus", "0"], r"--gpus: expected a positive",
             setup=lambda tmp: (tmp / "r.yaml").write_text(yaml.safe_dump(
                 {"model": {"name_or_path": "tiny-llama"}, "data": {"train_files": [str(DEMO)]}, "output_dir": "o"}))),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=str)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_plan_estimates_for_the_longest_example_not_a_huge_max_seq_length(tmp_path):
    """max_seq_length 1e9 on data whose longest example is a few dozen tokens: the estimate is for that length."""
    lines = DEMO.read_text(encoding="utf-8").splitlines(keepends=True)[:8]
    (tmp_path / "d.jsonl").write_text("".join(lines), encoding="utf-8")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "model": {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 16, "num_layers": 1}},
        "data": {"train_files": ["d.jsonl"], "max_seq_length": 1_000_000_000},
        "training": {"per_device_batch_size": 2}, "output_dir": "o"}))
    done = run_cli(["plan", "r.yaml"], tmp_path, env={"TULU_LITE_CACHE": str(tmp_path / "cache"), "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    longest = int(re.search(r"mean / max tokens per example\s*│\s*[\d,]+ / ([\d,]+)", done.stdout).group(1))
    assert longest < 200
    assert (f"note: data.max_seq_length is 1,000,000,000 but the longest example is {longest} tokens: the estimate "
            f"is for batches of that length") in done.stdout
    assert f"({2 * longest} tokens per micro-batch" in done.stdout
    totals = re.findall(r"total with\S* ?\S* *│ *([\d.]+) (GiB|MiB)", done.stdout)
    assert totals and all(unit == "MiB" or float(size) < 2 for size, unit in totals), totals


def test_plan_on_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(tmp_path):
    """Not offline, but nothing answers: one line at once, not five "Retrying in 8s" lines first."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": "tulu-lite-tests/absent-model"},
                                                     "data": {"train_files": ["d.jsonl"]}, "output_dir": "o"}))
    env = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": "", "https_proxy": "", "ALL_PROXY": "", "all_proxy": ""}
    done = run_cli(["plan", "r.yaml", "--skip-data"], tmp_path, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Retrying" not in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(
        r"model\.name_or_path: tulu-lite-tests/absent-model: not in the local Hugging Face cache and the hub can't be "
        r"reached \(127\.0\.0\.1: connection refused\); download it where there is network", errors[0]), errors
