"""Merge: fold a trained LoRA / QLoRA adapter into its base and write a verified, standard HF checkpoint.

A QLoRA adapter was trained against the *dequantized 4-bit* weights, not the original ones. Merging it into the
original fp16/bf16 weights (what several popular tools do) silently shifts the model by the whole quantization
error. `merge` therefore rebuilds the base exactly as training loaded it (same quant type, double quantization,
compute dtype), dequantizes every 4-bit layer to the chosen dtype, and merges into those weights. For plain LoRA
the base is simply loaded in the chosen dtype.

Stages, in order (all inside `atomic_dir`, so an interruption leaves no OUT_DIR and never a half-written one):

1. read the adapter dir (`tulu-lite train`'s output: PEFT adapter, tokenizer, recipe.yaml, metrics.json);
2. load the base as trained plus the adapter and record its logits on a few prompts (the reference);
3. dequantize (QLoRA), load the adapter again onto those weights and `merge_and_unload`;
4. compare the merged model's logits with the reference (and, for QLoRA, a naive merge into the original weights);
5. write the checkpoint (safetensors, sharded), the tokenizer with its chat template, `generation_config.json`
   whose eos ends an assistant turn, the training recipe, `merge.json` and a model card.

GPU: the 4-bit base loads on GPU 0 like in training; the merged model stays on the GPU in the chosen dtype when
it fits in free memory and is built on the CPU otherwise (each layer is dequantized on the GPU and moved). On CPU
use float32: bfloat16 matmuls are ~4x slower there and only worth it to halve memory.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console

from tulu_lite.data.chat_format import TULU_CHAT_TEMPLATE, ChatFormat, generation_prompt
from tulu_lite.errors import TuluError, first_line
from tulu_lite.json_files import read_json_file, write_json
from tulu_lite.outputs import atomic_dir, atomic_file, write_errors
from tulu_lite.recipe import ModelSettings, Recipe, load_recipe

MergeDtype = Literal["bfloat16", "float16", "float32"]
MERGE_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")
DEFAULT_MAX_SHARD_SIZE = "5GB"

# Short prompts covering a system turn and a multi-turn history; each is formatted as in training.
VERIFY_CONVERSATIONS: list[list[dict]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a haiku about autumn leaves."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Give me three tips for learning Python."},
    ],
]

# Allowed max |logit difference| as a fraction of the largest reference |logit|, by the least precise dtype the
# two computations use. float32 differences are summation-order noise (measured 2.6e-6 relative on the tiny
# model). bf16/fp16 add the rounding of every weight and activation: measured on the tiny random model (weights
# ~10x larger than a trained LLaMA's, so the worst case) at up to 4.1e-2 (bf16) and 1.9e-2 (fp16); the
# tolerances leave 2x over that, still ~9x below the naive QLoRA merge there (~70%). Mean |diff| and top-1
# agreement are reported alongside (bf16 there: mean 0.023 merged vs 0.50 naive).
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-2, torch.bfloat16: 8e-2}


# ---- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogitsDiff:
    """How far one model's logits are from the reference on the verification prompts."""

    max_abs: float
    mean_abs: float
    top1_agreement: float  # fraction of positions whose argmax token is the same


@dataclass(frozen=True)
class Verification:
    tolerance: float
    reference_scale: float  # largest |logit| of the reference, the scale the tolerance is relative to
    merged: LogitsDiff
    naive: LogitsDiff | None  # QLoRA only: merging into the original (not dequantized) weights

    @property
    def passed(self) -> bool:
        return self.merged.max_abs <= self.tolerance


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    method: Literal["lora", "qlora"]
    dtype: str
    device: str
    verification: Verification | None


@dataclass(frozen=True)
class AdapterDir:
    """A `tulu-lite train` output directory, checked."""

    path: Path
    recipe: Recipe
    metrics: dict
    base_record: dict
    checkpoint: dict | None = None  # a training checkpoint's checkpoint.json (step, max_steps), not a final output

    @property
    def quantized(self) -> bool:
        return self.recipe.quantization is not None


