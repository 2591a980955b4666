"""Merge's weights: the base loaded as training loaded it, the adapter folded into it, and the merge dtype/device.

A QLoRA adapter was trained against the *dequantized 4-bit* weights, so it is folded into exactly those: the base
is rebuilt in 4-bit as trained, every `Linear4bit` is dequantized to the merge dtype (`dequantize_4bit_layers`)
and the adapter is loaded again onto the result and merged. Plain LoRA loads the base in the merge dtype. Both
first record the logits of the adapter model as trained (the reference the merged model is verified against).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Literal

import torch

from tulu_lite.errors import TuluError, first_line
from tulu_lite.merge.adapter import AdapterDir
from tulu_lite.merge.progress import stage
from tulu_lite.merge.verify import logits_on
from tulu_lite.recipe import ModelSettings

if TYPE_CHECKING:
    from rich.console import Console

MergeDtype = Literal["bfloat16", "float16", "float32"]
MERGE_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


# ---- dtype and device -----------------------------------------------------------------------------------------


def choose_merge_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """`--dtype`, checked; by default bf16 on a GPU that computes it natively, fp16 on older ones (V100, T4), fp32
    on CPU."""
    if name is None:
        from tulu_lite.model.loading import choose_dtype, native_bf16

        return choose_dtype("auto", cuda=device.type == "cuda", bf16_native=device.type == "cuda" and native_bf16())
    if name not in MERGE_DTYPES:
        raise TuluError(f"--dtype: expected one of {', '.join(MERGE_DTYPES)}, got {name!r}")
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def computation_dtypes(adapter: AdapterDir, dtype: torch.dtype) -> list[torch.dtype]:
    """The dtypes the reference and the merged model compute in: the merge dtype, and QLoRA's 4-bit compute dtype."""
    dtypes = [dtype]
    if adapter.quantized:
        from tulu_lite.model.loading import resolve_dtype

        dtypes.append(resolve_dtype(adapter.recipe.quantization.compute_dtype))
    return dtypes


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


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- merging --------------------------------------------------------------------------------------------------


def merge_weights(adapter: AdapterDir, model_cfg: ModelSettings, dtype: torch.dtype, target: torch.device,
                  prompts: list[torch.Tensor], console: Console) -> tuple[object, list[torch.Tensor], torch.device]:
    """The merged model, the reference logits on `prompts` (the adapter model as trained) and where it was built."""
    if adapter.quantized:
        return _merge_qlora(adapter, model_cfg, dtype, prompts, console)
    return _merge_lora(adapter, model_cfg, dtype, target, prompts, console)


def _merge_lora(adapter, model_cfg, dtype, device, prompts, console):
    """Plain LoRA: base in the merge dtype, adapter on top (the reference), then merged in place."""
    with stage(console, f"loading the base in {dtype_name(dtype)} and the adapter"):
        model = load_full_base(model_cfg, dtype, device)
        model = load_adapter(model, adapter).eval()
    reference = _reference_logits(model, prompts, console)
    with stage(console, "merging the adapter"):
        merged = model.merge_and_unload(safe_merge=True)
    return merged, reference, device


def _merge_qlora(adapter, model_cfg, dtype, prompts, console):
    """QLoRA: 4-bit base as trained + adapter (the reference), then dequantize and merge into those weights."""
    from tulu_lite.model.loading import load_base_model
    from tulu_lite.train.compat import use_training_matmul

    quant = adapter.recipe.quantization
    loading = f"loading the base in 4-bit as trained ({quant.quant_type}, double quant {quant.double_quant})"
    with stage(console, loading):
        device_map = {"": 0} if torch.cuda.is_available() else None
        base = load_base_model(model_cfg, quant, device_map=device_map)
        use_training_matmul(base)
        model = load_adapter(base, adapter).eval()
    reference = _reference_logits(model, prompts, console)
    base = model.unload()  # the untouched 4-bit base; the adapter is loaded again after dequantization
    device = merge_device(base, dtype)
    with stage(console, f"dequantizing the 4-bit layers to {dtype_name(dtype)} on {device}"):
        dequantize_4bit_layers(base, dtype, device)
    with stage(console, "merging the adapter into the dequantized weights"):
        merged = load_adapter(base, adapter).eval().merge_and_unload(safe_merge=True)
    return merged, reference, device


def _reference_logits(model, prompts, console) -> list[torch.Tensor]:
    if not prompts:
        return []
    with stage(console, f"reference: logits of the adapter model as trained on {len(prompts)} prompts"):
        return logits_on(model, prompts)


def naive_logits(adapter, model_cfg, dtype, device, prompts, console) -> list[torch.Tensor]:
    """Logits of the merge several tools do: the adapter folded into the original, never-quantized weights."""
    with stage(console, "naive merge into the original weights (for comparison)"):
        model = load_full_base(model_cfg, dtype, device)
        model = load_adapter(model, adapter).eval().merge_and_unload()
        logits = logits_on(model, prompts)
    del model
    free_memory()
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
    from tulu_lite.model.loading import load_base_model

    # load_base_model refuses float16 on CPU (a training restriction); a float16 merge on CPU is merely slow.
    load_as = "float32" if dtype == torch.float16 and device.type == "cpu" else dtype_name(dtype)
    model = load_base_model(model_cfg.model_copy(update={"dtype": load_as}), None, device_map={"": str(device)})
    return model.to(dtype)


# ---- 4-bit layers ---------------------------------------------------------------------------------------------


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
