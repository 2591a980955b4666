"""Version workarounds: what tulu-lite does only because of how a library behaves in the versions it runs on.

Each says why, which library version or upstream issue, and when it can go. Workarounds that must be a method or
a callback live where they act, and are listed here so that one place holds them all:

- `tulu_lite.train.trainer.TuluSFTTrainer._save_checkpoint`: transformers has no public hook around the
  Trainer's own checkpoint writes (a full disk must be one line).
- `tulu_lite.train.trainer.TuluSFTTrainer.compute_loss`: on CPU, the model's own cross-entropy instead of TRL's
  chunked LM head (measured 2-4x faster with trl 1.16).
- `tulu_lite.train.callbacks.SamplerEpoch`: transformers' `set_epoch` does not reach a batch sampler wrapped twice
  by accelerate after --resume.
- `tulu_lite.model.loading`: the `is_gradient_checkpointing` FutureWarning filter (peft 0.21 on transformers 5).
- `tulu_lite.model.tiny.tiny_llama_dir`: `should_save_on_this_rank` (transformers saves only on rank 0).
"""

from __future__ import annotations

import logging

import torch

# ---- resume: transformers' cadence warning ------------------------------------------------------------------------


class DropCadenceWarning(logging.Filter):
    """Drops transformers' warning, on resume, that logging/eval/save steps differ from the checkpoint's.

    `check_resume` accepted those changes and `ResumeState` applies them, so the warning would only mislead.
    transformers 5 (trainer_utils.py) logs it on every resume with a changed cadence; remove when it stops
    warning about intervals the caller chose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "do not match the ones in the `trainer_state.json`" not in record.getMessage()


def quiet_cadence_warning() -> None:
    """Install `DropCadenceWarning` on transformers' logger (once)."""
    log = logging.getLogger("transformers.trainer_utils")
    if not any(isinstance(existing, DropCadenceWarning) for existing in log.filters):
        log.addFilter(DropCadenceWarning())


# ---- QLoRA: adapter dtype and bitsandbytes' CPU kernel ------------------------------------------------------------


def keep_adapters_fp32(model) -> None:
    """Cast the trainable (LoRA) weights back to fp32 after SFTTrainer cast them to bf16.

    SFTTrainer casts the LoRA weights of a quantized base to bf16 (trl sft_trainer.py, "QLoRA ... converted to
    bf16", pending peft#2889). On CPU that is ~4x slower, and everywhere small AdamW updates vanish in bf16, so we
    keep fp32 master weights (compute still runs in the bnb compute dtype / autocast). Remove when TRL makes the
    cast optional.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def use_training_matmul(model) -> None:
    """Keep every 4-bit layer on the computation training does: dequantize, then matmul in the compute dtype.

    bitsandbytes 0.50 (fused CPU kernel, bitsandbytes PR #1804) runs eval-mode CPU forwards of Linear4bit in bf16
    on weights it repacks in place, on the first such forward. Training: that kernel has no autograd, so after the
    first held-out evaluation the steps would lose the gradient through every 4-bit layer (torch warns "an
    autograd kernel was not registered"). Merging: it is not the trained computation (it moved the tiny model's
    logits by ~1e-2 relative), and repacked weights no longer dequantize with `dequantize_4bit` (same family as
    bitsandbytes#2078), so merge's reference logits would be wrong. Remove when bitsandbytes no longer enables
    that fast path by default.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
