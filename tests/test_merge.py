"""`tulu-lite merge`: LoRA and QLoRA adapters trained for a few steps on CPU merge, reload, generate and match.

The adapters come from real `tulu_lite.train` runs on the bundled demo conversations (tiny LLaMA, real LLaMA
tokenizer). Every comparison here is recomputed independently of merge's own verification: the reference is the
adapter model in training mode (dropout 0), i.e. the very forward pass the trainer ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tokenizer_dir
from typer.testing import CliRunner

from tulu_lite.errors import TuluError

DEMO = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "train.jsonl"

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant.  "},
        {"role": "user", "content": "  What does a cat say?\n"},
        {"role": "assistant", "content": "A cat says meow."},
        {"role": "user", "content": "And a dog?"},
        {"role": "assistant", "content": "\nA dog says woof.\n\n"},
        {"role": "user", "content": "Opposite of hot? Answer in one word, with ünïcödé."},
        {"role": "assistant", "content": "Cold."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "List three colours:\n- one\n- two"},
        {"role": "assistant", "content": "- red\n- green\n- blue"},
    ],
]
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Which color is a plum?"}, {"role": "assistant", "content": "A plum is purple."},
     {"role": "user", "content": "And a banana?"}],
]


# ---- fixtures: two real training runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A module-wide working dir; the tiny-llama cache lives inside it so tests never touch ~/.cache."""
    path = tmp_path_factory.mktemp("merge")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TULU_LITE_CACHE", str(path / "cache"))
        yield path