# ---- entry point ----------------------------------------------------------------------------------------------


def merge(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base: str | Path | None = None,
    dtype: MergeDtype | None = None,
    force: bool = False,
    verify: bool = True,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    console: Console | None = None,
) -> MergeResult:
    """Merge `adapter_dir` into its base and write a release checkpoint to `out_dir` (see the module docstring).

    `base` replaces the recipe's `model.name_or_path` (the base moved); `dtype` defaults to bfloat16 on a GPU and
    float32 on CPU. Raises `TuluError` (and writes nothing) when the merged model misses the verification tolerance.
    """
    console = console or Console(quiet=True)
    max_shard_size = shard_size(max_shard_size)
    adapter = read_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    model_cfg = _base_config(adapter, base, console)
    _check_out_dir(out_dir, [adapter.path, Path(model_cfg.name_or_path)], force=force)
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    merge_dtype = _merge_dtype(dtype, target)
    tokenizer = _training_tokenizer(model_cfg)
    prompts = verification_inputs(tokenizer, adapter.recipe.model.chat_template) if verify else []
    with atomic_dir(out_dir, force=force) as tmp:
        if adapter.quantized:
            merged, reference, device = _merge_qlora(adapter, model_cfg, merge_dtype, prompts, console)
        else:
            merged, reference, device = _merge_lora(adapter, model_cfg, merge_dtype, target, prompts, console)
        verification = None
        if verify:  # before writing anything: a failed merge should cost no disk time
            with _stage(console, "verifying the merged model against the reference"):
                verification = compare(reference, logits_on(merged, prompts), _least_precise(adapter, merge_dtype))
            _check_verification(verification)
        with _stage(console, f"writing {out_dir}"), write_errors(out_dir, "the merged model"):
            release = ReleaseInfo(adapter, model_cfg, merge_dtype, str(device), max_shard_size, tokenizer)
            save_release(merged, release, tmp)
        del merged
        _free_memory()
        if verify and adapter.quantized:
            naive = _naive_logits(adapter, model_cfg, merge_dtype, device, prompts, console)
            verification = dataclasses.replace(verification, naive=logits_diff(reference, naive))
        with write_errors(out_dir, "the merged model"):
            write_json(tmp / "merge.json", merge_settings(release, verification))
            write_model_card(tmp / "README.md", release, verification)
    method = "qlora" if adapter.quantized else "lora"
    return MergeResult(out_dir, method, _dtype_name(merge_dtype), str(device), verification)


# ---- reading the adapter --------------------------------------------------------------------------------------


def read_adapter_dir(path: str | Path) -> AdapterDir:
    """Check that `path` is a `tulu-lite train` output and read its recipe, metrics and base record."""
    path = Path(path)
    if not path.is_dir():
        raise TuluError(f"{path}: adapter directory not found")
    if not (path / "adapter_config.json").is_file():
        looks_like = "; it looks like a merged or base model" if (path / "config.json").is_file() else ""
        raise TuluError(
            f"{path}: not an adapter directory (no adapter_config.json{looks_like}); "
            f"expected the output_dir of `tulu-lite train`"
        )
    if not any(path.glob("adapter_model.*")):
        raise TuluError(f"{path}: adapter_config.json but no adapter_model.safetensors (incomplete adapter)")
    if not (path / "recipe.yaml").is_file():
        raise TuluError(f"{path}: no recipe.yaml, so the base and its quantization are unknown (train with tulu-lite)")
    from tulu_lite.json_files import read_json_object
    from tulu_lite.model import check_safetensors

    read_json_object(path / "adapter_config.json")  # PEFT would raise a bare JSONDecodeError
    if (path / "adapter_model.safetensors").is_file():
        check_safetensors(path / "adapter_model.safetensors")  # ...and a truncated file a SafetensorError
    recipe = load_recipe(path / "recipe.yaml")
    checkpoint = _read_json(path / "checkpoint.json") or None  # OUT.checkpoints/checkpoint-N of `tulu-lite train`
    return AdapterDir(path, recipe, _read_json(path / "metrics.json"), _read_json(path / "base_model.json"),
                      checkpoint)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    return read_json_file(path)


