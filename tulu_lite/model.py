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
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tulu_lite.config import (
    TINY_LLAMA_NAME,
    Dtype,
    LoraConfig,
    ModelConfig,
    QuantizationConfig,
    local_model_dir,
)
from tulu_lite.errors import TuluError

# peft 0.21 reads the `is_gradient_checkpointing` attribute that transformers 5 deprecated (one FutureWarning per
# model); silence exactly that message until peft reads `is_activation_checkpointing`.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

# `model.name_or_path: tiny-llama` (TINY_LLAMA_NAME) builds this instead of loading weights, so the whole pipeline
# runs on a laptop CPU with no download. initializer_range=0.2 (not LLaMA's 0.02) matters: with 0.02 the frozen
# random lm_head caps the logits and LoRA cannot teach the model anything; with 0.2 it learns a small chat task in
# ~60 steps.
__all__ = ["TINY_LLAMA_NAME", "tiny_llama_config", "build_tiny_llama", "resolve_dtype", "load_base_model", "add_lora",
           "check_model_dir", "check_safetensors", "base_fingerprint", "fingerprint_differences"]


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


# ---- dtypes ---------------------------------------------------------------------------------------------------


def resolve_dtype(name: Dtype) -> torch.dtype:
    """``auto`` is bfloat16 on an accelerator that has it and float32 otherwise (bf16 is ~4x slower on CPU)."""
    has_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if name == "auto":
        return torch.bfloat16 if has_bf16 else torch.float32
    if name == "bfloat16" and torch.cuda.is_available() and not has_bf16:
        raise TuluError("model.dtype: bfloat16 is not supported by this GPU; use float16 or float32 (or auto)")
    if name == "float16" and not torch.cuda.is_available():
        raise TuluError("model.dtype: float16 training needs a CUDA GPU; use float32 (or auto) on CPU")
    return getattr(torch, name)


# ---- loading --------------------------------------------------------------------------------------------------


def load_base_model(
    model_cfg: ModelConfig, quant_cfg: QuantizationConfig | None, *, device_map: str | dict | None = None
) -> PreTrainedModel:
    """Load the frozen base exactly as the recipe describes it (the same call rebuilds it for merging).

    With `quant_cfg` the linear layers load in 4 bits (nf4/fp4, optional double quantization) through bitsandbytes
    and the model goes through PEFT's `prepare_model_for_kbit_training` (norms and embeddings upcast to fp32,
    everything frozen). ``tiny-llama`` is built from its seed and saved to a cache directory first, then loaded
    from there like any other base, so quantization and merging see real weights on disk.
    """
    source = tiny_llama_dir(model_cfg) if model_cfg.is_tiny else model_cfg.name_or_path
    dtype = resolve_dtype(model_cfg.dtype)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": model_cfg.trust_remote_code, "device_map": device_map}
    # Pickled (.bin) weights can run code when loaded; refuse them unless the recipe opts in.
    kwargs["use_safetensors"] = None if model_cfg.allow_pickle_weights else True
    if quant_cfg is not None:
        kwargs["quantization_config"] = bits_and_bytes_config(quant_cfg)
    model = _from_pretrained(source, model_cfg, kwargs)
    if quant_cfg is not None:
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing is switched on by the trainer (training.gradient_checkpointing), not here.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def bits_and_bytes_config(quant_cfg: QuantizationConfig):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_cfg.quant_type,
        bnb_4bit_use_double_quant=quant_cfg.double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(quant_cfg.compute_dtype),
    )


def _from_pretrained(source: str, model_cfg: ModelConfig, kwargs: dict) -> PreTrainedModel:
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
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local is None:
            raise TuluError(f"model.name_or_path: {source}: no such directory, and could not load it as a hub "
                            f"model: {first_line}") from exc
        raise TuluError(f"model.name_or_path: {source}: could not load the model: {first_line}{hint}") from exc


def load_recipe_tokenizer(model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
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


def read_json_object(file: Path) -> dict:
    """A JSON file that must hold an object; anything else is one line naming the file (and line)."""
    try:
        data = json.loads(file.read_bytes())
    except json.JSONDecodeError as exc:
        raise TuluError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise TuluError(f"{file}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(data, dict):
        raise TuluError(f"{file}: expected a JSON object, got a {type(data).__name__}")
    return data


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


def tiny_llama_dir(model_cfg: ModelConfig) -> str:
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    sizes = {"hidden_size": model_cfg.tiny.hidden_size, "num_layers": model_cfg.tiny.num_layers}
    build_tiny_llama(tokenizer, seed=model_cfg.tiny.seed, **sizes).save_pretrained(tmp)
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


def add_lora(model: PreTrainedModel, lora_cfg: LoraConfig):
    """Wrap the frozen base with trainable LoRA adapters on `lora_cfg.target_modules` (fp32 adapter weights)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in lora_cfg.target_modules if name not in present]
    if missing:
        raise TuluError(
            f"lora.target_modules: {', '.join(missing)} not found in {type(model).__name__} "
            f"(linear layers include e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
        )
    peft_cfg = PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)
