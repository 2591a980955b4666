"""Model loading: the dtype and attention kernel a recipe runs in, the frozen base (optionally 4-bit nf4 through
bitsandbytes), the recipe's tokenizer, and the LoRA adapters wrapped around the base."""

from __future__ import annotations

import os
import warnings

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tulu_lite.errors import TuluError, first_line
from tulu_lite.model.files import check_model_dir
from tulu_lite.recipe import (
    AttnImplementation,
    Dtype,
    LoraSettings,
    ModelSettings,
    QuantizationSettings,
    local_model_dir,
)

# peft 0.21 reads the `is_gradient_checkpointing` attribute that transformers 5 deprecated (one FutureWarning per
# model); silence exactly that message until peft reads `is_activation_checkpointing`.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


# ---- dtypes and attention -------------------------------------------------------------------------------------


def native_bf16() -> bool:
    """Whether the current GPU computes in bfloat16 natively (compute capability >= 8.0, or ROCm).

    `torch.cuda.is_bf16_supported()` also answers True on a V100 or T4, where bf16 is emulated (it only checks that
    a bf16 tensor can be created: torch/cuda/__init__.py, `is_bf16_supported(including_emulation=True)`);
    training there in bf16 is many times slower than fp16, so only the native answer counts.
    """
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def choose_dtype(name: Dtype, *, cuda: bool, bf16_native: bool, key: str = "model.dtype") -> torch.dtype:
    """The decision behind `resolve_dtype`, on given facts (so it is testable without a GPU).

    ``auto``: bfloat16 on a GPU that has it natively (Ampere and newer), float16 on older GPUs (V100, T4: fp16
    tensor cores, no bf16), float32 on CPU (bf16 is ~4x slower there and fp16 training needs CUDA).
    """
    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if bf16_native else torch.float16
    if name == "bfloat16" and cuda and not bf16_native:
        raise TuluError(f"{key}: bfloat16 is emulated on this GPU (compute capability below 8.0); use float16 "
                        f"(or auto)")
    if name == "float16" and not cuda:
        raise TuluError(f"{key}: float16 training needs a CUDA GPU; use float32 (or auto) on CPU")
    return getattr(torch, name)


def resolve_dtype(name: Dtype, key: str = "model.dtype") -> torch.dtype:
    """`choose_dtype` on this machine."""
    return choose_dtype(name, cuda=torch.cuda.is_available(), bf16_native=native_bf16(), key=key)


def compute_dtype(model_cfg: ModelSettings, quant_cfg: QuantizationSettings | None) -> torch.dtype:
    """The dtype matmuls run in: the 4-bit compute dtype under QLoRA, else the model's dtype."""
    if quant_cfg is not None:
        return resolve_dtype(quant_cfg.compute_dtype, "quantization.compute_dtype")
    return resolve_dtype(model_cfg.dtype)


def installed_flash_attention() -> set[str]:
    """The flash-attention implementations transformers can run here (package installed and a CUDA device).

    transformers' own checks (utils/import_utils.py, `is_flash_attn_2_available` / `is_flash_attn_3_available`),
    without their fallback of downloading a kernel from the Hub.
    """
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    found = set()
    if is_flash_attn_2_available():
        found.add("flash_attention_2")
    if is_flash_attn_3_available():
        found.add("flash_attention_3")
    return found


