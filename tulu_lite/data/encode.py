"""Encoding: a conversation becomes ``input_ids`` and ``labels`` with loss on assistant tokens only.

The text is tokenized once. Which tokens carry loss is decided from character positions in that same text:
a token is trained when its first character falls inside a trained span.

- ``tulu`` trains everything except, for every non-assistant message i, the tokens starting in
  ``[start of message i, end of message i + "<|assistant|>\\n")`` (the header only when an assistant follows).
  That is the original TÜLU rule, which tokenizes every message prefix and masks
  ``[len(tok(prefix before i)), len(tok(prefix through i + header)))``. The two agree because every boundary
  falls right after a newline and no token of these tokenizers spans a newline and the ``<`` after it; the tests
  compare both methods on thousands of generated conversations for LLaMA, Mistral and Llama-3.
- ``native`` renders the tokenizer's chat template and finds each message in the rendered text; trained spans
  are each assistant content plus the special token that closes its turn (``<|eot_id|>``, ``<|im_end|>``, eos).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tulu_lite.data.chat_format import (
    ASSISTANT_HEADER,
    ChatFormat,
    render_native,
    tulu_pieces,
)
from tulu_lite.errors import TuluError

IGNORE_INDEX = -100


def trained_count(labels: list[int]) -> int:
    """How many tokens of an encoded example carry loss."""
    return sum(1 for label in labels if label != IGNORE_INDEX)
# A marker that no real message contains, used once per tokenizer to learn its assistant header.
_PROBE = "\ue000"

Span = tuple[int, int]  # [start, end) in characters of the rendered text


@dataclass(frozen=True)
class Rendered:
    """A conversation's training text and the character spans whose tokens carry loss."""

    text: str
    trained: list[Span]


def render_tulu_spans(messages: list[dict], eos_token: str) -> Rendered:
    """The TÜLU text and its trained spans (the gaps between the masked non-assistant messages)."""
    pieces = tulu_pieces(messages, eos_token)
    text = "".join(pieces).strip()  # the text only loses trailing whitespace: it starts with "<|"
    masked, offset = [], 0
    for index, (message, piece) in enumerate(zip(messages, pieces)):
        end = offset + len(piece)
        if message["role"] != "assistant":
            next_is_assistant = index + 1 < len(messages) and messages[index + 1]["role"] == "assistant"
            masked.append((offset, end + (len(ASSISTANT_HEADER) if next_is_assistant else 0)))
        offset = end
    trained, cursor = [], 0
    for start, end in masked:
        if start > cursor:
            trained.append((cursor, start))
        cursor = max(cursor, end)
    trained.append((cursor, len(text) + 1))
    return Rendered(text, trained)


# ---- native chat templates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NativeFormat:
    name: str
    specials: re.Pattern  # any special token of the tokenizer (end-of-turn candidates)
    assistant_header: str | None  # what add_generation_prompt appends, when it can be learned


_native_formats: dict[tuple, _NativeFormat] = {}


def _native_format(tokenizer: PreTrainedTokenizerBase) -> _NativeFormat:
    key = (tokenizer.name_or_path, tokenizer.chat_template, len(tokenizer))
    if key not in _native_formats:
        name = f"native chat_template of {tokenizer.name_or_path}"
        specials = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
        specials |= {tokenizer.eos_token} - {None}
        pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        probe = [{"role": "user", "content": _PROBE}]
        try:
            base = render_native(probe, tokenizer)
            prompt = render_native(probe, tokenizer, add_generation_prompt=True)
            header = prompt[len(base):] if prompt.startswith(base) and len(prompt) > len(base) else None
        except TuluError:
            header = None  # some templates insist on a system turn; fall back to searching from the cursor
        _native_formats[key] = _NativeFormat(name, pattern, header)
    return _native_formats[key]


def _content_variants(content: str) -> list[str]:
    """How templates commonly render a content (verbatim, trimmed, leading newlines dropped), most exact first.

    Whitespace-only content has no variant: its turn is aligned by its end-of-turn token alone.
    """
    if not content.strip():
        return []
    return [v for v in dict.fromkeys((content, content.strip(), content.lstrip("\n"), content.rstrip())) if v]


def _align_error(fmt: _NativeFormat, index: int, message: dict, why: str) -> TuluError:
    preview = message["content"][:60]
    return TuluError(f"{fmt.name}: cannot align messages[{index}] ({message['role']}: {preview!r}): {why}")