def _check_out_dir(out_dir: Path, inputs: list[Path], *, force: bool) -> None:
    """Fail before loading anything: never write over an input (adapter, base), nor an output without --force."""
    for path in inputs:
        if path.exists() and path.resolve().is_relative_to(out_dir.resolve()):
            raise TuluError(f"{out_dir}: the output would replace the input {path}; choose another -o")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise TuluError(f"{out_dir}: already exists (pass --force to overwrite)")


def _base_config(adapter: AdapterDir, base: str | Path | None, console: Console) -> ModelSettings:
    """The recipe's model section, pointed at `--base` when given; the base must be the one training used.

    Training records a fingerprint of the base (`tulu_lite.model.base_fingerprint`; the full weights hash for a
    rebuilt tiny LLaMA). A base that no longer matches it is refused, saying what differs, unless `--base` names
    the base to use explicitly (then the differences are only printed).
    """
    from tulu_lite.model import check_model_dir, tiny_llama_dir, weights_sha256

    model_cfg = adapter.recipe.model
    if base is not None:
        check_model_dir(base, "--base")
        model_cfg = model_cfg.model_copy(update={"name_or_path": str(Path(base).resolve())})
        differences = _base_differences(adapter, model_cfg)
        if differences:
            console.print(f"[yellow]note[/]: --base {base} is not the base this adapter was trained on "
                          f"({'; '.join(differences[:3])}); merging into it as asked", highlight=False)
        return model_cfg
    if model_cfg.is_tiny and "weights_sha256" in adapter.base_record:
        if weights_sha256(tiny_llama_dir(model_cfg)) != adapter.base_record["weights_sha256"]:
            raise TuluError(
                f"{adapter.path}: the rebuilt tiny-llama base differs from the one this adapter was trained on "
                f"(different torch/transformers?); pass --base with the original base directory"
            )
    differences = _base_differences(adapter, model_cfg)
    if differences:
        raise TuluError(f"{adapter.path}: the base {model_cfg.name_or_path} changed since training "
                        f"({'; '.join(differences[:3])}); pass --base DIR to merge into a base anyway")
    return model_cfg


def _base_differences(adapter: AdapterDir, model_cfg: ModelSettings) -> list[str]:
    """How the base at `model_cfg` differs from the fingerprint recorded at training (empty if none recorded)."""
    from tulu_lite.model import (
        base_fingerprint,
        check_model_dir,
        fingerprint_differences,
        model_files_dir,
    )

    recorded = adapter.base_record.get("fingerprint")
    if not isinstance(recorded, dict) or model_cfg.is_tiny:
        return []  # adapters trained before fingerprints were recorded
    directory = model_files_dir(model_cfg.name_or_path)
    if directory is None:
        return []  # a hub base that is not cached: loading it will say so
    check_model_dir(directory, "base")
    return fingerprint_differences(recorded, base_fingerprint(directory))


