"""Verification: read the written GGUF back independently and compare it with the model it came from.

The file is loaded by transformers' own GGUF reader (``from_pretrained(..., gguf_file=...)``: its tensor-name
table, its reverse q/k permutation, its dequantisers, its config and tokenizer rebuilt from the metadata alone),
from a directory holding nothing but the file, so no config.json or tokenizer.json can stand in for what the file
says. Three checks, all on fixed inputs:

1. **as written** -- logits of the file vs MODEL_DIR with each weight rounded exactly as it was stored (F16, BF16,
   Q8_0 or Q4_0 round trip through gguf's quantisers). Same weights, same float32 arithmetic: they agree to float32
   summation noise (tolerance 1e-4 of the largest logit), whatever the type. A mis-mapped or mis-permuted tensor,
   a wrong hyper-parameter (norm epsilon, rope base, head counts) or a lost tied embedding shows up here, at full
   size.
2. **vs original** -- logits of the file vs MODEL_DIR unchanged: what the type costs. Max |difference| within the
   type's bound (relative to the largest logit) and top-1 agreement at least the type's minimum (`PRECISION`).
3. **tokenizer** -- token ids of sample texts (unicode, whitespace runs, the tulu markers, the prompts) identical
   between MODEL_DIR's tokenizer and the one rebuilt from the file, and the same BOS/EOS/UNK/PAD ids.

The SentencePiece-style vocabulary is read as llama.cpp reads it: llama.cpp puts a space before the text after a
special token (llama-vocab.cpp, "prefix with space if previous is special"); transformers' GGUF tokenizer builds
its Metaspace with ``prepend_scheme="first"`` and would not. The check sets ``"always"`` (llama.cpp's reading, and
LLaMA's ``legacy=True`` tokenization that tulu-lite trains with) and changes nothing else.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tulu_lite.errors import TuluError, first_line
from tulu_lite.export.gguf_file import (
    Hyperparameters,
    as_written,
    gguf_name,
    tensor_name_map,
    tensor_type,
)
from tulu_lite.merge.verify import (  # merge's check, reused on the file
    LogitsDiff,
    logits_diff,
    logits_on,
)

# Conversations the logits are compared on, rendered with the chat template the file carries: a single turn, a
# system turn, and a multi-turn history (an end-of-turn token inside the prompt).
VERIFY_CONVERSATIONS: list[list[dict]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Give me three tips for learning Python."}],
]

# Texts whose token ids must be identical: unicode (accents, CJK, Greek, emoji: byte fallback), runs of spaces,
# tabs and newlines, leading/trailing whitespace, digits, and the tulu markers with </s> inside the text.
SAMPLE_TEXTS: list[str] = [
    "Hello world",
    "  two  spaces,\tand\ta tab\n\n\nthree newlines   ",
    "ünïcödé: naïve café, 日本語のテキスト, Ελληνικά, emoji 🦙🚀 and ✅",
    "<|user|>\nHi there\n<|assistant|>\nHello!</s>\n<|user|>\nThanks</s>",
    "<|system|>\nBe brief.\n<|user|>\n  spaced   out  \n<|assistant|>\n",
    "Numbers: 3 33 333 3333, 3.14159, 1,000,000 and x^2 + y^2 = z^2",
    "   leading spaces",
    "trailing spaces   ",
    "\n",
    "",
]

# What each type may cost: the largest |logit difference| allowed, relative to the largest |logit| of the original
# model, and the least top-1 agreement. Measured (max relative, top-1) on the tests' tiny random LLaMA (weights
# ~10x a trained model's: the worst case) / the trained demo model: f16 0.21% 100% / 0.26% 100%; bf16 2.2% 96% /
# 2.0% 100%; q8_0 5.5% 95.5% / 2.7% 99.1%; q4_0 75% 21% / 80% 73%. Bounds leave about 2x over the worst. For q4_0
# the max bound (the largest logit itself) only catches a broken file; its top-1 minimum is the real measure, and
# a model that 4 bits ruin (the random one) is refused rather than released.
PRECISION: dict[str, tuple[float, float]] = {
    "f16": (5e-3, 0.99),
    "bf16": (5e-2, 0.90),
    "q8_0": (1e-1, 0.90),
    "q4_0": (1.0, 0.60),
}
# The "as written" check: the same weights and the same float32 arithmetic, so only summation-order noise.
AS_WRITTEN_TOLERANCE = 1e-4


# ---- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerCheck:
    texts: int
    differing: int
    first_difference: str | None  # the first text whose ids differ, and the ids, for the error line
    special_ids: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)  # name: (model, file)

    @property
    def special_mismatches(self) -> list[str]:
        return [name for name, (ours, theirs) in self.special_ids.items() if ours != theirs]

    @property
    def passed(self) -> bool:
        return self.differing == 0 and not self.special_mismatches


@dataclass(frozen=True)
class Verification:
    gguf_type: str
    prompts: int
    positions: int
    reference_scale: float  # largest |logit| of MODEL_DIR on the prompts: the scale tolerances are relative to
    as_written: LogitsDiff
    as_written_tolerance: float
    original: LogitsDiff
    original_bound: float
    top1_minimum: float
    tokenizer: TokenizerCheck

    def failures(self) -> list[str]:
        """One phrase per failed check (empty when the file is right)."""
        problems = []
        if not self.as_written.max_abs <= self.as_written_tolerance:
            problems.append(f"logits differ from the model with its weights as written by "
                            f"{self.as_written.max_abs:.3g} (tolerance {self.as_written_tolerance:.3g}): a tensor "
                            f"or hyper-parameter was not written as llama.cpp reads it")
        if not self.original.max_abs <= self.original_bound:
            problems.append(f"logits differ from MODEL_DIR by {self.original.max_abs:.3g}, over the {self.gguf_type} "
                            f"bound {self.original_bound:.3g}")
        if self.original.top1_agreement < self.top1_minimum:
            problems.append(f"top-1 agreement {self.original.top1_agreement:.1%} is below the {self.gguf_type} "
                            f"minimum {self.top1_minimum:.0%}")
        check = self.tokenizer
        if check.differing:
            problems.append(f"tokenizer ids differ on {check.differing} of {check.texts} texts "
                            f"(first: {check.first_difference})")
        for name in check.special_mismatches:
            ours, theirs = check.special_ids[name]
            problems.append(f"{name} id is {theirs} in the file, {ours} in MODEL_DIR")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures()


# ---- the checks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """MODEL_DIR's side of the comparison, computed before the file is read so that MODEL_DIR can be freed first."""

    prompts: list[torch.Tensor]
    prompt_texts: list[str]
    original: list[torch.Tensor]  # logits of MODEL_DIR
    as_written: list[torch.Tensor]  # logits of MODEL_DIR with its weights rounded as the file stores them