def _find_assistant(text: str, fmt: _NativeFormat, cursor: int, index: int, message: dict) -> Span:
    """The span of one assistant turn: its content and the special token that closes it."""
    if fmt.assistant_header is not None:
        at = text.find(fmt.assistant_header, cursor)
        if at < 0:
            raise _align_error(fmt, index, message, f"no assistant header {fmt.assistant_header!r} after position {cursor}")
        cursor = at + len(fmt.assistant_header)
    variants = _content_variants(message["content"])
    if not variants:  # empty answer: only the end-of-turn token is trained
        closing = fmt.specials.search(text, cursor)
        if closing is None:
            raise _align_error(fmt, index, message, "no end-of-turn special token after the assistant header")
        return closing.start(), closing.end()
    for variant in variants:
        start = text.find(variant, cursor)
        closing = fmt.specials.match(text, start + len(variant)) if start >= 0 else None
        # The content must close this turn: no special token between the header and the content.
        if closing is not None and fmt.specials.search(text, cursor, start) is None:
            return start, closing.end()
    raise _align_error(fmt, index, message, "its content is not rendered verbatim and closed by a special token")


def render_native_spans(messages: list[dict], tokenizer: PreTrainedTokenizerBase) -> Rendered:
    """The template's text and its trained spans: each assistant content and its end-of-turn token."""
    fmt = _native_format(tokenizer)
    text = render_native(messages, tokenizer)
    trained, cursor = [], 0
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            span = _find_assistant(text, fmt, cursor, index, message)
            trained.append(span)
            cursor = span[1]
            continue
        variants = _content_variants(message["content"])
        found = [(at, v) for v in variants if (at := text.find(v, cursor)) >= 0]
        if variants and not found:
            raise _align_error(fmt, index, message, "its content is not in the rendered text")
        if found:
            at, variant = min(found)
            cursor = at + len(variant)
    return Rendered(text, trained)


def render_for_training(messages: list[dict], tokenizer: PreTrainedTokenizerBase, template: ChatFormat) -> Rendered:
    if template == "tulu":
        return render_tulu_spans(messages, tokenizer.eos_token)
    if template == "native":
        return render_native_spans(messages, tokenizer)
    raise TuluError(f"unknown chat template {template!r}, expected tulu or native")


# ---- from characters to labels -----------------------------------------------------------------------------------


def _tokens_before(encoding, char: int, n_tokens: int, text_end: int) -> int:
    """How many tokens start before `char` (what the prefix method measures as len(tok(prefix))).

    Asks the Rust encoding for the token at `char` instead of materialising every offset in Python: a couple of
    calls per message boundary instead of a Python object per token.
    """
    if char <= 0:
        return 0
    if char >= text_end:
        return n_tokens
    for position in range(char, text_end):
        index = encoding.char_to_token(position)
        if index is None:
            continue  # a character no token covers (rare; e.g. dropped by a normalizer): look further on
        while index < n_tokens and encoding.token_to_chars(index)[0] < char:
            index += 1  # a token that starts before `char` and reaches past it counts as before
        return index
    return n_tokens


def _covered_end(encoding, n_tokens: int) -> int:
    """The character where the (possibly truncated) tokens stop; tokens the tokenizer adds have no characters."""
    for index in range(n_tokens - 1, -1, -1):
        chars = encoding.token_to_chars(index)
        if chars is not None:
            return chars[1]
    return 0


def labels_from_spans(encoding, input_ids: list[int], trained: list[Span]) -> list[int]:
    """Labels for one encoded text: the token id where the token starts in a trained span, else -100."""
    n_tokens = len(input_ids)
    labels = [IGNORE_INDEX] * n_tokens
    if n_tokens == 0:
        return labels
    text_end = _covered_end(encoding, n_tokens)
    for start, end in trained:
        lo = _tokens_before(encoding, start, n_tokens, text_end)
        hi = _tokens_before(encoding, end, n_tokens, text_end)
        labels[lo:hi] = input_ids[lo:hi]
    return labels


def _tokenize(texts: list[str], tokenizer: PreTrainedTokenizerBase, template: ChatFormat, max_seq_length: int):
    # tulu relies on the tokenizer's BOS, as the original code did; native templates write their own.
    return tokenizer(
        texts,
        add_special_tokens=template == "tulu",
        truncation=True,
        max_length=max_seq_length,
        return_attention_mask=False,
    )


