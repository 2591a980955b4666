"""Model: load a base (optionally 4-bit nf4 through bitsandbytes), or build the embedded tiny LLaMA, and wrap LoRA."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tulu_lite.errors import TuluError, first_line
from tulu_lite.json_files import read_json_object
from tulu_lite.outputs import remove_stale_temporaries
from tulu_lite.recipe import (
    TINY_LLAMA_NAME,
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

# `model.name_or_path: tiny-llama` (TINY_LLAMA_NAME) builds this instead of loading weights, so the whole pipeline
# runs on a laptop CPU with no download. initializer_range=0.2 (not LLaMA's 0.02) matters: with 0.02 the frozen
# random lm_head caps the logits and LoRA cannot teach the model anything; with 0.2 it learns a small chat task in
# ~60 steps.
__all__ = ["TINY_LLAMA_NAME", "tiny_llama_config", "build_tiny_llama", "resolve_dtype", "resolve_attention",
           "load_base_model", "add_lora", "check_model_dir", "check_safetensors", "base_fingerprint",
           "fingerprint_differences"]


def tiny_llama_config(vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2) -> LlamaConfig:
    """The embedded default architecture: a 2-layer LLaMA small enough to train on CPU in minutes."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        initializer_range=0.2,
        tie_word_embeddings=False,
    )


def build_tiny_llama(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **sizes: int) -> LlamaForCausalLM:
    """A randomly initialised tiny LLaMA whose vocabulary matches `tokenizer` (deterministic for a seed)."""
    config = tiny_llama_config(len(tokenizer), **sizes)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


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


# ---- model directories: checked before transformers reads them ---------------------------------------------------
# transformers reports a truncated weights file as "SafetensorError: incomplete metadata, file not fully covered"
# and a broken config.json as a bare JSONDecodeError, neither naming the file; these checks name it, in one line.

