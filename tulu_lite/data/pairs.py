"""Preference pairs: two answers to the same conversation, one preferred, for preference tuning (``stage: dpo``).

A pair record is ``{"chosen": [messages], "rejected": [messages], "id": ..., "dataset": ...}``: both sides are whole
conversations that agree on every message but the last, which is the assistant reply being compared. Rows are read
through the same inputs as conversations (`tulu_lite.data.inputs`: JSON Lines, JSON, Parquet, datasets folders,
``hf:`` ids, column mapping), in any of these shapes:

- ``chosen`` / ``rejected`` message lists (UltraFeedback binarized, TÜLU 3 preference mixtures); a string
  ``prompt`` beside them is ignored (UltraFeedback binarized repeats the first user turn there);
- TRL's explicit-prompt format: ``prompt`` (a string, or a message list) and ``chosen`` / ``rejected`` completions
  (strings, or lists of assistant messages), which are appended to the prompt.

Column names come from the input's `DataSource` (``chosen``, ``rejected``, ``prompt``; turns through ``role``,
``content`` and ``roles`` as for conversations). Rows keep only ``id`` and ``dataset`` besides the two sides.

Errors, one line naming the file and row: a row that is not an object, a missing column, a side that is neither a
message list nor a completion string after a prompt, a side without an assistant reply or not ending with one,
and sides that differ before the last reply. Dropped and counted instead (`EncodedPairsReport.dropped`):

- identical chosen and rejected. open-instruct's DPO script trains on such a pair, but it carries no preference:
  for every loss built on the chosen-minus-rejected difference its gradient is zero, and it only pulls the mean
  loss towards log 2. Pairs whose sides become identical after truncation are dropped for the same reason;
- a side with no trained token left after truncation at ``max_seq_length`` (as the reference filters them).

Each side is encoded exactly as SFT encodes a conversation (`tulu_lite.data.encode`: the same template, every
assistant turn trained, the same truncation), chosen and rejected separately.

`hh_rlhf_pair` converts Anthropic HH-RLHF's text transcripts (``\\n\\nHuman: ...\\n\\nAssistant: ...``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tulu_lite.data.chat_format import ChatFormat
from tulu_lite.data.conversations import validate_messages
from tulu_lite.data.encode import (
    DROP_TRUNCATED,
    SOURCE_COLUMN,
    EncodeReport,
    encode_many,
    generate_dataset,
    named_records,
    trained_count,
)
from tulu_lite.data.inputs import RowFormat, map_turn, read_records
from tulu_lite.errors import TuluError
from tulu_lite.json_files import json_object
from tulu_lite.recipe import DataSource

SIDES = ("chosen", "rejected")
PAIR_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
_KEPT = ("id", "dataset")

DROP_IDENTICAL = "chosen and rejected are identical"
DROP_SAME_TOKENS = "chosen and rejected are identical within max_seq_length"


# ---- rows -> validated pair records ------------------------------------------------------------------------------


def to_pair(row: object, source: DataSource, where: str, *, keep: Iterable[str] | None = None) -> dict:
    """One row as a validated pair record ``{chosen, rejected}`` (plus `keep` keys, default id and dataset)."""
    if not isinstance(row, dict):
        raise TuluError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for column in (source.chosen, source.rejected):
        if column not in row:
            raise TuluError(f"{where}: no {column!r} key (keys: {', '.join(sorted(map(str, row))) or 'none'}); a "
                            f"preference pair needs {source.chosen!r} and {source.rejected!r} (map other columns with "
                            f"{{path: ..., chosen: COLUMN, rejected: COLUMN}})")
    prompt = row.get(source.prompt)
    chosen = _side(row[source.chosen], source.chosen, prompt, source, where)
    rejected = _side(row[source.rejected], source.rejected, prompt, source, where)
    check_pair(chosen, rejected, where, source)
    record = {name: row[name] for name in (_KEPT if keep is None else keep) if row.get(name) is not None}
    record["chosen"], record["rejected"] = chosen, rejected
    return record


def _side(value: object, column: str, prompt: object, source: DataSource, where: str) -> list[dict]:
    """One side as a whole conversation: a message list as it is, or a completion appended to the prompt."""
    if isinstance(value, str):
        if prompt is None:
            raise TuluError(f"{where}: {column} is a completion string but the row has no {source.prompt!r}; give "
                            f"the prompt, or both sides as message lists")
        messages = [*_prompt_messages(prompt, source, where), {"role": "assistant", "content": value}]
    elif isinstance(value, list):
        turns = [map_turn(turn, index, source, where, column) for index, turn in enumerate(value)]
        completion = prompt is not None and (not isinstance(prompt, str) or not turns
                                             or turns[0]["role"] == "assistant")
        messages = [*_prompt_messages(prompt, source, where), *turns] if completion else turns
    else:
        raise TuluError(f"{where}: {column} must be a list of messages (or a completion string after a "
                        f"{source.prompt!r}), got {type(value).__name__}")
    validate_messages(messages, f"{where}: {column}")
    if messages[-1]["role"] != "assistant":
        raise TuluError(f"{where}: {column} ends with a {messages[-1]['role']} message; each side must end with "
                        f"the assistant reply that is compared")
    return messages


def _prompt_messages(prompt: object, source: DataSource, where: str) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return [map_turn(turn, index, source, where, source.prompt) for index, turn in enumerate(prompt)]
    raise TuluError(f"{where}: {source.prompt} must be a string or a list of messages, got {type(prompt).__name__}")


def check_pair(chosen: list[dict], rejected: list[dict], where: str, source: DataSource | None = None) -> None:
    """Both sides answer the same conversation: every message but the last assistant reply is the same."""
    names = (source.chosen, source.rejected) if source is not None else SIDES
    before = (chosen[:-1], rejected[:-1])
    if before[0] == before[1]:
        return
    if len(before[0]) != len(before[1]):
        what = (f"{names[0]} has {len(before[0])} messages before its reply, {names[1]} {len(before[1])}")
    else:
        index = next(i for i, (a, b) in enumerate(zip(*before)) if a != b)
        what = f"message {index}: {_preview(chosen[index])} vs {_preview(rejected[index])}"
    raise TuluError(f"{where}: {names[0]} and {names[1]} differ before the last assistant reply ({what}); a pair "
                    f"compares two replies to the same conversation")


def _preview(message: dict) -> str:
    text = " ".join(message["content"].split())
    return f"{message['role']} {text[:40]!r}"


class PairRows(RowFormat):
    """The row format of preference pairs, for `tulu_lite.data.inputs.read_records` and mixtures."""

    what = "preference pair"

    def required(self, source: DataSource) -> list[str]:
        return [source.chosen, source.rejected]

    def optional(self, source: DataSource) -> list[str]:
        return [source.prompt]

    def to_record(self, row: object, source: DataSource, where: str, *, keep: Iterable[str] | None = None) -> dict:
        return to_pair(row, source, where, keep=keep)

    def parse_line(self, line: str, where: str) -> dict:
        return to_pair(json_object(line, where), _DEFAULT_SOURCE, where)

    def content_chars(self, record: dict) -> int:
        return sum(len(message["content"]) for side in SIDES for message in record[side])

    def mapping_hint(self, source: DataSource) -> str:
        return ("map the columns holding the two sides with {path: ..., chosen: COLUMN, rejected: COLUMN} (and "
                "prompt when the sides are completions; role, content, roles for the turns' keys)")


PAIRS = PairRows()
_DEFAULT_SOURCE = DataSource(path=Path("."))  # tulu-lite's own column names


def read_pairs(item) -> Iterator[dict]:
    """Stream the validated pair records of one input (a file, folder or hub dataset), in order."""
    return read_records(item, PAIRS)


def looks_like_pairs(item) -> bool:
    """Whether an input holds preference pairs (it has the chosen and rejected columns), for commands that take
    either kind (`inspect`, `data stats`, `data mix`)."""
    from tulu_lite.data.inputs import as_source, input_columns

    source = as_source(item)
    columns = input_columns(source)
    return source.chosen in columns and source.rejected in columns


# ---- Anthropic HH-RLHF ----------------------------------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_rlhf_messages(text: str) -> list[dict]:
    """One HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) as messages; contents are stripped.

    Raises `TuluError` for a transcript that does not start with a turn marker.
    """
    if not isinstance(text, str):
        raise TuluError(f"expected a transcript string, got {type(text).__name__}")
    if not text.startswith("\n\n"):
        text = "\n\n" + text  # a few transcripts lose their leading blank line
    markers = list(_HH_TURN.finditer(text))
    if not markers or markers[0].start() != 0:
        raise TuluError(f"not an HH-RLHF transcript (it must start with '\\n\\nHuman:'): {text[:40]!r}")
    messages = []
    for marker, following in zip(markers, [*markers[1:], None]):
        end = following.start() if following is not None else len(text)
        messages.append({"role": _HH_ROLES[marker.group(1)], "content": text[marker.end():end].strip()})
    return messages


def hh_rlhf_pair(chosen: str, rejected: str) -> dict:
    """An HH-RLHF row (two transcripts sharing every turn but the last Assistant reply) as a pair record."""
    return {"chosen": hh_rlhf_messages(chosen), "rejected": hh_rlhf_messages(rejected)}


# ---- encoding --------------------------------------------------------------------------------------------------


def encode_pairs(pairs: list[tuple[list[dict], list[dict]]], tokenizer: PreTrainedTokenizerBase,
                 template: ChatFormat = "tulu", max_seq_length: int = 2048) -> list[dict]:
    """Encode (chosen, rejected) message lists, each side exactly as SFT encodes a conversation (one batched
    tokenizer call): ``{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels}`` per pair."""
    if not tokenizer.is_fast:
        raise TuluError("encode needs a fast tokenizer (tokenizer.json) to map characters to tokens")
    sides = encode_many([c for c, _ in pairs] + [r for _, r in pairs], tokenizer, template, max_seq_length)
    count = len(pairs)
    return [{"chosen_input_ids": sides[i]["input_ids"], "chosen_labels": sides[i]["labels"],
             "rejected_input_ids": sides[count + i]["input_ids"], "rejected_labels": sides[count + i]["labels"]}
            for i in range(count)]


def encode_pair(chosen: list[dict], rejected: list[dict], tokenizer: PreTrainedTokenizerBase,
                template: ChatFormat = "tulu", max_seq_length: int = 2048) -> dict:
    """Encode one pair (see `encode_pairs`)."""
    return encode_pairs([(chosen, rejected)], tokenizer, template, max_seq_length)[0]


def drop_reason(chosen: list[dict], rejected: list[dict], encoded: dict, trained: tuple[int, int],
                max_seq_length: int) -> str | None:
    """Why an encoded pair is not trained on (None: it is): identical sides, or a side with no trained token
    (`trained`: the trained-token counts of chosen and rejected, which every caller also needs)."""
    if chosen == rejected:
        return DROP_IDENTICAL
    for side, count in zip(SIDES, trained):
        if count == 0:
            return f"{side}: {DROP_TRUNCATED} ({max_seq_length})"
    if encoded["chosen_input_ids"] == encoded["rejected_input_ids"]:
        return f"{DROP_SAME_TOKENS} ({max_seq_length})"
    return None


@dataclass
class EncodedPairsReport(EncodeReport):
    """What encoding preference pairs kept and dropped: `kept` pairs, `tokens` and `trained_tokens` over both sides
    of the kept pairs, and the trained tokens of each side."""

    chosen_trained_tokens: int = 0
    rejected_trained_tokens: int = 0

    def add(self, other: EncodedPairsReport) -> None:
        """Accumulate another report (a mixture encodes its sources one by one)."""
        self.kept += other.kept
        self.tokens += other.tokens
        self.trained_tokens += other.trained_tokens
        self.chosen_trained_tokens += other.chosen_trained_tokens
        self.rejected_trained_tokens += other.rejected_trained_tokens
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count


@functools.cache  # built on first use: importing datasets costs a second
def _pair_features():
    from datasets import Features, List, Value

    turns = List({"role": Value("string"), "content": Value("string")})
    return Features({"chosen": turns, "rejected": turns, SOURCE_COLUMN: Value("string")})


def _pair_rows(inputs: list[tuple[str, str]]):
    """Every input's validated pairs, as Arrow rows."""
    for record, name in named_records(inputs, read_pairs, "preference pair"):
        yield {"chosen": record["chosen"], "rejected": record["rejected"], SOURCE_COLUMN: name}