def choose_attention(
    choice: AttnImplementation,
    *,
    cuda: bool,
    dtype: torch.dtype,
    capability: tuple[int, int] | None,
    installed: set[str],
    strict: bool = True,
) -> str:
    """The attention kernel for `model.attn_implementation` on given facts (testable without a GPU).

    ``auto`` is the fastest exact kernel for the device and the compute dtype: flash-attention 3 on Hopper (sm90),
    flash-attention 2 on Ampere/Ada/Hopper (sm80-sm90), both only for fp16/bf16 and only when installed; sdpa
    everywhere else. The flash kernels matter most for padding-free rows: transformers runs them as one varlen
    call over the collator's `cu_seq_lens` (attention over sum L^2), while sdpa and eager get a dense T x T block-
    diagonal mask (`masking_utils.sdpa_mask`: memory T^2 and work (sum L)^2).

    A flash kernel named explicitly that cannot run here is an error when `strict` (training), else ``auto``'s
    choice (rebuilding a base to merge or evaluate it: every exact kernel gives the same result).
    """
    flash = choice.startswith("flash_attention")
    if choice == "auto":
        if not cuda or dtype not in (torch.float16, torch.bfloat16) or capability is None:
            return "sdpa"
        if "flash_attention_3" in installed and capability[0] == 9:
            return "flash_attention_3"
        if "flash_attention_2" in installed and 8 <= capability[0] <= 9:
            return "flash_attention_2"
        return "sdpa"
    problem = None
    if flash and choice in ("flash_attention_2", "flash_attention_3") and choice not in installed:
        package = "flash-attn" if choice == "flash_attention_2" else "flash-attn-3 (flash_attn_interface)"
        problem = f"{choice} needs a CUDA GPU and the {package} package"
    elif flash and dtype not in (torch.float16, torch.bfloat16):
        problem = f"{choice} computes in float16/bfloat16 only, this recipe in {str(dtype).removeprefix('torch.')}"
    if problem is None:
        return choice
    if strict:
        raise TuluError(f"model.attn_implementation: {problem}; use auto or sdpa")
    return choose_attention("auto", cuda=cuda, dtype=dtype, capability=capability, installed=installed)


def resolve_attention(
    model_cfg: ModelSettings, quant_cfg: QuantizationSettings | None, *, cuda: bool | None = None, strict: bool = True
) -> str:
    """`choose_attention` on this machine, for a model computing in the recipe's dtype (`cuda=False`: on the CPU)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    capability = torch.cuda.get_device_capability() if cuda else None
    installed = installed_flash_attention() if cuda else set()
    dtype = compute_dtype(model_cfg, quant_cfg)
    return choose_attention(model_cfg.attn_implementation, cuda=cuda, dtype=dtype, capability=capability,
                            installed=installed, strict=strict)


def fsdp_launch() -> bool:
    """Whether this process was started by `accelerate launch` with an FSDP config.

    accelerate/utils/launch.py (`prepare_multi_gpu_env`) exports ACCELERATE_USE_FSDP=true; transformers reads the
    same variable (distributed/fsdp.py, `is_fsdp_enabled`) and accelerate's Accelerator builds its FSDP plugin
    from it.
    """
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


# ---- loading --------------------------------------------------------------------------------------------------


def load_base_model(
    model_cfg: ModelSettings, quant_cfg: QuantizationSettings | None, *, device_map: str | dict | None = None
) -> PreTrainedModel:
    """Load the frozen base exactly as the recipe describes it (the same call rebuilds it for merging).

    With `quant_cfg` the linear layers load in 4 bits (nf4/fp4, optional double quantization) through bitsandbytes
    and the model goes through PEFT's `prepare_model_for_kbit_training` (norms and embeddings upcast to fp32,
    everything frozen). ``tiny-llama`` is built from its seed and saved to a cache directory first, then loaded
    from there like any other base, so quantization and merging see real weights on disk. Attention is
    `resolve_attention` (``model.attn_implementation``) for the device the weights go to (training checks an
    explicit choice first: `tulu_lite.train.build_model`).

    Under an FSDP launch (`fsdp_launch`) the 4-bit weights are stored in the model's dtype and nothing is upcast:
    FSDP shards a layer's parameters only when they share a floating dtype (bitsandbytes' FSDP-QLoRA guide,
    `bnb_4bit_quant_storage`; transformers distributed/fsdp.py `update_fsdp_plugin_peft` then computes in that
    dtype). The caller passes no `device_map` there: FSDP places the shards.
    """
    # (imported here: tiny imports this module for the recipe's tokenizer)
    from tulu_lite.model.tiny import tiny_llama_dir

    source = tiny_llama_dir(model_cfg) if model_cfg.is_tiny else model_cfg.name_or_path
    dtype = resolve_dtype(model_cfg.dtype)
    sharded = fsdp_launch()
    on_gpu = torch.cuda.is_available() and not _all_on_cpu(device_map)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code, "device_map": device_map,
                    "attn_implementation": resolve_attention(model_cfg, quant_cfg, cuda=on_gpu, strict=False)}
    # Pickled (.bin) weights can run code when loaded; refuse them unless the recipe opts in.
    kwargs["use_safetensors"] = None if model_cfg.allow_pickle_weights else True
    if quant_cfg is not None:
        kwargs["quantization_config"] = bits_and_bytes_config(quant_cfg, storage=dtype if sharded else None)
    model = _from_pretrained(source, model_cfg, kwargs)
    if quant_cfg is not None and not sharded:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing is switched on by the trainer (training.gradient_checkpointing), not here.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _all_on_cpu(device_map: str | dict | None) -> bool:
    if isinstance(device_map, dict):
        return bool(device_map) and all(str(place) == "cpu" for place in device_map.values())
    return device_map == "cpu"


def bits_and_bytes_config(quant_cfg: QuantizationSettings, *, storage: torch.dtype | None = None):
    """transformers' BitsAndBytesConfig for the recipe; `storage` packs the 4-bit weights into that dtype (FSDP)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_cfg.quant_type,
        bnb_4bit_use_double_quant=quant_cfg.double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(quant_cfg.compute_dtype, "quantization.compute_dtype"),
        bnb_4bit_quant_storage=storage,
    )


