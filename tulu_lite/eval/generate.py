"""The model under evaluation: loading, batched generation and batched log-likelihood scoring.

Batches are left-padded (so every row ends where its next token goes) and sorted by length (so little compute is
spent on padding); results come back in the caller's order. On a GPU the model loads in bf16 with
`device_map="auto"`; on CPU in fp32 (bf16 is several times slower there).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tulu_lite.errors import TuluError
from tulu_lite.eval.progress import progress
from tulu_lite.eval.prompts import Prompt
from tulu_lite.tokenizer import load_tokenizer

# End-of-turn tokens of common native chat templates (Llama-3, ChatML/Qwen, Phi-3, Gemma).
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>")


def load_model(model_dir: str | os.PathLike):
    """Load a causal LM and its tokenizer from a local HF checkpoint directory, ready for inference."""
    from transformers import AutoModelForCausalLM

    from tulu_lite.model.files import check_model_dir

    path = Path(model_dir)
    check_model_dir(path)  # a truncated or foreign directory is one line naming the file, before any loading
    tokenizer = load_tokenizer(path)
    # bf16 where the GPU has it natively, fp16 on older GPUs (tulu_lite.model.loading.resolve_dtype)
    if torch.cuda.is_available():
        from tulu_lite.model.loading import resolve_dtype

        placement = {"dtype": resolve_dtype("auto"), "device_map": "auto"}
    else:
        placement = {"dtype": torch.float32}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **placement)
    except Exception as exc:  # transformers raises many types; the user needs one line.
        raise TuluError(f"{path}: could not load the model ({type(exc).__name__}: {exc})") from exc
    model.eval()
    return model, tokenizer


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into `input_ids` and `attention_mask`, padding on the left."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory trouble shows up early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@functools.lru_cache(maxsize=8)
def token_kinds(tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """(byte pieces, skipped) of a tokenizer, for `StopOnText`. Byte pieces are sentencepiece's byte-fallback tokens
    (``<0xE7>``): decoding turns a run of them into text together, all of it U+FFFD while its last character is
    incomplete. Skipped are the special tokens decoding drops (eos, padding), which also joins the runs around them."""
    pieces = frozenset(i for token, i in tokenizer.get_vocab().items() if _BYTE_PIECE.fullmatch(token))
    skipped = frozenset(i for i, token in tokenizer.added_tokens_decoder.items()
                        if token.special and tokenizer.decode([i], skip_special_tokens=True) == "")
    return pieces, skipped


class StopOnText(StoppingCriteria):
    """Finish a row once its generated text contains a stop sequence.

    transformers' own `stop_strings` rebuilds a table over the whole vocabulary on every `generate()` call
    (seconds for a 32k vocabulary, per batch). Decoding each row's whole continuation at every step costs time
    that grows with the square of its length, so only a row's tail is decoded. Appending a token changes the
    decoded text only in its last *unit* (the new token, or the run of byte pieces it extends) and a few characters
    before it (a split UTF-8 character completed), so a stop sequence that appears for the first time lies in the
    last `window` tokens once they hold `reach` characters before that unit. A tail starts at a unit's start (never
    inside a run of byte pieces), and its first `MARGIN` characters are not searched: decoding from mid-row may
    differ there (a sentencepiece space dropped, half a character shown as U+FFFD). A row too short for that is
    decoded whole, as the stop rule sees it. A row whose newest token is skipped by decoding (eos, padding after
    the row ended) keeps its text and its answer. The result is that of searching the whole continuation at every
    step (tested against it on four vocabularies).
    """

    MARGIN = 8  # characters at the start of a tail that decoding from mid-row may change

    def __init__(self, tokenizer, stop: Sequence[str], prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, [s for s in stop if s], prompt_width
        self.reach = max((len(s) for s in self.stop), default=0) + 2 * self.MARGIN
        # tokens: most hold two characters or more; doubled for the rows where they do not
        self.window = self.reach // 2 + 1
        self.pieces, self.skipped = token_kinds(tokenizer)
        self.glue = self.pieces | self.skipped  # tokens a run of byte pieces decodes across
        self.done: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width:]
        self.done = self.done or [False] * len(new)
        newest = new[:, -1].tolist()
        pending = [row for row, done in enumerate(self.done) if not done and newest[row] not in self.skipped]
        for row, text in self._tails(new, pending).items():
            self.done[row] = any(s in text for s in self.stop)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _tails(self, new: torch.Tensor, rows: list[int]) -> dict[int, str]:
        """row -> the text to search: the whole continuation, or a tail that holds every new stop sequence."""
        decode = functools.partial(self.tokenizer.batch_decode, skip_special_tokens=True)
        tails, width = {}, self.window
        while rows:
            if width >= new.shape[1]:
                return tails | dict(zip(rows, decode(new[rows].tolist())))
            blocks = new[rows, -width - 1:].tolist()  # each window, after the token before it
            windows = [block[1:] for block in blocks]
            texts = decode(windows + [window[:self._last_unit(window)] for window in windows])
            short = []
            for i, (row, block) in enumerate(zip(rows, blocks)):
                inside_a_run = block[0] in self.glue and block[1] in self.glue
                if not inside_a_run and len(texts[len(rows) + i]) >= self.reach:
                    tails[row] = texts[i][self.MARGIN:]
                else:
                    short.append(row)
            rows, width = short, width * 2
        return tails

    def _last_unit(self, window: list[int]) -> int:
        """Where the last unit of `window` starts: its newest token, or the run of byte pieces that token ends."""
        start = len(window) - 1
        if window[start] in self.pieces:
            while start > 0 and window[start - 1] in self.glue:
                start -= 1
        return start


@dataclass
class LanguageModel:
    """A loaded model + tokenizer with the three operations the tasks need."""

    model: object
    tokenizer: object
    batch_size: int = 8
    seed: int = 42
    eos_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        # A native chat template may end turns with a token other than eos (<|eot_id|>, <|im_end|>): stop on the
        # tokenizer's eos, on what the model's generation config lists, and on known end-of-turn tokens it has.
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        vocab = self.tokenizer.get_vocab()
        turn_ends = [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
        ids = [self.tokenizer.eos_token_id, *configured, *turn_ends]
        self.eos_ids = list(dict.fromkeys(i for i in ids if i is not None))

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def encode(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens).input_ids

    def generate(self, prompts: Sequence[Prompt], *, max_new_tokens: int, stop: Sequence[str] = (),
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 description: str = "generating") -> list[str]:
        """The raw continuation of every prompt (greedy when `temperature` is 0).

        A row stops early once its text contains a stop sequence, but the text is returned as generated (it may
        hold the stop sequence and a few characters after it): the task applies its stop rule to it
        (`truncate_at_stop`), so saved outputs can be re-scored under the same rule. `top_k` 0 disables top-k
        when sampling.
        """
        encoded = [self.encode(p) for p in prompts]
        outputs: list[str] = [""] * len(prompts)
        torch.manual_seed(self.seed)
        decoding = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
        with progress(description, len(prompts)) as bar:
            for batch in length_batches([len(ids) for ids in encoded], self.batch_size):
                texts = self._generate_batch([encoded[i] for i in batch], max_new_tokens, stop, decoding)
                for i, text in zip(batch, texts):
                    outputs[i] = text
                bar.advance(0, len(batch))
        return outputs

    @torch.no_grad()
    def _generate_batch(self, rows: list[list[int]], max_new_tokens: int, stop: Sequence[str],
                        decoding: dict) -> list[str]:
        input_ids, mask = left_pad(rows, self.tokenizer.pad_token_id)
        options: dict = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                         "eos_token_id": self.eos_ids}
        if decoding["temperature"] > 0:
            options.update(do_sample=True, **decoding)
        else:
            # Explicit None so a checkpoint's sampling defaults (e.g. temperature 0.6) cannot leak into greedy runs.
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            options["stopping_criteria"] = StoppingCriteriaList([StopOnText(self.tokenizer, stop, input_ids.shape[1])])
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), **options)
        new_tokens = out[:, input_ids.shape[1]:].tolist()
        return [self._continuation(row, new) for row, new in zip(rows, new_tokens)]

    def _continuation(self, prompt_ids: list[int], new_ids: list[int]) -> str:
        # Decoding the new tokens alone loses a leading space with sentencepiece tokenizers (fatal for code), so
        # decode prompt+continuation and remove the decoded prompt.
        decode = self.tokenizer.decode
        full = decode(prompt_ids + new_ids, skip_special_tokens=True)
        head = decode(prompt_ids, skip_special_tokens=True)
        return full[len(head):] if full.startswith(head) else decode(new_ids, skip_special_tokens=True)

    def continuation_logprobs(self, pairs: Sequence[tuple[Prompt, str]], description: str = "scoring") -> list[float]:
        """Sum of log-probabilities of each continuation's tokens given its prompt.

        Prompt and continuation are tokenized together (as the model would read them); the continuation's tokens
        are those whose characters lie after the prompt, found from the tokenizer's offsets.
        """
        return self._tail_logprobs([self._joint_tokens(p, c) for p, c in pairs], description)

    def prefix_logprobs(self, items: Sequence[tuple[str, str, int]], description: str = "scoring") -> list[float]:
        """open-instruct's way of scoring a continuation: for each (prefix, full text, skip), tokenize both texts
        on their own (with special tokens) and sum the log-probabilities of the full text's tokens from position
        len(prefix tokens) + skip on. TruthfulQA's MC scoring skips 3 tokens ("\\nA:"); its judges skip none."""
        rows = []
        for prefix, full, skip in items:
            ids = self.tokenizer(full).input_ids
            start = len(self.tokenizer(prefix).input_ids) + skip
            rows.append((ids, min(max(len(ids) - start, 0), len(ids) - 1)))  # the first token has no context
        return self._tail_logprobs(rows, description)

    def _tail_logprobs(self, rows: Sequence[tuple[list[int], int]], description: str) -> list[float]:
        """For each (token ids, n): the summed log-probabilities of the last n tokens given the ones before."""
        scores: list[float] = [0.0] * len(rows)
        with progress(description, len(rows)) as bar:
            for batch in length_batches([len(ids) for ids, _ in rows], self.batch_size):
                keep = max(rows[i][1] for i in batch) + 1
                logprobs = self._last_logprobs([rows[i][0] for i in batch], keep)
                for j, i in enumerate(batch):
                    ids, span = rows[i]
                    if span == 0:
                        continue
                    targets = torch.tensor(ids[-span:], device=logprobs.device)
                    # position t predicts token t+1: the n scored tokens are predicted by the n positions before
                    # the last one.
                    picked = logprobs[j, keep - 1 - span:keep - 1].gather(-1, targets[:, None])
                    scores[i] = float(picked.sum())
                bar.advance(0, len(batch))
        return scores

    def _joint_tokens(self, prompt: Prompt, continuation: str) -> tuple[list[int], int]:
        enc = self.tokenizer(prompt.text + continuation, add_special_tokens=prompt.add_special_tokens,
                             return_offsets_mapping=True)
        boundary = len(prompt.text)
        inside = [i for i, (_, end) in enumerate(enc.offset_mapping) if end > boundary]
        if not inside or inside[0] == 0:
            raise TuluError(f"cannot score continuation {continuation!r}: it has no tokens after the prompt")
        ids = enc.input_ids[: inside[-1] + 1]  # drop special tokens a tokenizer may append (eos)
        return ids, len(ids) - inside[0]

    def next_token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int],
                            description: str = "scoring") -> list[list[float]]:
        """Log-probabilities of the given candidate tokens as the next token after each prompt."""
        rows = [self.encode(p) for p in prompts]
        results: list[list[float]] = [[] for _ in prompts]
        with progress(description, len(prompts)) as bar:
            for batch in length_batches([len(r) for r in rows], self.batch_size):
                logprobs = self._last_logprobs([rows[i] for i in batch], 1)
                picked = logprobs[:, -1, list(token_ids)].tolist()
                for j, i in enumerate(batch):
                    results[i] = picked[j]
                bar.advance(0, len(batch))
        return results

    @torch.no_grad()
    def _last_logprobs(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Log-softmax over the vocabulary at the last `keep` positions of each (left-padded) row."""
        input_ids, mask = left_pad(rows, self.tokenizer.pad_token_id)
        # Left padding shifts positions unless they are given explicitly (generate() does this itself). RoPE would
        # not notice (it only sees relative positions), learned absolute positions (GPT-2, OPT) would.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), logits_to_keep=keep)
        return torch.log_softmax(out.logits[:, -keep:, :].float(), dim=-1)