def encode_many(
    conversations: list[list[dict]], tokenizer: PreTrainedTokenizerBase, template: ChatFormat, max_seq_length: int
) -> list[dict]:
    """Encode a batch with one batched tokenizer call; returns ``{"input_ids", "labels"}`` per conversation."""
    rendered = [render_for_training(messages, tokenizer, template) for messages in conversations]
    batch = _tokenize([r.text for r in rendered], tokenizer, template, max_seq_length)
    out = []
    for index, item in enumerate(rendered):
        ids = batch["input_ids"][index]
        out.append({"input_ids": ids, "labels": labels_from_spans(batch.encodings[index], ids, item.trained)})
    return out


def encode(
    messages: list[dict],
    tokenizer: PreTrainedTokenizerBase,
    template: ChatFormat = "tulu",
    max_seq_length: int = 2048,
) -> dict[str, list[int]]:
    """Encode one conversation: ``{"input_ids": [...], "labels": [...]}``, labels -100 outside assistant tokens.

    `messages` is a list of ``{"role": "system"|"user"|"assistant", "content": str}``; the text is truncated to
    `max_seq_length` tokens. Trained tokens: for ``tulu`` each assistant content, its eos and the newline after it;
    for ``native`` each assistant content and the end-of-turn token that closes it.
    """
    if not tokenizer.is_fast:
        raise TuluError("encode needs a fast tokenizer (tokenizer.json) to map characters to tokens")
    return encode_many([messages], tokenizer, template, max_seq_length)[0]


@dataclass
class EncodeReport:
    """What encoding a dataset kept and dropped, and why."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    trained_tokens: int = 0

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


# ---- the dataset-level path (Arrow, cached, multi-process) ------------------------------------------------------

DROP_TRUNCATED = "no trained token within max_seq_length"
# Each example's source, kept through encoding for per-source held-out losses: the record's `dataset` field, else
# the name of the file it came from.
SOURCE_COLUMN = "dataset"


@functools.cache  # built on first use: importing datasets costs a second
def _conversation_features():
    from datasets import Features, List, Value

    return Features(
        {"messages": List({"role": Value("string"), "content": Value("string")}), SOURCE_COLUMN: Value("string")}
    )


def named_records(inputs: list[tuple[str, str]], read, what: str):
    """(record, source name) for every record `read` yields from each input: the name is the record's own
    ``dataset`` field, else the input's file stem or hub id. An input with no record is an error naming it (not
    a silent gap); `what` names a record in that error. Shared by the conversation and pair row generators."""
    from tulu_lite.recipe import DataSource

    for mapping, _fingerprint in inputs:
        source = DataSource.model_validate_json(mapping)
        fallback = Path(source.path).stem if source.path is not None else source.hub
        count = 0
        for record in read(source):
            count += 1
            name = record.get("dataset")
            yield record, str(name) if name not in (None, "") else fallback
        if count == 0:
            raise TuluError(f"{source.label}: holds no {what} (the file is empty)")


def _conversation_rows(inputs: list[tuple[str, str]]):
    """Every input's validated conversations, as Arrow rows."""
    from tulu_lite.data.inputs import read_records

    for record, name in named_records(inputs, read_records, "conversation"):
        yield {"messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]],
               SOURCE_COLUMN: name}


def load_conversations_dataset(items, cache_dir: str | None = None, *, key: str | None = None):
    """The one loader of every conversation input list (``data.train_files``, ``data.eval_files``, mixture sources)
    into an Arrow dataset of `messages` and `dataset` (the record's own field, else the input's name).

    `items` are `DataSource` entries or what they are made from (paths, ``hf:ID``, mappings): JSON Lines, JSON,
    Parquet, save_to_disk and dataset repository folders, hub datasets (see `tulu_lite.data.inputs`). Rows are
    validated as they are read and cached by datasets; the cache key holds each input's file stamps (path, size,
    modification time) or hub fingerprint and its column mapping, so an edited file is read again. `key` (e.g.
    ``"data.train_files"``) prefixes errors about a missing input with the recipe key and index.
    """
    return generate_dataset(_conversation_rows, items, _conversation_features(), cache_dir, key=key)