def reference_logits(model, tokenizer, hp: Hyperparameters, gguf_type: str, chat_template: str | None) -> Reference:
    """Logits of `model` as it is and as written. Rounds `model`'s weights in place: drop it afterwards."""
    texts, templated = prompts_text(tokenizer, chat_template)
    prompts = [torch.tensor([tokenizer(text, add_special_tokens=not templated).input_ids]) for text in texts]
    original = logits_on(model, prompts)
    round_as_written(model, hp, gguf_type)
    return Reference(prompts, texts, original, logits_on(model, prompts))


def verify_file(reference: Reference, tokenizer, gguf_path: Path, gguf_type: str) -> Verification:
    """Read the file at `gguf_path` back and run the three checks against `reference`."""
    with readable_alone(gguf_path) as (directory, name):
        written = logits_on(load_gguf_model(directory, name), reference.prompts)
        tokenizer_check = compare_tokenizers(tokenizer, load_gguf_tokenizer(directory, name), reference.prompt_texts)
    scale = max(float(logits.abs().max()) for logits in reference.original)
    bound, top1 = PRECISION[gguf_type]
    return Verification(
        gguf_type=gguf_type,
        prompts=len(reference.prompts),
        positions=sum(ids.shape[-1] for ids in reference.prompts),
        reference_scale=scale,
        as_written=logits_diff(reference.as_written, written),
        as_written_tolerance=AS_WRITTEN_TOLERANCE * scale,
        original=logits_diff(reference.original, written),
        original_bound=bound * scale,
        top1_minimum=top1,
        tokenizer=tokenizer_check,
    )