def shard_size(value: str | int) -> str | int:
    """`--max-shard-size` checked before any work: an integer (bytes) or digits with a unit (5GB, 500MB, 2GiB)."""
    from transformers.utils.hub import convert_file_size_to_int

    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    try:
        size = convert_file_size_to_int(value.strip() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        size = None
    if not isinstance(size, int) or size <= 0:
        raise TuluError(f"--max-shard-size: expected a size such as 5GB, 500MB or 2GiB, got {value!r}")
    return value


def _training_tokenizer(model_cfg: ModelSettings):
    """The tokenizer exactly as training loaded it: from the recipe's source, not the copy in the adapter dir.

    transformers 5.23 does not save a LLaMA tokenizer's ``legacy`` flag, so a saved copy reloads with
    ``legacy=False`` and tokenizes the text after a special token differently (after ``</s>``, "\n" instead of
    "▁\n"): the adapter dir's copy does not reproduce the training ids of multi-turn conversations.
    """
    from tulu_lite.model import load_recipe_tokenizer

    return load_recipe_tokenizer(model_cfg)


def _merge_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:  # bf16 on a GPU that computes it natively, fp16 on older ones (V100, T4), fp32 on CPU
        from tulu_lite.model import choose_dtype, native_bf16

        return choose_dtype("auto", cuda=device.type == "cuda", bf16_native=device.type == "cuda" and native_bf16())
    if name not in MERGE_DTYPES:
        raise TuluError(f"--dtype: expected one of {', '.join(MERGE_DTYPES)}, got {name!r}")
    return getattr(torch, name)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- loading and merging --------------------------------------------------------------------------------------


def _merge_lora(adapter, model_cfg, dtype, device, prompts, console):
    """Plain LoRA: base in the merge dtype, adapter on top (the reference), then merged in place."""
    with _stage(console, f"loading the base in {_dtype_name(dtype)} and the adapter"):
        model = load_full_base(model_cfg, dtype, device)
        model = load_adapter(model, adapter).eval()
    reference = _reference_logits(model, prompts, console)
    with _stage(console, "merging the adapter"):
        merged = model.merge_and_unload(safe_merge=True)
    return merged, reference, device


def _merge_qlora(adapter, model_cfg, dtype, prompts, console):
    """QLoRA: 4-bit base as trained + adapter (the reference), then dequantize and merge into those weights."""
    from tulu_lite.model import load_base_model

    quant = adapter.recipe.quantization
    loading = f"loading the base in 4-bit as trained ({quant.quant_type}, double quant {quant.double_quant})"
    with _stage(console, loading):
        device_map = {"": 0} if torch.cuda.is_available() else None
        base = load_base_model(model_cfg, quant, device_map=device_map)
        _use_training_matmul(base)
        model = load_adapter(base, adapter).eval()
    reference = _reference_logits(model, prompts, console)
    base = model.unload()  # the untouched 4-bit base; the adapter is loaded again after dequantization
    device = merge_device(base, dtype)
    with _stage(console, f"dequantizing the 4-bit layers to {_dtype_name(dtype)} on {device}"):
        dequantize_4bit_layers(base, dtype, device)
    with _stage(console, "merging the adapter into the dequantized weights"):
        merged = load_adapter(base, adapter).eval().merge_and_unload(safe_merge=True)
    return merged, reference, device


def _reference_logits(model, prompts, console) -> list[torch.Tensor]:
    if not prompts:
        return []
    with _stage(console, f"reference: logits of the adapter model as trained on {len(prompts)} prompts"):
        return logits_on(model, prompts)


def _naive_logits(adapter, model_cfg, dtype, device, prompts, console) -> list[torch.Tensor]:
    """Logits of the merge several tools do: the adapter folded into the original, never-quantized weights."""
    with _stage(console, "naive merge into the original weights (for comparison)"):
        model = load_full_base(model_cfg, dtype, device)
        model = load_adapter(model, adapter).eval().merge_and_unload()
        logits = logits_on(model, prompts)
    del model
    _free_memory()
    return logits


def load_adapter(model, adapter: AdapterDir):
    """The adapter on `model`; an adapter that does not fit the base (another --base) is one line, not a traceback."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter.path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TuluError(f"{adapter.path}: the adapter does not fit this base ({first_line(exc)})") from exc


def load_full_base(model_cfg: ModelSettings, dtype: torch.dtype, device: torch.device):
    """The recipe's base, not quantized, in `dtype` on `device` (tiny-llama is rebuilt from its seed)."""
    from tulu_lite.model import load_base_model

    # load_base_model refuses float16 on CPU (a training restriction); a float16 merge on CPU is merely slow.
    load_as = "float32" if dtype == torch.float16 and device.type == "cpu" else _dtype_name(dtype)
    model = load_base_model(model_cfg.model_copy(update={"dtype": load_as}), None, device_map={"": str(device)})
    return model.to(dtype)


def _use_training_matmul(model) -> None:
    # bitsandbytes 0.50 (fused CPU kernel, bitsandbytes PR #1804) runs eval-mode CPU forwards of Linear4bit in
    # bf16 on weights it repacks in place. That is not the computation training did (dequantize, then matmul in
    # the compute dtype): it moved the tiny model's logits by ~1e-2 relative, and repacked weights no longer
    # dequantize with `dequantize_4bit` (same family as bitsandbytes#2078). The reference must be the trained
    # computation, so switch the fast path off; needed for as long as bitsandbytes enables it by default.
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def merge_device(model, dtype: torch.dtype) -> torch.device:
    """Where the merged model is built: the GPU when it fits in free memory there (with 10% to spare), else CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    needed = sum(_logical_numel(param) for param in model.parameters()) * torch.finfo(dtype).bits // 8
    free, _total = torch.cuda.mem_get_info(0)
    return torch.device("cuda", 0) if needed < 0.9 * free else torch.device("cpu")


def _logical_numel(param: torch.Tensor) -> int:
    quant_state = getattr(param, "quant_state", None)  # Params4bit packs two values per byte
    return int(torch.Size(quant_state.shape).numel()) if quant_state is not None else param.numel()


def dequantize_4bit_layers(model, dtype: torch.dtype, device: torch.device) -> int:
    """Replace every bitsandbytes `Linear4bit` by an `nn.Linear` holding its dequantized weight; return how many.

    Everything else (embeddings, norms, lm_head: never quantized) is cast to `dtype` and moved to `device`, and
    the quantization config is dropped so the model saves and reloads as a plain checkpoint.
    """
    import bitsandbytes as bnb

    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        if getattr(module.weight.quant_state, "packing_format_for_cpu", False):
            raise RuntimeError(f"{name}: 4-bit weight was repacked for the CPU kernel and cannot be dequantized")
        weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
        linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                 device="meta")
        linear.weight = torch.nn.Parameter(weight.to(device=device, dtype=dtype), requires_grad=False)
        if module.bias is not None:
            linear.bias = torch.nn.Parameter(module.bias.data.to(device=device, dtype=dtype), requires_grad=False)
        model.set_submodule(name, linear)
        replaced += 1
    if replaced == 0:
        raise TuluError("the recipe quantizes the base but no 4-bit layer was found after loading it")
    model.hf_quantizer.remove_quantization_config(model)  # transformers refuses to cast a quantized model
    model.is_loaded_in_4bit = False
    model.to(device=device, dtype=dtype)
    return replaced


# ---- verification ---------------------------------------------------------------------------------------------


def verification_inputs(tokenizer, template: ChatFormat) -> list[torch.Tensor]:
    """The verification prompts as token ids, formatted exactly as the model was trained to be prompted."""
    return [
        torch.tensor([tokenizer(generation_prompt(messages, tokenizer, template),
                                add_special_tokens=template == "tulu").input_ids])
        for messages in VERIFY_CONVERSATIONS
    ]


@torch.no_grad()
def logits_on(model, prompts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 CPU logits of `model` on each prompt (one at a time: no padding to get wrong)."""
    device = model.get_input_embeddings().weight.device
    return [model(input_ids=ids.to(device)).logits[0].float().cpu() for ids in prompts]


def compare(reference: list[torch.Tensor], merged: list[torch.Tensor], precision: torch.dtype) -> Verification:
    """Max/mean |difference| and top-1 agreement against the reference, with the tolerance for `precision`."""
    scale = max(float(ref.abs().max()) for ref in reference)
    return Verification(
        tolerance=RELATIVE_TOLERANCE[precision] * scale,
        reference_scale=scale,
        merged=logits_diff(reference, merged),
        naive=None,
    )


def logits_diff(reference: list[torch.Tensor], other: list[torch.Tensor]) -> LogitsDiff:
    diffs = [(ref - out).abs() for ref, out in zip(reference, other, strict=True)]
    agree = torch.cat([ref.argmax(-1) == out.argmax(-1) for ref, out in zip(reference, other)])
    return LogitsDiff(
        max_abs=max(float(diff.max()) for diff in diffs),
        mean_abs=float(torch.cat([diff.flatten() for diff in diffs]).mean()),
        top1_agreement=float(agree.float().mean()),
    )


def _least_precise(adapter: AdapterDir, merge_dtype: torch.dtype) -> torch.dtype:
    """The least precise dtype either computation runs in: the merge dtype, or the 4-bit compute dtype."""
    dtypes = [merge_dtype]
    if adapter.quantized:
        from tulu_lite.model import resolve_dtype

        dtypes.append(resolve_dtype(adapter.recipe.quantization.compute_dtype))
    return max(dtypes, key=lambda d: RELATIVE_TOLERANCE[d])


def _check_verification(verification: Verification) -> None:
    if not verification.passed:
        raise TuluError(
            f"verification failed: merged logits differ from the adapter model's by {verification.merged.max_abs:.3g} "
            f"(tolerance {verification.tolerance:.3g}); nothing was written (--no-verify writes it anyway)"
        )


def verification_table(result: MergeResult):
    """A rich table of the verification figures (what the CLI prints)."""
    from rich.table import Table

    verification = result.verification
    caption = "merged: what was written; tolerance: relative to the largest |logit|"
    if verification.naive is not None:
        caption = ("merged: adapter folded into the dequantized 4-bit weights (written); naive: folded into the "
                   "original weights, as several tools do")
    table = Table(title=f"logits on {len(VERIFY_CONVERSATIONS)} prompts vs the adapter model as trained",
                  caption=caption)
    for column in ("model", "max |diff|", "mean |diff|", "top-1", "tolerance", "result"):
        table.add_column(column, justify="left" if column in ("model", "result") else "right")
    merged = verification.merged
    table.add_row("merged", f"{merged.max_abs:.3g}", f"{merged.mean_abs:.3g}", f"{merged.top1_agreement:.0%}",
                  f"{verification.tolerance:.3g}", "[green]ok[/]" if verification.passed else "[red]FAILED[/]")
    if verification.naive is not None:
        naive = verification.naive
        ratio = naive.max_abs / max(merged.max_abs, 1e-12)
        table.add_row("naive", f"{naive.max_abs:.3g}", f"{naive.mean_abs:.3g}", f"{naive.top1_agreement:.0%}",
                      "", f"[yellow]{ratio:,.0f}x off[/]")
    return table


# ---- writing --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseInfo:
    """What the written files describe: where the model came from and how it was merged."""

    adapter: AdapterDir
    model_cfg: ModelSettings
    dtype: torch.dtype
    device: str
    max_shard_size: str | int
    tokenizer: object


def save_release(model, release: ReleaseInfo, out: Path) -> None:
    """Weights (safetensors, sharded), tokenizer with chat template, generation config, recipe and loss curve."""
    tokenizer = release_tokenizer(release.tokenizer, release.adapter.recipe.model.chat_template)
    model.generation_config = release_generation_config(model, tokenizer, release.adapter.recipe.model.chat_template)
    model.config.dtype = release.dtype
    model.save_pretrained(out, max_shard_size=release.max_shard_size)
    save_tokenizer(tokenizer, out, trust_remote_code=release.model_cfg.trust_remote_code)
    shutil.copyfile(release.adapter.path / "recipe.yaml", out / "recipe.yaml")
    if (release.adapter.path / "loss.png").is_file():
        shutil.copyfile(release.adapter.path / "loss.png", out / "loss.png")


def release_tokenizer(tokenizer, template: ChatFormat):
    """The tokenizer whose chat template prompts the model the way it was trained.

    ``tulu``: `TULU_CHAT_TEMPLATE`, which renders the exact training text (so `apply_chat_template` and servers
    such as vLLM match training); ``native``: the tokenizer's own template, unchanged.
    """
    if template == "tulu":
        tokenizer.chat_template = TULU_CHAT_TEMPLATE
    elif not tokenizer.chat_template:
        raise TuluError(f"{tokenizer.name_or_path}: native chat format but the tokenizer has no chat_template")
    return tokenizer


def save_tokenizer(tokenizer, out: Path, *, trust_remote_code: bool = False) -> None:
    """Save the tokenizer and check that the copy reloads with the training tokenization.

    `tulu_lite.tokenizer.load_tokenizer` pins what transformers 5.23 would drop on save (LLaMA's `legacy`); the
    check catches any other setting a future version forgets to write.
    """
    tokenizer.save_pretrained(out)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out, trust_remote_code=trust_remote_code, local_files_only=True)
    for messages in VERIFY_CONVERSATIONS:
        text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": "Sure."}], tokenize=False)
        if reloaded(text, add_special_tokens=False).input_ids != tokenizer(text, add_special_tokens=False).input_ids:
            raise TuluError(f"{out}: the saved tokenizer does not reload with the training tokenization "
                            f"(transformers {_version('transformers')}); please report this")


