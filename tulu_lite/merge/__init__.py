"""Merge: fold a trained LoRA / QLoRA adapter into its base and write a verified, standard HF checkpoint.

A QLoRA adapter was trained against the *dequantized 4-bit* weights, not the original ones. Merging it into the
original fp16/bf16 weights (what several popular tools do) silently shifts the model by the whole quantization
error. `merge` therefore rebuilds the base exactly as training loaded it (same quant type, double quantization,
compute dtype), dequantizes every 4-bit layer to the chosen dtype, and merges into those weights. For plain LoRA
the base is simply loaded in the chosen dtype.

Stages, in order (all inside `atomic_dir`, so an interruption leaves no OUT_DIR and never a half-written one), and
the module of each:

1. read the adapter dir (`tulu-lite train`'s output: PEFT adapter, tokenizer, recipe.yaml, metrics.json) and check
   the base and the output dir (`adapter`);
2. load the base as trained plus the adapter and record its logits on a few prompts (the reference; `weights`);
3. dequantize (QLoRA), load the adapter again onto those weights and `merge_and_unload` (`weights`);
4. compare the merged model's logits with the reference (and, for QLoRA, a naive merge into the original weights;
   `verify`);
5. write the checkpoint (safetensors, sharded), the tokenizer with its chat template, `generation_config.json`
   whose eos ends an assistant turn, the training recipe, `merge.json` and a model card (`release`).

GPU: the 4-bit base loads on GPU 0 like in training; the merged model stays on the GPU in the chosen dtype when
it fits in free memory and is built on the CPU otherwise (each layer is dequantized on the GPU and moved). On CPU
use float32: bfloat16 matmuls are ~4x slower there and only worth it to halve memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console

from tulu_lite.json_files import write_json
from tulu_lite.merge.adapter import (
    base_config,
    check_out_dir,
    read_adapter_dir,
    training_tokenizer,
)
from tulu_lite.merge.progress import stage
from tulu_lite.merge.release import (
    DEFAULT_MAX_SHARD_SIZE,
    ReleaseInfo,
    merge_settings,
    save_release,
    shard_size,
    write_model_card,
)
from tulu_lite.merge.verify import (
    Verification,
    check_verification,
    compare,
    least_precise,
    logits_diff,
    logits_on,
    verification_inputs,
)
from tulu_lite.merge.weights import (
    MergeDtype,
    choose_merge_dtype,
    computation_dtypes,
    dtype_name,
    free_memory,
    merge_weights,
    naive_logits,
)
from tulu_lite.outputs import atomic_dir, write_errors


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    method: Literal["lora", "qlora"]
    dtype: str
    device: str
    verification: Verification | None


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
    model_cfg = base_config(adapter, base, console)
    check_out_dir(out_dir, [adapter.path, Path(model_cfg.name_or_path)], force=force)
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    merge_dtype = choose_merge_dtype(dtype, target)
    tokenizer = training_tokenizer(model_cfg)
    prompts = verification_inputs(tokenizer, adapter.recipe.model.chat_template) if verify else []
    with atomic_dir(out_dir, force=force) as tmp:
        merged, reference, device = merge_weights(adapter, model_cfg, merge_dtype, target, prompts, console)
        verification = None
        if verify:  # before writing anything: a failed merge should cost no disk time
            with stage(console, "verifying the merged model against the reference"):
                precision = least_precise(computation_dtypes(adapter, merge_dtype))
                verification = compare(reference, logits_on(merged, prompts), precision)
            check_verification(verification)
        with stage(console, f"writing {out_dir}"), write_errors(out_dir, "the merged model"):
            release = ReleaseInfo(adapter, model_cfg, merge_dtype, str(device), max_shard_size, tokenizer)
            save_release(merged, release, tmp)
        del merged
        free_memory()
        if verify and adapter.quantized:
            naive = naive_logits(adapter, model_cfg, merge_dtype, device, prompts, console)
            verification = dataclasses.replace(verification, naive=logits_diff(reference, naive))
        with write_errors(out_dir, "the merged model"):
            write_json(tmp / "merge.json", merge_settings(release, verification))
            write_model_card(tmp / "README.md", release, verification)
    method = "qlora" if adapter.quantized else "lora"
    return MergeResult(out_dir, method, dtype_name(merge_dtype), str(device), verification)