def _train(workdir: Path, name: str, quantize: bool) -> Path:
    from tulu_lite.recipe import load_recipe
    from tulu_lite.train import train

    data = workdir / "data.jsonl"
    if not data.exists():
        data.write_text("".join(DEMO.read_text(encoding="utf-8").splitlines(keepends=True)[:16]), encoding="utf-8")
    recipe = {
        "model": {"name_or_path": "tiny-llama", "chat_template": "tulu"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train_files": [str(data)], "max_seq_length": 96},
        "training": {"max_steps": 4, "learning_rate": 1e-2, "per_device_batch_size": 4, "logging_steps": 1,
                     "warmup_ratio": 0.0, "gradient_checkpointing": False},
        "output_dir": str(workdir / name),
    }
    if quantize:
        recipe["quantization"] = {"quant_type": "nf4", "double_quant": True}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train(load_recipe(path))
    return workdir / name


@pytest.fixture(scope="module")
def qlora_adapter(workdir):
    return _train(workdir, "qlora-adapter", quantize=True)


@pytest.fixture(scope="module")
def lora_adapter(workdir):
    return _train(workdir, "lora-adapter", quantize=False)


@pytest.fixture(scope="module")
def qlora_merged(workdir, qlora_adapter):
    """The QLoRA adapter merged through the CLI (its printed output is kept for the CLI test)."""
    from tulu_lite.cli import app

    out = workdir / "qlora-merged"
    result = CliRunner().invoke(app, ["merge", str(qlora_adapter), "-o", str(out)], terminal_width=160)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def lora_merged(workdir, lora_adapter):
    from tulu_lite.merge import merge

    return merge(lora_adapter, workdir / "lora-merged")


# ---- helpers ----------------------------------------------------------------------------------------------------


def _prompt_ids(tokenizer) -> list[torch.Tensor]:
    from tulu_lite.data.chat_format import generation_prompt

    return [torch.tensor([tokenizer(generation_prompt(m, tokenizer, "tulu")).input_ids]) for m in PROMPTS]


@torch.no_grad()
def _logits(model, prompts) -> torch.Tensor:
    return torch.cat([model(input_ids=ids).logits[0].float() for ids in prompts])


def _adapter_model_as_trained(adapter: Path):
    """Base loaded by the training code + the saved adapter, in train mode: exactly the trainer's forward pass."""
    from peft import PeftModel

    from tulu_lite.model.loading import load_base_model
    from tulu_lite.recipe import load_recipe

    recipe = load_recipe(adapter / "recipe.yaml")
    assert recipe.lora.dropout == 0.0  # so train mode is deterministic
    base = load_base_model(recipe.model, recipe.quantization)
    return PeftModel.from_pretrained(base, str(adapter)).train()


def _naive_merge(adapter: Path):
    """What several tools do for QLoRA: fold the adapter into the original, never-quantized weights."""
    from peft import PeftModel

    from tulu_lite.model.loading import load_base_model
    from tulu_lite.recipe import load_recipe

    recipe = load_recipe(adapter / "recipe.yaml")
    base = load_base_model(recipe.model, None)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


def _reload(out: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)


# ---- QLoRA: the correct merge, and why it matters ---------------------------------------------------------------


@pytest.mark.slow
def test_qlora_merge_matches_the_adapter_model_and_beats_the_naive_merge(qlora_merged, qlora_adapter):
    out, _ = qlora_merged
    merged, tokenizer = _reload(out)
    prompts = _prompt_ids(tokenizer)
    reference = _logits(_adapter_model_as_trained(qlora_adapter), prompts)
    correct = (_logits(merged, prompts) - reference).abs().max().item()
    naive = (_logits(_naive_merge(qlora_adapter), prompts) - reference).abs().max().item()
    scale = reference.abs().max().item()
    assert correct <= 1e-4 * scale, (correct, scale)
    assert naive > 1000 * correct and naive > 0.01 * scale, (naive, correct)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert all(param.dtype == torch.float32 for param in merged.parameters())


@pytest.mark.slow
def test_qlora_merge_keeps_the_never_quantized_weights(qlora_merged, qlora_adapter):
    """Embeddings, norms and lm_head are the original weights; only the 4-bit linears were dequantized + merged."""
    from tulu_lite.model.loading import load_base_model
    from tulu_lite.recipe import load_recipe

    out, _ = qlora_merged
    merged, _ = _reload(out)
    original = load_base_model(load_recipe(qlora_adapter / "recipe.yaml").model, None).state_dict()
    for name, tensor in merged.state_dict().items():
        quantized = name.endswith("_proj.weight")
        assert torch.equal(tensor, original[name]) != quantized, name


@pytest.mark.slow
def test_qlora_merge_reports_its_verification(qlora_merged):
    out, printed = qlora_merged
    settings = json.loads((out / "merge.json").read_text())
    verification = settings["verification"]
    assert settings["method"].startswith("qlora") and settings["dtype"] == "float32"
    assert settings["quantization"]["quant_type"] == "nf4" and settings["quantization"]["double_quant"] is True
    assert verification["passed"] is True
    assert verification["merged"]["max_abs"] <= verification["tolerance"]
    assert verification["naive"]["max_abs"] > 1000 * verification["merged"]["max_abs"]
    assert verification["merged"]["top1_agreement"] == 1.0
    # the CLI prints both figures and the tolerance
    assert "tolerance" in printed and "naive" in printed and "ok" in printed
    assert f"{verification['tolerance']:.3g}" in printed and f"{verification['naive']['max_abs']:.3g}" in printed


@pytest.mark.slow
def test_bfloat16_qlora_merge_the_gpu_default(workdir, qlora_adapter):
    """bf16 (the default on a GPU) rounds every weight: still within its tolerance and far closer than naive."""
    from transformers import AutoModelForCausalLM

    from tulu_lite.merge import merge

    result = merge(qlora_adapter, workdir / "qlora-bf16", dtype="bfloat16")
    verification = result.verification
    assert result.dtype == "bfloat16" and verification.passed
    assert verification.naive.mean_abs > 10 * verification.merged.mean_abs
    assert verification.naive.max_abs > 5 * verification.merged.max_abs
    reloaded = AutoModelForCausalLM.from_pretrained(result.out_dir)
    assert all(param.dtype == torch.bfloat16 for param in reloaded.parameters())


@pytest.mark.slow
def test_verification_catches_a_naive_merge_and_writes_nothing(workdir, qlora_adapter, monkeypatch):
    """If the dequantized weights were swapped for the original ones (the naive merge), merge must refuse."""
    import tulu_lite.merge as merge_module
    import tulu_lite.merge.weights as weights
    from tulu_lite.merge.adapter import read_adapter_dir

    real_dequantize = weights.dequantize_4bit_layers

    def dequantize_then_restore_original(model, dtype, device):
        count = real_dequantize(model, dtype, device)
        original = weights.load_full_base(read_adapter_dir(qlora_adapter).recipe.model, dtype, device)
        model.load_state_dict(original.state_dict())
        return count

    monkeypatch.setattr(weights, "dequantize_4bit_layers", dequantize_then_restore_original)
    out = workdir / "naive-refused"
    with pytest.raises(TuluError, match="verification failed.*nothing was written"):
        merge_module.merge(qlora_adapter, out)
    assert not out.exists()
    assert not list(workdir.glob(".naive-refused*"))


# ---- plain LoRA, the checkpoint layout, reloading and generating ------------------------------------------------


@pytest.mark.slow
def test_lora_merge_reloads_generates_and_matches(lora_merged, lora_adapter):
    assert lora_merged.method == "lora" and lora_merged.verification.naive is None
    assert lora_merged.verification.passed
    merged, tokenizer = _reload(lora_merged.out_dir)
    prompts = _prompt_ids(tokenizer)
    reference = _logits(_adapter_model_as_trained(lora_adapter), prompts)
    assert (_logits(merged, prompts) - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()

    inputs = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    output = merged.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert merged.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("</s>")


@pytest.mark.slow
def test_release_layout_recipe_and_model_card(lora_merged, lora_adapter):
    out = lora_merged.out_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "recipe.yaml",
                 "merge.json", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) and not (out / "adapter_config.json").exists()
    assert (out / "recipe.yaml").read_text() == (lora_adapter / "recipe.yaml").read_text()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] == 0  # </s> ends a tulu turn; pad = unk
    card = (out / "README.md").read_text()
    metrics = json.loads((lora_adapter / "metrics.json").read_text())
    assert "`tiny-llama`" in card and "`data.jsonl`" in card
    assert "| lora.r | 8 |" in card and "| training.learning_rate | 0.01 |" in card
    assert f"| final_loss | {metrics['final_loss']:.4g} |" in card and f"| steps | {metrics['steps']} |" in card
    assert "max |diff|" in card