def end_of_turn_ids(tokenizer, template: ChatFormat) -> list[int]:
    """Token ids that end an assistant turn: eos (``</s>``) for tulu; the template's closing token for native.

    For native templates the closing token is found by rendering a probe conversation with the same span logic
    the encoder trains on (e.g. ``<|eot_id|>`` for Llama-3, ``<|im_end|>`` for Qwen); eos is kept as a second
    stop token when it differs.
    """
    if template == "tulu":
        return [tokenizer.eos_token_id]
    from tulu_lite.data.encode import render_native_spans

    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = render_native_spans(probe, tokenizer)
    start, end = rendered.trained[-1]
    closing = tokenizer(rendered.text[start:end], add_special_tokens=False).input_ids[-1]
    return list(dict.fromkeys([closing, tokenizer.eos_token_id]))


def release_generation_config(model, tokenizer, template: ChatFormat):
    """The base's generation settings with an eos that stops at the end of the assistant turn.

    Built fresh rather than copied: a config marked as derived from the model config can be regenerated from
    config.json at `generate()` time, which would lose the end-of-turn token.
    """
    from transformers import GenerationConfig

    settings = {key: value for key, value in model.generation_config.to_diff_dict().items() if not key.startswith("_")}
    settings.pop("transformers_version", None)
    eos = end_of_turn_ids(tokenizer, template)
    settings.update(eos_token_id=eos[0] if len(eos) == 1 else eos, pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id)
    return GenerationConfig(**settings)


