"""The embedded tiny LLaMA: `model.name_or_path: tiny-llama` builds a small random LLaMA instead of loading one.

It is built from its seed into a cache directory once, then loaded from there like any other base, so training,
quantization, merging and evaluation all see real weights on disk, and a later merge rebuilds byte-identical ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from tulu_lite.model.loading import load_recipe_tokenizer
from tulu_lite.outputs import remove_stale_temporaries
from tulu_lite.recipe import TINY_LLAMA_NAME, ModelSettings

__all__ = ["TINY_LLAMA_NAME", "tiny_llama_config", "build_tiny_llama", "tiny_llama_dir", "weights_sha256"]

# `model.name_or_path: tiny-llama` (TINY_LLAMA_NAME) builds this instead of loading weights, so the whole pipeline
# runs on a laptop CPU with no download. initializer_range=0.2 (not LLaMA's 0.02) matters: with 0.02 the frozen
# random lm_head caps the logits and LoRA cannot teach the model anything; with 0.2 it learns a small chat task in
# ~60 steps.


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


# ---- its cache directory --------------------------------------------------------------------------------------


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