def load_pairs_dataset(items, cache_dir: str | None = None, *, key: str | None = None):
    """The pairs of preference inputs (files, folders, hub datasets) as an Arrow dataset of `chosen`, `rejected`
    and `dataset` (the record's own field, else the input's name); cached like conversations
    (`tulu_lite.data.encode.load_conversations_dataset`)."""
    return generate_dataset(_pair_rows, items, _pair_features(), cache_dir, key=key)


def _pair_fingerprint(data_fingerprint: str, tokenizer, template: ChatFormat, max_seq_length: int) -> str:
    """The Arrow cache key of encoded pairs: the conversation encoder's key plus this module's code."""
    from tulu_lite.data.encode import _encoding_fingerprint

    digest = hashlib.sha256(_encoding_fingerprint(data_fingerprint, tokenizer, template, max_seq_length).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:32]


def _encode_pair_batch(batch: dict, tokenizer, template: ChatFormat, max_seq_length: int) -> dict:
    pairs = list(zip(batch["chosen"], batch["rejected"]))
    encoded = encode_pairs(pairs, tokenizer, template, max_seq_length)
    out = {name: [e[name] for e in encoded] for name in PAIR_COLUMNS}
    out["n_tokens"] = [len(e["chosen_input_ids"]) + len(e["rejected_input_ids"]) for e in encoded]
    out["n_chosen"] = [trained_count(e["chosen_labels"]) for e in encoded]
    out["n_rejected"] = [trained_count(e["rejected_labels"]) for e in encoded]
    out["drop"] = [drop_reason(c, r, e, trained, max_seq_length) or ""
                   for (c, r), e, trained in zip(pairs, encoded, zip(out["n_chosen"], out["n_rejected"]))]
    return out


