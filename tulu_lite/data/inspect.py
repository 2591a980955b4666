"""`tulu-lite inspect`: see exactly which tokens of a file carry loss, and how many survive truncation."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich import get_console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from transformers import PreTrainedTokenizerBase

from tulu_lite.data.chat_format import ChatFormat
from tulu_lite.data.encode import (
    IGNORE_INDEX,
    encode_many,
    render_for_training,
    trained_count,
)
from tulu_lite.data.inputs import read_records

TRAINED_STYLE = "bold black on green"
MASKED_STYLES = ("grey62 on grey15", "grey70 on grey23")  # alternate so token boundaries stay visible


@dataclass
class InspectTotals:
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped: int = 0  # no trained token left after truncation
    truncated: int = 0  # cut at max_seq_length but still trained
    shown: list[Text] = field(default_factory=list)


def token_pieces(text: str, tokenizer: PreTrainedTokenizerBase, template: ChatFormat, max_seq_length: int):
    """Each token of `text` with the characters it covers (added special tokens show as themselves)."""
    batch = tokenizer(text, add_special_tokens=template == "tulu", truncation=True, max_length=max_seq_length,
                      return_offsets_mapping=True)
    pieces, covered = [], 0
    for token_id, (start, end) in zip(batch["input_ids"], batch["offset_mapping"]):
        if end <= start:
            pieces.append(tokenizer.convert_ids_to_tokens(token_id))
        else:
            pieces.append(text[max(start, covered):end])  # byte-fallback tokens share a character: show it once
            covered = max(covered, end)
    return pieces


def highlight(pieces: list[str], labels: list[int]) -> Text:
    """A rich Text with trained tokens highlighted and newlines made visible."""
    out = Text()
    for index, (piece, label) in enumerate(zip(pieces, labels)):
        style = TRAINED_STYLE if label != IGNORE_INDEX else MASKED_STYLES[index % 2]
        out.append(piece.replace("\n", "↵\n") if piece else "·", style=style)
    return out


def inspect_file(
    path,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatFormat = "tulu",
    max_seq_length: int = 2048,
    show: int = 3,
    batch_size: int = 256,
) -> InspectTotals:
    """Encode every conversation of `path` (any conversation input: a file, a folder, a hub dataset); count tokens
    and drops, and render the first `show` examples."""
    totals = InspectTotals()
    records = iter(read_records(path))
    with _encoding_progress("examples") as advance:
        while batch := _next_batch(records, batch_size):
            for messages, encoded in zip(batch, encode_many(batch, tokenizer, template, max_seq_length)):
                _count(totals, encoded, max_seq_length)
                if len(totals.shown) < show:
                    totals.shown.append(rendered(messages, encoded["labels"], tokenizer, template, max_seq_length))
            advance(len(batch))
    return totals


@contextmanager
def _encoding_progress(unit: str):
    """A transient bar counting encoded `unit`s; yields the function that advances it."""
    with Progress(TextColumn("[bold]encoding"), BarColumn(), TextColumn(f"{{task.completed:,}} {unit}"),
                  TimeElapsedColumn(), transient=True,
                  disable=get_console().is_jupyter) as progress:  # Jupyter: no ipywidgets warning
        task = progress.add_task("encode", total=None)
        yield lambda count: progress.advance(task, count)


def rendered(messages: list[dict], labels: list[int], tokenizer: PreTrainedTokenizerBase, template: ChatFormat,
             max_seq_length: int) -> Text:
    """`messages` as training sees them, each token highlighted by its label."""
    text = render_for_training(messages, tokenizer, template).text
    return highlight(token_pieces(text, tokenizer, template, max_seq_length), labels)


_BATCH_CHARS = 1 << 20  # a batch of long conversations stays a few MB of text per tokenizer call


def _next_batch(records, size: int) -> list[list[dict]]:
    batch, chars = [], 0
    for record in itertools.islice(records, size):
        batch.append(record["messages"])
        chars += sum(len(message["content"]) for message in record["messages"])
        if chars >= _BATCH_CHARS:
            break
    return batch


def _count(totals: InspectTotals, encoded: dict, max_seq_length: int) -> None:
    trained = trained_count(encoded["labels"])
    totals.examples += 1
    if trained == 0:
        totals.dropped += 1
        return
    totals.tokens += len(encoded["input_ids"])
    totals.trained_tokens += trained
    totals.truncated += len(encoded["input_ids"]) >= max_seq_length


# ---- preference pairs ------------------------------------------------------------------------------------------


@dataclass
class PairInspectTotals:
    """What encoding a pair input keeps: tokens and trained tokens of each side of the kept pairs, and the pairs
    dropped by reason (`tulu_lite.data.pairs.drop_reason`)."""

    pairs: int = 0
    kept: int = 0
    tokens: dict = field(default_factory=lambda: {"chosen": 0, "rejected": 0})
    trained_tokens: dict = field(default_factory=lambda: {"chosen": 0, "rejected": 0})
    truncated: int = 0  # kept pairs with a side cut at max_seq_length
    dropped: dict = field(default_factory=dict)
    shown: list[tuple[Text, Text]] = field(default_factory=list)  # (chosen, rejected) of the first pairs

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


def inspect_pairs(
    path,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatFormat = "tulu",
    max_seq_length: int = 2048,
    show: int = 3,
    batch_size: int = 256,
) -> PairInspectTotals:
    """Encode every preference pair of `path` (any input: a file, a folder, a hub dataset), each side as SFT
    encodes a conversation; count tokens per side and drops by reason, and render the first `show` pairs."""
    from tulu_lite.data.pairs import (
        SIDES,
        drop_reason,
        encode_pairs,
        read_pairs,
    )

    totals = PairInspectTotals()
    records = iter(read_pairs(path))
    with _encoding_progress("pairs") as advance:
        while batch := [(r["chosen"], r["rejected"]) for r in itertools.islice(records, batch_size)]:
            for (chosen, rejected), encoded in zip(batch, encode_pairs(batch, tokenizer, template, max_seq_length)):
                totals.pairs += 1
                trained = tuple(trained_count(encoded[f"{side}_labels"]) for side in SIDES)
                reason = drop_reason(chosen, rejected, encoded, trained, max_seq_length)
                if reason is not None:
                    totals.dropped[reason] = totals.dropped.get(reason, 0) + 1
                    continue
                totals.kept += 1
                for side, count in zip(SIDES, trained):
                    totals.tokens[side] += len(encoded[f"{side}_input_ids"])
                    totals.trained_tokens[side] += count
                totals.truncated += any(len(encoded[f"{side}_input_ids"]) >= max_seq_length for side in SIDES)
                if len(totals.shown) < show:
                    totals.shown.append(tuple(
                        rendered(messages, encoded[f"{side}_labels"], tokenizer, template, max_seq_length)
                        for side, messages in zip(SIDES, (chosen, rejected))))
            advance(len(batch))
    return totals