def prompts_text(tokenizer, chat_template: str | None) -> tuple[list[str], bool]:
    """The verification conversations as prompt text, and whether a chat template rendered them (it then writes
    its own BOS); otherwise in the tulu format, whose BOS comes from the tokenizer.

    A template that refuses a conversation (some reject a system turn) skips it; if it renders none, the tulu
    format is used, so there is always something to compare on.
    """
    from jinja2 import TemplateError

    texts = []
    for messages in VERIFY_CONVERSATIONS if chat_template else []:
        try:
            texts.append(tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                                       add_generation_prompt=True))
        except TemplateError:
            continue
    if texts:
        return texts, True
    from tulu_lite.data.chat_format import generation_prompt

    return [generation_prompt(messages, tokenizer, "tulu") for messages in VERIFY_CONVERSATIONS], False


@torch.no_grad()
def round_as_written(model, hp: Hyperparameters, gguf_type: str) -> None:
    """Replace each weight of `model` by its round trip through the GGUF type it was stored in."""
    name_map = tensor_name_map(hp)
    for hf_name, tensor in model.state_dict().items():
        if hp.tied_embeddings and hf_name == "lm_head.weight":
            continue  # the same tensor as the embedding, rounded with it
        weights = tensor.float().numpy()
        qtype = tensor_type(gguf_name(hf_name, hp, name_map), weights.shape, gguf_type)
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(as_written(weights, qtype))))


def compare_tokenizers(ours, theirs, prompts: list[str]) -> TokenizerCheck:
    """Ids of every sample text and prompt (with the tokenizer's own special tokens) and the special token ids."""
    texts = [*SAMPLE_TEXTS, *prompts]
    differing, first = 0, None
    for text in texts:
        expected, got = ours(text).input_ids, theirs(text).input_ids
        if expected != got:
            differing += 1
            if first is None:
                at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
                first = f"{text[:40]!r}: {expected[at:at + 4]} vs {got[at:at + 4]} at token {at}"
    specials = {name: (getattr(ours, f"{name}_token_id"), getattr(theirs, f"{name}_token_id"))
                for name in ("bos", "eos", "unk", "pad")}
    return TokenizerCheck(texts=len(texts), differing=differing, first_difference=first, special_ids=specials)


# ---- reading the file back ------------------------------------------------------------------------------------


@contextlib.contextmanager
def readable_alone(gguf_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh directory holding only (a link to) the file: transformers must rebuild everything from it.

    The output may sit in MODEL_DIR (``merge --gguf``), whose config.json and tokenizer.json would otherwise be
    read instead of the file's metadata.
    """
    with tempfile.TemporaryDirectory(prefix="tulu-lite-gguf-") as directory:
        name = "model.gguf"
        os.symlink(gguf_path.resolve(), Path(directory) / name)
        yield directory, name


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bars (not switchable: tqdm reads TQDM_DISABLE at import) and
    logs a note per metadata key; errors still surface as exceptions, so stderr is set aside while it reads."""
    import io

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)


def load_gguf_model(directory: str, name: str):
    """The file as a transformers model, dequantised to float32 (the precision the reference is computed in)."""
    from transformers import AutoModelForCausalLM

    try:
        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32,
                                                        local_files_only=True).eval()
    except Exception as exc:  # the reader raises many types; the user needs one line
        raise TuluError(f"verification failed: transformers could not load the written file back "
                        f"({type(exc).__name__}: {first_line(exc, '')}); nothing was written") from exc


def load_gguf_tokenizer(directory: str, name: str):
    """The tokenizer rebuilt from the file's metadata, read as llama.cpp reads it (see the module docstring).

    `PreTrainedTokenizerFast` (transformers' `TokenizersBackend`) is the class transformers builds every GGUF
    tokenizer as; going through `AutoTokenizer` would also parse the whole file once more with the slow legacy
    reader only to find that class (minutes for a 128k vocabulary on a busy CPU).
    """
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    try:
        with quiet_loading():
            tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, gguf_file=name, local_files_only=True)
    except Exception as exc:
        raise TuluError(f"verification failed: transformers could not rebuild the tokenizer from the written file "
                        f"({type(exc).__name__}: {first_line(exc, '')}); nothing was written") from exc
    backend = tokenizer.backend_tokenizer
    if isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace) and backend.pre_tokenizer.prepend_scheme == "first":
        backend.pre_tokenizer.prepend_scheme = "always"
    return tokenizer