def merge_settings(release: ReleaseInfo, verification: Verification | None) -> dict:
    """merge.json: everything needed to redo the merge, plus the verification figures."""
    adapter = release.adapter
    quant = adapter.recipe.quantization
    return {
        "adapter_dir": str(adapter.path.resolve()),
        "base": release.model_cfg.name_or_path,
        "base_record": adapter.base_record,
        "method": "qlora: merged into the dequantized 4-bit weights" if quant else "lora",
        "quantization": quant.model_dump(mode="json") if quant else None,
        "dtype": _dtype_name(release.dtype),
        "device": release.device,
        "chat_template": adapter.recipe.model.chat_template,
        "max_shard_size": release.max_shard_size,
        "verification": _verification_json(verification),
        "versions": {name: _version(name) for name in ("tulu-lite", "torch", "transformers", "peft", "bitsandbytes")},
    }


def _verification_json(verification: Verification | None) -> dict | None:
    if verification is None:
        return None
    return {"prompts": len(VERIFY_CONVERSATIONS), "passed": verification.passed, **asdict(verification)}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_model_card(target: Path, release: ReleaseInfo, verification: Verification | None) -> None:
    """README.md: base, data, hyperparameters, final training metrics, merge and verification, usage."""
    with atomic_file(target) as handle:
        handle.write(model_card(release, verification))


