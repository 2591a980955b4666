"""Dataset statistics in the shape of the TÜLU paper's Table 1.

Definitions (per example, then averaged over a file's examples):

- **rounds**: user+assistant exchanges, i.e. user messages immediately followed by an assistant message.
- **prompt length**: tokens of the content of every non-assistant message (system and user), summed.
- **completion length**: tokens of the content of every assistant message, summed.

A message's tokens are ``tokenizer(content.strip(), add_special_tokens=False)``: content only, no role headers,
BOS or EOS, so the figures describe the data, not a chat template. Multi-turn examples sum over all their turns.
Tokenization is batched over many messages per call (the fast tokenizer's Rust batch path).
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from tulu_lite.data.inputs import as_source, describe, read_records
from tulu_lite.json_files import write_json
from tulu_lite.outputs import atomic_file

DEFINITIONS = {
    "rounds": "user messages immediately followed by an assistant message",
    "prompt_tokens": "tokens of the content of all system and user messages of an example (no special tokens)",
    "completion_tokens": "tokens of the content of all assistant messages of an example (no special tokens)",
}


def _lengths() -> array:
    return array("l")


@dataclass
class InputStats:
    """What every input's statistics hold: its label, the datasets its records name, and rounds per record."""

    path: str
    name: str = ""  # short label for tables (the file name, or hf:ID)
    datasets: Counter = field(default_factory=Counter)
    rounds: array = field(default_factory=_lengths)

    @property
    def instances(self) -> int:
        return len(self.rounds)

    def average(self, values: array) -> float:
        return sum(values) / len(values) if values else 0.0


@dataclass
class FileStats(InputStats):
    """Table-1 columns for one file, plus the per-example lengths behind them."""

    prompt_lengths: array = field(default_factory=_lengths)
    completion_lengths: array = field(default_factory=_lengths)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "datasets": dict(self.datasets),
            "instances": self.instances,
            "avg_rounds": round(self.average(self.rounds), 3),
            "avg_prompt_tokens": round(self.average(self.prompt_lengths), 2),
            "avg_completion_tokens": round(self.average(self.completion_lengths), 2),
            "prompt_tokens": _quantiles(self.prompt_lengths),
            "completion_tokens": _quantiles(self.completion_lengths),
        }


