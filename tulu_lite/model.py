"""Model: load a base (optionally 4-bit nf4 through bitsandbytes), or build the embedded tiny LLaMA, and wrap LoRA."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

# `model.name_or_path: tiny-llama` builds this instead of loading weights, so the whole pipeline runs on a laptop
# CPU with no download. initializer_range=0.2 (not LLaMA's 0.02) matters: with 0.02 the frozen random lm_head
# caps the logits and LoRA cannot teach the model anything; with 0.2 it learns a small chat task in ~60 steps.
TINY_LLAMA_NAME = "tiny-llama"


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
