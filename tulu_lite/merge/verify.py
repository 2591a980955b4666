"""Verification: a model's logits on a few chat prompts compared with a reference model's, within a tolerance.

The merge compares the merged model with the adapter model as trained (and, for QLoRA, shows how far a naive merge
into the original weights would be). The pieces are generic so that other conversions of a trained model (an
export to another format) can check themselves the same way: `verification_inputs` (prompts formatted as in
training), `logits_on` (float32 CPU logits, one prompt at a time), `logits_diff` (max/mean |difference|, top-1
agreement), `reference_scale` and `RELATIVE_TOLERANCE` / `least_precise` (the tolerance by precision).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tulu_lite.data.chat_format import ChatFormat, generation_prompt
from tulu_lite.errors import TuluError

if TYPE_CHECKING:
    from rich.table import Table

    from tulu_lite.merge import MergeResult

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


# ---- generic: logits on prompts and how far apart they are ----------------------------------------------------


def verification_inputs(tokenizer, template: ChatFormat,
                        conversations: list[list[dict]] = VERIFY_CONVERSATIONS) -> list[torch.Tensor]:
    """The verification prompts as token ids, formatted exactly as the model was trained to be prompted."""
    return [
        torch.tensor([tokenizer(generation_prompt(messages, tokenizer, template),
                                add_special_tokens=template == "tulu").input_ids])
        for messages in conversations
    ]


@torch.no_grad()
def logits_on(model, prompts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 CPU logits of `model` on each prompt (one at a time: no padding to get wrong)."""
    device = model.get_input_embeddings().weight.device
    return [model(input_ids=ids.to(device)).logits[0].float().cpu() for ids in prompts]


def logits_diff(reference: list[torch.Tensor], other: list[torch.Tensor]) -> LogitsDiff:
    """Max and mean |difference| of `other`'s logits from the reference's, and how often their argmax agrees."""
    diffs = [(ref - out).abs() for ref, out in zip(reference, other, strict=True)]
    agree = torch.cat([ref.argmax(-1) == out.argmax(-1) for ref, out in zip(reference, other)])
    return LogitsDiff(
        max_abs=max(float(diff.max()) for diff in diffs),
        mean_abs=float(torch.cat([diff.flatten() for diff in diffs]).mean()),
        top1_agreement=float(agree.float().mean()),
    )


def reference_scale(reference: list[torch.Tensor]) -> float:
    """The largest |logit| of the reference: the scale `RELATIVE_TOLERANCE` is relative to."""
    return max(float(ref.abs().max()) for ref in reference)


def least_precise(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """The least precise of the dtypes the two computations run in: the one that sets the tolerance."""
    return max(dtypes, key=lambda d: RELATIVE_TOLERANCE[d])


# ---- the merge's verification ---------------------------------------------------------------------------------


def compare(reference: list[torch.Tensor], merged: list[torch.Tensor], precision: torch.dtype) -> Verification:
    """Max/mean |difference| and top-1 agreement against the reference, with the tolerance for `precision`."""
    scale = reference_scale(reference)
    return Verification(
        tolerance=RELATIVE_TOLERANCE[precision] * scale,
        reference_scale=scale,
        merged=logits_diff(reference, merged),
        naive=None,
    )


def check_verification(verification: Verification) -> None:
    if not verification.passed:
        raise TuluError(
            f"verification failed: merged logits differ from the adapter model's by {verification.merged.max_abs:.3g} "
            f"(tolerance {verification.tolerance:.3g}); nothing was written (--no-verify writes it anyway)"
        )


def verification_table(result: MergeResult) -> Table:
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