def _quantiles(values: array) -> dict:
    if not values:
        return {"p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "max": ordered[-1]}


def count_rounds(messages: list[dict]) -> int:
    """User messages directly followed by an assistant message."""
    return sum(1 for first, second in zip(messages, messages[1:])
               if first["role"] == "user" and second["role"] == "assistant")


_BATCH_CHARS = 1 << 20  # characters per tokenizer call: a batch of long conversations stays a few MB


def _batches(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Lists of up to `size` records, cut early at about `_BATCH_CHARS` characters of content."""
    batch, chars = [], 0
    for record in records:
        batch.append(record)
        chars += sum(len(message["content"]) for message in record["messages"])
        if len(batch) == size or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _add_batch(stats: FileStats, batch: list[dict], tokenizer) -> None:
    texts = [message["content"].strip() for record in batch for message in record["messages"]]
    lengths = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False,
                                                 return_attention_mask=False)["input_ids"])
    for record in batch:
        prompt = completion = 0
        for message in record["messages"]:
            if message["role"] == "assistant":
                completion += next(lengths)
            else:
                prompt += next(lengths)
        stats.prompt_lengths.append(prompt)
        stats.completion_lengths.append(completion)
        stats.rounds.append(count_rounds(record["messages"]))
        stats.datasets[str(record.get("dataset", "?"))] += 1


def file_stats(path, tokenizer, *, batch_size: int = 512,
               on_examples: Callable[[int], None] | None = None) -> FileStats:
    """Statistics of one conversation input: a file, a folder or a hub dataset (streamed; memory is a few ints per
    example)."""
    source = as_source(path)
    stats = FileStats(source.label, name=describe(source))
    for batch in _batches(read_records(source), batch_size):
        _add_batch(stats, batch, tokenizer)
        if on_examples is not None:
            on_examples(len(batch))
    return stats


def stats_json(all_stats: list[FileStats], tokenizer_name: str) -> dict:
    return {"tokenizer": tokenizer_name, "definitions": DEFINITIONS,
            "files": [stats.to_json() for stats in all_stats]}


def write_stats_json(all_stats: list[FileStats], tokenizer_name: str, target: str | os.PathLike) -> None:
    write_json(target, stats_json(all_stats, tokenizer_name))


def stats_table(all_stats: list[FileStats], tokenizer_name: str) -> Table:
    """The paper's Table-1 columns as a rich table."""
    table = Table(title=f"dataset statistics: averages per example, lengths in {tokenizer_name} tokens")
    table.add_column("file")
    table.add_column("datasets")
    for column in ("instances", "rounds", "prompt len", "completion len"):
        table.add_column(column, justify="right")
    for stats in all_stats:
        table.add_row(stats.name or Path(stats.path).name, ", ".join(sorted(stats.datasets)), f"{stats.instances:,}",
                      f"{stats.average(stats.rounds):.1f}", f"{stats.average(stats.prompt_lengths):.1f}",
                      f"{stats.average(stats.completion_lengths):.1f}")
    return table


def plot_lengths(all_stats: list[FileStats], target: str | os.PathLike) -> None:
    """A PNG with the distributions of prompt and completion lengths, one line per file (log-spaced bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    longest = max([1, *(max(s.prompt_lengths, default=1) for s in all_stats),
                   *(max(s.completion_lengths, default=1) for s in all_stats)])
    bins = np.unique(np.geomspace(1, longest + 1, 40).astype(int))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, attribute, title in ((axes[0], "prompt_lengths", "prompt length"),
                                   (axes[1], "completion_lengths", "completion length")):
        for stats in all_stats:
            values = np.maximum(np.asarray(getattr(stats, attribute), dtype=np.int64), 1)
            axis.hist(values, bins=bins, histtype="step", linewidth=1.5, label=stats.name or Path(stats.path).name,
                      weights=np.full(len(values), 1 / max(len(values), 1)))
        axis.set_xscale("log")
        axis.set_xlabel(f"{title} (tokens)")
        axis.set_title(title)
    axes[0].set_ylabel("fraction of examples")
    axes[1].legend(fontsize="small")
    figure.tight_layout()
    with atomic_file(target, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


# ---- preference pairs ------------------------------------------------------------------------------------------

PAIR_DEFINITIONS = {
    "rounds": DEFINITIONS["rounds"] + " (of the chosen side)",
    "context_tokens": "tokens of the content of every message before the compared reply (the same on both sides)",
    "chosen_tokens": "tokens of the content of the chosen reply (the last message of the chosen side)",
    "rejected_tokens": "tokens of the content of the rejected reply",
    "identical": "pairs whose chosen and rejected sides are identical (never trained on: dropped when encoding)",
}


@dataclass
class PairFileStats(InputStats):
    """Statistics of one preference input: the shared context and each side's reply, per pair."""

    context_lengths: array = field(default_factory=_lengths)
    chosen_lengths: array = field(default_factory=_lengths)
    rejected_lengths: array = field(default_factory=_lengths)
    identical: int = 0

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "kind": "preference pairs",
            "datasets": dict(self.datasets),
            "instances": self.instances,
            "identical": self.identical,
            "avg_rounds": round(self.average(self.rounds), 3),
            "avg_context_tokens": round(self.average(self.context_lengths), 2),
            "avg_chosen_tokens": round(self.average(self.chosen_lengths), 2),
            "avg_rejected_tokens": round(self.average(self.rejected_lengths), 2),
            "context_tokens": _quantiles(self.context_lengths),
            "chosen_tokens": _quantiles(self.chosen_lengths),
            "rejected_tokens": _quantiles(self.rejected_lengths),
        }


def _add_pair_batch(stats: PairFileStats, batch: list[dict], tokenizer) -> None:
    # Per pair: every context message, then the two replies (the context is the same on both sides).
    texts = [message["content"].strip() for record in batch
             for message in [*record["chosen"][:-1], record["chosen"][-1], record["rejected"][-1]]]
    lengths = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False,
                                                 return_attention_mask=False)["input_ids"])
    for record in batch:
        stats.context_lengths.append(sum(next(lengths) for _ in record["chosen"][:-1]))
        stats.chosen_lengths.append(next(lengths))
        stats.rejected_lengths.append(next(lengths))
        stats.rounds.append(count_rounds(record["chosen"]))
        stats.identical += record["chosen"] == record["rejected"]
        stats.datasets[str(record.get("dataset", "?"))] += 1


def pair_file_stats(path, tokenizer, *, batch_size: int = 512,
                    on_examples: Callable[[int], None] | None = None) -> PairFileStats:
    """Statistics of one preference input (streamed; a few ints per pair)."""
    from tulu_lite.data.pairs import read_pairs

    source = as_source(path)
    stats = PairFileStats(source.label, name=describe(source))
    batch: list[dict] = []
    for record in read_pairs(source):
        batch.append(record)
        if len(batch) == batch_size:
            _add_pair_batch(stats, batch, tokenizer)
            if on_examples is not None:
                on_examples(len(batch))
            batch = []
    if batch:
        _add_pair_batch(stats, batch, tokenizer)
        if on_examples is not None:
            on_examples(len(batch))
    return stats


def pair_stats_table(all_stats: list[PairFileStats], tokenizer_name: str) -> Table:
    """Per preference input: pairs, rounds, context and reply lengths (averages), identical pairs."""
    table = Table(title=f"preference pairs: averages per pair, lengths in {tokenizer_name} tokens")
    table.add_column("file")
    table.add_column("datasets")
    for column in ("pairs", "rounds", "context len", "chosen len", "rejected len", "identical"):
        table.add_column(column, justify="right")
    for stats in all_stats:
        table.add_row(stats.name or Path(stats.path).name, ", ".join(sorted(stats.datasets)), f"{stats.instances:,}",
                      f"{stats.average(stats.rounds):.1f}", f"{stats.average(stats.context_lengths):.1f}",
                      f"{stats.average(stats.chosen_lengths):.1f}", f"{stats.average(stats.rejected_lengths):.1f}",
                      f"{stats.identical:,}")
    return table