def _from_pretrained(source: str, model_cfg: ModelSettings, kwargs: dict) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    local = local_model_dir(source, "model.name_or_path")
    if local is not None:
        check_model_dir(local, "model.name_or_path")
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:  # transformers raises many types here (OSError, ValueError, SafetensorError...)
        hint = ""
        if not model_cfg.allow_pickle_weights and local is not None and not any(local.glob("*.safetensors")):
            hint = " (only pickle .bin weights found: set model.allow_pickle_weights: true if you trust them)"
        reason = first_line(exc)
        if local is None:
            raise TuluError(f"model.name_or_path: {source}: no such directory, and could not load it as a hub "
                            f"model: {reason}") from exc
        raise TuluError(f"model.name_or_path: {source}: could not load the model: {reason}{hint}") from exc


def load_recipe_tokenizer(model_cfg: ModelSettings) -> PreTrainedTokenizerBase:
    """The tokenizer the recipe trains with (pad token set to an existing token, never a new one)."""
    from tulu_lite.tokenizer import load_tokenizer

    path = model_cfg.tokenizer_path
    key = "model.tokenizer" if model_cfg.tokenizer is not None else "model.name_or_path"
    local = local_model_dir(path, key)
    if local is not None and key == "model.name_or_path" and not model_cfg.is_tiny:
        check_model_dir(local, key)  # the base's own tokenizer: report a broken base first, before any work
    if local is None:  # a hub id: fetch it like the weights (cached by huggingface_hub)
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(path, allow_patterns=["tokenizer*", "special_tokens_map.json", "*.model"])
        except Exception as exc:  # network / auth / missing repo: the user needs one line
            raise TuluError(f"{key}: {path}: no such directory, and could not fetch it as a hub model "
                            f"({type(exc).__name__})") from exc
    return load_tokenizer(path, trust_remote_code=model_cfg.trust_remote_code)


# ---- LoRA -----------------------------------------------------------------------------------------------------


def add_lora(model: PreTrainedModel, lora_cfg: LoraSettings):
    """Wrap the frozen base with trainable LoRA adapters on `lora_cfg.target_modules` (fp32 adapter weights)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in lora_cfg.target_modules if name not in present]
    if missing:
        raise TuluError(
            f"lora.target_modules: {', '.join(missing)} not found in {type(model).__name__} "
            f"(linear layers include e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
        )
    peft_cfg = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)