def model_card(release: ReleaseInfo, verification: Verification | None) -> str:
    recipe, adapter = release.adapter.recipe, release.adapter
    base = recipe.model.name_or_path
    data = [f"`{item.path.name if item.path else item.label}`" for item in recipe.data.train_files] or [
        f"mixture `{recipe.data.mixture}`"]
    quant = recipe.quantization
    method = (f"QLoRA ({quant.quant_type}, double quant {quant.double_quant}), merged into the dequantized "
              f"4-bit weights" if quant else "LoRA")
    title = Path(adapter.path).name
    stage = ""
    if adapter.checkpoint is not None:
        step, total = adapter.checkpoint.get("step"), adapter.checkpoint.get("max_steps")
        title = f"{recipe.output_dir.name}, checkpoint at step {step} of {total}"
        stage = f" This is the training checkpoint at step {step} of {total}, not the run's final adapter."
    lines = [
        "---",
        "library_name: transformers",
        "tags: [tulu-lite, instruction-tuning, lora]",
        "---",
        f"# {title} (merged)",
        "",
        f"Instruction-tuned with tulu-lite in the `{recipe.model.chat_template}` chat format.{stage}",
        "",
        f"- **Base:** `{base}`" + (" (embedded tiny LLaMA, built from its seed)" if recipe.model.is_tiny else ""),
        f"- **Data:** {', '.join(data)} (max length {recipe.data.max_seq_length})",
        f"- **Method:** {method}; saved in {_dtype_name(release.dtype)}",
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| lora.{key} | {value} |" for key, value in recipe.lora.model_dump(mode="json").items()],
        *[f"| training.{key} | {value} |" for key, value in recipe.training.model_dump(mode="json").items()],
        "",
        "The full training recipe is `recipe.yaml` (rerun with `tulu-lite train recipe.yaml`).",
        "",
        *_metrics_lines(adapter.metrics),
        *_verification_lines(verification),
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True,',
        '                                    return_tensors="pt", return_dict=True)',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))",
        "```",
        "",
    ]
    return "\n".join(lines)