@pytest.mark.slow
def test_large_checkpoints_are_sharded_and_reload_identically(workdir, lora_adapter, lora_merged):
    from tulu_lite.merge import merge

    out = workdir / "lora-sharded"
    result = merge(lora_adapter, out, verify=False, max_shard_size="5MB")
    assert result.verification is None
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (out / "model.safetensors.index.json").is_file()
    sharded, _ = _reload(out)
    whole, _ = _reload(lora_merged.out_dir)
    whole_state = whole.state_dict()
    for name, tensor in sharded.state_dict().items():
        assert torch.equal(tensor, whole_state[name]), name
    assert "Skipped (`--no-verify`)" in (out / "README.md").read_text()


# ---- chat template and end of turn ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["system-3-turns", "2-turns-lists"])
def test_saved_chat_template_reproduces_the_training_text(lora_merged, llama_tokenizer, messages):
    """The released tokenizer + template give the training text and ids (those of the tokenizer training used)."""
    from transformers import AutoTokenizer

    from tulu_lite.data.chat_format import generation_prompt, render_tulu
    from tulu_lite.data.encode import encode

    released = AutoTokenizer.from_pretrained(lora_merged.out_dir)
    bos, eos = released.bos_token, released.eos_token
    training_ids = encode(messages, llama_tokenizer, "tulu")["input_ids"]
    assert released.apply_chat_template(messages, tokenize=False) == bos + render_tulu(messages, eos)
    assert released.apply_chat_template(messages)["input_ids"] == training_ids
    history = messages[:-1]  # ends with a user turn: what a server prompts the model with
    prompt = released.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
    assert prompt == bos + generation_prompt(history, llama_tokenizer, "tulu")
    prompt_ids = released.apply_chat_template(history, add_generation_prompt=True)["input_ids"]
    assert training_ids[: len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize("name, end_of_turn", [("llama3", "<|eot_id|>"), ("qwen3", "<|im_end|>")])
def test_native_template_is_kept_and_stops_at_its_end_of_turn(name, end_of_turn):
    from tulu_lite.merge.release import (
        end_of_turn_ids,
        release_generation_config,
        release_tokenizer,
    )
    from tulu_lite.model.tiny import build_tiny_llama
    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir(name))
    template = tokenizer.chat_template
    assert release_tokenizer(tokenizer, "native").chat_template == template
    assert tokenizer.convert_ids_to_tokens(end_of_turn_ids(tokenizer, "native"))[0] == end_of_turn
    model = build_tiny_llama(tokenizer, hidden_size=16, num_layers=1)
    config = release_generation_config(model, tokenizer, "native")
    stops = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    assert tokenizer.convert_tokens_to_ids(end_of_turn) in stops and tokenizer.eos_token_id in stops