def generate_dataset(rows, items, features, cache_dir: str | None, *, key: str | None = None):
    """An Arrow dataset from ``rows(inputs)``, where `inputs` are (DataSource JSON, fingerprint) of `items`.

    The fingerprints are in the generator's arguments, so datasets' cache is keyed by them. Shared by the
    conversation loader and `tulu_lite.data.pairs.load_pairs_dataset`.
    """
    from datasets import Dataset

    from tulu_lite.data.inputs import as_source, input_fingerprint

    sources = [as_source(item) for item in items]
    inputs = []
    for index, source in enumerate(sources):
        try:
            inputs.append((source.model_dump_json(), input_fingerprint(source)))
        except TuluError as exc:
            raise TuluError(f"{key}[{index}]: {exc}" if key else str(exc)) from None
    try:
        return Dataset.from_generator(rows, gen_kwargs={"inputs": inputs}, features=features, cache_dir=cache_dir)
    except Exception as exc:  # datasets wraps the reader's one-line TuluError in its own error: unwrap it
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, TuluError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def _encoding_fingerprint(data_fingerprint: str, tokenizer, template: ChatFormat, max_seq_length: int) -> str:
    """The Arrow cache key: data + tokenizer + template + length + this encoder's code.

    datasets would otherwise pickle and hash the whole tokenizer object on every call (~3.4 s for LLaMA's, half
    of a short training run); its serialized vocabulary and special tokens identify it just as well.
    """
    digest = hashlib.sha256()
    code = (Path(__file__), Path(__file__).with_name("chat_format.py"))
    parts = [data_fingerprint, tokenizer.backend_tokenizer.to_str(), str(tokenizer.chat_template),
             repr(sorted(tokenizer.special_tokens_map.items())), template, str(max_seq_length)]
    for part in [*parts, *(path.read_text(encoding="utf-8") for path in code)]:
        digest.update(part.encode("utf-8"))
    return digest.hexdigest()[:32]


def _encode_batch(batch: dict, tokenizer, template: ChatFormat, max_seq_length: int) -> dict:
    encoded = encode_many(batch["messages"], tokenizer, template, max_seq_length)
    labels = [e["labels"] for e in encoded]
    return {
        "input_ids": [e["input_ids"] for e in encoded],
        "labels": labels,
        "n_tokens": [len(row) for row in labels],
        "n_trained": [trained_count(row) for row in labels],
    }


def encode_dataset(
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
    """Encode conversation inputs (files, folders, hub datasets: `load_conversations_dataset`) into an Arrow
    dataset of ``input_ids`` / ``labels``.

    Batched (`datasets.map(batched=True)`), optionally multi-process, and cached by datasets' fingerprint of the
    data files, tokenizer, template and length. Examples left with no trained token after truncation are
    dropped and counted in the returned `EncodeReport`. `with_source` keeps each example's source (its `dataset`
    field, else its file's name) as a `dataset` column, for per-source held-out losses.
    """
    import numpy as np

    conversations = load_conversations_dataset(files, cache_dir=cache_dir, key=key)
    encoded = conversations.map(
        _encode_batch,
        batched=True,
        batch_size=256,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=[name for name in conversations.column_names if name != SOURCE_COLUMN],
        fn_kwargs={"tokenizer": tokenizer, "template": template, "max_seq_length": max_seq_length},
        new_fingerprint=_encoding_fingerprint(conversations._fingerprint, tokenizer, template, max_seq_length),
        desc=f"encoding ({template}, max {max_seq_length} tokens)",
    )
    trained = np.asarray(encoded.data.column("n_trained"))
    keep = trained > 0
    report = EncodeReport(
        kept=int(keep.sum()),
        tokens=int(np.asarray(encoded.data.column("n_tokens"))[keep].sum()),
        trained_tokens=int(trained.sum()),
    )
    encoded = encoded.remove_columns(["n_tokens", "n_trained"] + ([] if with_source else [SOURCE_COLUMN]))
    if report.kept < len(trained):
        report.dropped[f"{DROP_TRUNCATED} ({max_seq_length})"] = len(trained) - report.kept
        encoded = encoded.select(np.flatnonzero(keep))
    return encoded, report


# ---- the held-out split ----------------------------------------------------------------------------------------


def check_heldout_split(fraction: float, train_examples: int, heldout_examples: int, where: str) -> None:
    """Refuse a held-out split that leaves fewer examples to train on than it holds out.

    ``data.eval_fraction: 0.999`` is valid (between 0 and 1) but trains on one example per source without a word;
    a held-out set is a small share of the data (0.01 to 0.1), so a fraction that keeps the larger part is a slip
    (the training share written instead of the held-out one). `where` is the recipe location of the key
    (``Recipe.where("data", "eval_fraction")``). Called by training right after the split is made.
    """
    if heldout_examples > train_examples:
        total = train_examples + heldout_examples
        raise TuluError(f"{where}: {fraction:g} holds out {heldout_examples:,} of {total:,} examples and leaves "
                        f"{train_examples:,} to train on; the held-out share should be small (e.g. 0.05), at most "
                        f"half of the data")