def _metrics_lines(metrics: dict) -> list[str]:
    scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}
    if not scalars:
        return []
    rows = [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in scalars.items()]
    return ["## Final training metrics", "", "| metric | value |", "|---|---|", *rows, ""]


def _verification_lines(verification: Verification | None) -> list[str]:
    if verification is None:
        return ["## Verification", "", "Skipped (`--no-verify`).", ""]
    lines = [
        "## Verification",
        "",
        f"Logits on {len(VERIFY_CONVERSATIONS)} prompts, merged model vs the adapter model as trained:",
        (f"max |diff| {verification.merged.max_abs:.3g} (tolerance {verification.tolerance:.3g}), "
         f"top-1 agreement {verification.merged.top1_agreement:.1%}."),
    ]
    if verification.naive is not None:
        lines.append(f"A naive merge into the original (not dequantized) weights would differ by "
                     f"{verification.naive.max_abs:.3g} (top-1 agreement {verification.naive.top1_agreement:.1%}).")
    return [*lines, ""]


# ---- plumbing -------------------------------------------------------------------------------------------------


@contextmanager
def _stage(console: Console, description: str) -> Iterator[None]:
    """A spinner while a stage runs, then a tick with its duration."""
    start = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"[green]✓[/] {description} [dim]({time.perf_counter() - start:.1f}s)[/]", highlight=False)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