def test_native_without_a_template_is_an_error():
    from tulu_lite.merge.release import release_tokenizer
    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir("mistral"))  # ships no chat_template
    with pytest.raises(TuluError, match="no chat_template"):
        release_tokenizer(tokenizer, "native")


# ---- overwriting, interruptions, wrong inputs -------------------------------------------------------------------


@pytest.mark.slow
def test_refuses_an_existing_out_dir_unless_forced(workdir, lora_adapter):
    from tulu_lite.merge import merge

    out = workdir / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TuluError, match="already exists.*--force"):
        merge(lora_adapter, out, verify=False)
    assert (out / "keep.txt").read_text() == "mine"
    merge(lora_adapter, out, verify=False, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_an_interrupted_write_leaves_no_output_and_keeps_the_old_one(workdir, lora_adapter, monkeypatch, interruption):
    import tulu_lite.merge as merge_module

    def fail_midway(*args, **kwargs):  # called after the weights and tokenizer were written
        raise interruption

    monkeypatch.setattr(merge_module, "write_model_card", fail_midway)
    fresh = workdir / f"interrupted-{type(interruption).__name__}"
    with pytest.raises(type(interruption)):
        merge_module.merge(lora_adapter, fresh, verify=False)
    assert not fresh.exists()

    old = workdir / f"old-{type(interruption).__name__}"
    old.mkdir()
    (old / "config.json").write_text("{}")
    with pytest.raises(type(interruption)):
        merge_module.merge(lora_adapter, old, verify=False, force=True)
    assert [p.name for p in old.iterdir()] == ["config.json"] and (old / "config.json").read_text() == "{}"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".") and "partial" in p.name]


def _cli_error(argv: list[str], monkeypatch, capsys) -> str:
    from tulu_lite.cli import main

    monkeypatch.setattr("sys.argv", ["tulu-lite", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_dir_that_is_not_an_adapter_is_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    out = str(tmp_path / "never-written")
    error = _cli_error(["merge", str(tiny_model_dir), "-o", out], monkeypatch, capsys)
    assert "not an adapter directory" in error and "looks like a merged or base model" in error
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    assert "not an adapter directory" in _cli_error(["merge", str(empty), "-o", out], monkeypatch, capsys)
    assert "adapter directory not found" in _cli_error(["merge", str(tmp_path / "nope"), "-o", out], monkeypatch, capsys)
    assert not Path(out).exists()


@pytest.mark.slow
def test_wrong_options_are_one_line_errors(workdir, lora_adapter, monkeypatch, capsys):
    out = str(workdir / "never-written")
    no_recipe = workdir / "no-recipe"
    no_recipe.mkdir()
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        (no_recipe / file).write_bytes((lora_adapter / file).read_bytes())
    assert "no recipe.yaml" in _cli_error(["merge", str(no_recipe), "-o", out], monkeypatch, capsys)
    assert "would replace the input" in _cli_error(["merge", str(lora_adapter), "-o", str(lora_adapter), "--force"],
                                                   monkeypatch, capsys)
    assert "--dtype" in _cli_error(["merge", str(lora_adapter), "-o", out, "--dtype", "int8"], monkeypatch, capsys)
    assert "--base" in _cli_error(["merge", str(lora_adapter), "-o", out, "--base", str(no_recipe)], monkeypatch, capsys)
    assert not Path(out).exists()