def check_model_dir(path: str | os.PathLike, key: str | None = None) -> None:
    """Raise one `TuluError` naming the file if `path` is not a loadable HF model directory.

    Checks what transformers would otherwise fail on deep inside: the directory exists and is not an adapter,
    config.json is a JSON object, every weights file is there (a shard index names only existing files) and
    every safetensors file is complete (`check_safetensors`). Cheap: reads headers, never the weights.
    """
    path = Path(path)
    prefix = f"{key}: " if key else ""
    if not path.is_dir():
        raise TuluError(f"{prefix}{path}: model directory not found")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise TuluError(f"{prefix}{path}: is a LoRA adapter, not a model (merge it first: tulu-lite merge "
                            f"{path} -o DIR)")
        raise TuluError(f"{prefix}{path}: not a model directory (no config.json)")
    read_json_object(path / "config.json")
    for index in path.glob("*.index.json"):
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise TuluError(f"{index}: not a shard index (no weight_map)")
        missing = sorted({str(name) for name in weight_map.values()} - {p.name for p in path.iterdir()})
        if missing:
            raise TuluError(f"{index}: names {missing[0]}, which is missing from {path} (incomplete copy?)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        raise TuluError(f"{prefix}{path}: config.json but no weights (model*.safetensors)")
    for file in weights:
        check_safetensors(file)


# A safetensors header is at most 100 MB (the format's own limit).
_MAX_HEADER = 100_000_000


def check_safetensors(file: str | os.PathLike) -> dict:
    """Check that a safetensors file is complete and return its header (tensor name -> dtype, shape, offsets).

    The format: an 8-byte little-endian header length, a JSON header, then the data; a complete file ends exactly
    where the last tensor's data ends. A truncated download or copy, or another file renamed, fails here.
    """
    file = Path(file)
    header, length = _safetensors_header(file)
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise TuluError(f"{file}: not a safetensors file (tensor {name!r} has no data offsets)")
        ends.append(offsets[1])
    expected, size = 8 + length + max(ends, default=0), file.stat().st_size
    if size < expected:
        raise TuluError(f"{file}: truncated: {size:,} bytes, its header describes {expected:,} "
                        f"(an interrupted download or copy?)")
    if size > expected:
        raise TuluError(f"{file}: corrupt: {size - expected:,} bytes after the last tensor")
    return header


def _safetensors_header(file: Path) -> tuple[dict, int]:
    with file.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if length < 2 or length > _MAX_HEADER or 8 + length > file.stat().st_size:
            raise TuluError(f"{file}: not a complete safetensors file ({file.stat().st_size:,} bytes: truncated, or "
                            f"another format)")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TuluError(f"{file}: not a safetensors file, or corrupt (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise TuluError(f"{file}: not a safetensors file, or corrupt (its header is not a JSON object)")
    return header, length


# ---- base fingerprints: did the base change between training and merging? ---------------------------------------
# Hashing a 13 GB base takes minutes; what tells two bases apart is cheaper. The safetensors header lists every
# tensor's name, dtype, shape and byte range, so a different architecture, size or dtype changes it. Two bases
# with the same layout (LLaMA-1 vs LLaMA-2 7B, a base vs its fine-tune) differ in the values of every tensor,
# so the first and last 4 KiB of each tensor's data are hashed too: a few MB of reads for a 7B model, and no
# retraining or re-download leaves them all equal. What it cannot see is an edit to the middle of a tensor that
# leaves both ends intact (deliberate tampering, not a changed base). config.json is hashed whole.
FINGERPRINT_METHOD = "safetensors header + first/last 4 KiB of every tensor, sha256"
_SAMPLE = 4096


def base_fingerprint(model_dir: str | os.PathLike) -> dict:
    """A cheap fingerprint of a model directory's weights and config (see above); JSON-serialisable."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    files = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        header, length = _safetensors_header(file)
        header_digest, samples = hashlib.sha256(), hashlib.sha256()
        with file.open("rb") as handle:
            header_digest.update(handle.read(8 + length))
            for entry in sorted((e for n, e in header.items() if n != "__metadata__"), key=lambda e: e["data_offsets"]):
                begin, end = entry["data_offsets"]
                for start in sorted({begin, max(begin, end - _SAMPLE)}):
                    handle.seek(8 + length + start)
                    samples.update(handle.read(min(_SAMPLE, end - start)))
        files[file.name] = {"size": file.stat().st_size, "header_sha256": header_digest.hexdigest(),
                            "sample_sha256": samples.hexdigest()}
    return {"method": FINGERPRINT_METHOD,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
            "files": files}


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two `base_fingerprint`s, in words (empty when they match)."""
    differences = []
    if recorded.get("config_sha256") != current.get("config_sha256"):
        differences.append("config.json differs")
    then, now = recorded.get("files", {}), current.get("files", {})
    differences += [f"{name} is gone" for name in sorted(then.keys() - now.keys())]
    differences += [f"{name} is new" for name in sorted(now.keys() - then.keys())]
    for name in sorted(then.keys() & now.keys()):
        before, after = then[name], now[name]
        if before.get("size") != after.get("size"):
            differences.append(f"{name} was {before.get('size'):,} bytes, is {after.get('size'):,}")
        elif before.get("header_sha256") != after.get("header_sha256"):
            differences.append(f"{name} holds other tensors (names, shapes or dtypes)")
        elif before.get("sample_sha256") != after.get("sample_sha256"):
            differences.append(f"{name} holds other weights")
    return differences


def model_files_dir(name_or_path: str) -> Path | None:
    """The directory holding a base's files: the local directory, or a hub model's snapshot in the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not cached (or not a valid id): nothing to fingerprint
        return None


# ---- the embedded tiny LLaMA -----------------------------------------------------------------------------------


def tiny_llama_dir(model_cfg: ModelSettings) -> str:
    """Build the recipe's tiny LLaMA once and return the cache directory holding it as a normal HF checkpoint.

    The directory name is a hash of everything the weights depend on (tokenizer vocabulary and special ids, sizes,
    seed, torch and transformers versions), so training and a later merge load byte-identical weights. The cache
    is ``$TULU_LITE_CACHE`` or ``~/.cache/tulu_lite``. Two processes (data-parallel launch) may build it at once;
    each builds in a private temporary directory and the first rename wins.
    """
    import transformers

    tokenizer = load_recipe_tokenizer(model_cfg)
    key = {
        "vocab": len(tokenizer),
        "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "sizes": model_cfg.tiny.model_dump(),
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    target = _cache_root() / f"tiny-llama-{digest}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)  # a build killed half-way (its pid is in the name) is not left forever
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    sizes = {"hidden_size": model_cfg.tiny.hidden_size, "num_layers": model_cfg.tiny.num_layers}
    model = build_tiny_llama(tokenizer, seed=model_cfg.tiny.seed, **sizes)
    # Once a process group exists, transformers writes weights only on global rank 0 (distributed/mixin.py,
    # `should_save_on_this_rank`); here whichever process comes first builds the (seeded, identical) base, and a
    # directory without weights must never win the rename.
    model.should_save_on_this_rank = lambda is_main_process: True
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; its weights are identical
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _cache_root() -> Path:
    return Path(os.environ.get("TULU_LITE_CACHE", Path.home() / ".cache" / "tulu_lite")).expanduser()


def weights_sha256(model_dir: str | os.PathLike) -> str:
    """Fingerprint of a checkpoint's safetensors files (lets merge check it rebuilt the very same base)."""
    digest = hashlib.sha256()
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