def encode_pairs_dataset(
    files,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatFormat = "tulu",
    max_seq_length: int = 2048,
    num_proc: int = 1,
    cache_dir: str | None = None,
    *,
    key: str | None = None,
    with_source: bool = False,
):
    """Encode preference inputs into an Arrow dataset of ``chosen_input_ids``, ``chosen_labels``,
    ``rejected_input_ids``, ``rejected_labels`` (and `dataset` with `with_source`), and an `EncodedPairsReport`.

    Batched, optionally multi-process and cached like `tulu_lite.data.encode.encode_dataset`; pairs that are
    identical, or that leave a side with no trained token after truncation, are dropped and counted by reason.
    """
    import numpy as np

    pairs = load_pairs_dataset(files, cache_dir=cache_dir, key=key)
    encoded = pairs.map(
        _encode_pair_batch,
        batched=True,
        batch_size=256,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=[name for name in pairs.column_names if name != SOURCE_COLUMN],
        fn_kwargs={"tokenizer": tokenizer, "template": template, "max_seq_length": max_seq_length},
        new_fingerprint=_pair_fingerprint(pairs._fingerprint, tokenizer, template, max_seq_length),
        desc=f"encoding pairs ({template}, max {max_seq_length} tokens)",
    )
    drops = encoded.data.column("drop").to_pylist()
    keep = np.asarray([not reason for reason in drops], dtype=bool)
    chosen = np.asarray(encoded.data.column("n_chosen"))[keep]
    rejected = np.asarray(encoded.data.column("n_rejected"))[keep]
    tokens = np.asarray(encoded.data.column("n_tokens"))[keep]
    report = EncodedPairsReport(kept=int(keep.sum()), tokens=int(tokens.sum()),
                                trained_tokens=int(chosen.sum() + rejected.sum()),
                                chosen_trained_tokens=int(chosen.sum()), rejected_trained_tokens=int(rejected.sum()))
    for reason in drops:
        if reason:
            report.dropped[reason] = report.dropped.get(reason, 0) + 1
    extra = ["n_tokens", "n_chosen", "n_rejected", "drop"] + ([] if with_source else [SOURCE_COLUMN])
    encoded = encoded.remove_columns(extra)
    if report.kept < len(keep):
        encoded = encoded.select(np.flatnonzero(keep))
    return encoded, report
