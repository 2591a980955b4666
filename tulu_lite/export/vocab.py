"""The tokenizer as GGUF metadata (``tokenizer.ggml.*``) and the model card's name and description.

A GGUF file carries no tokenizer.json: llama.cpp rebuilds the tokenizer from a token list and one of two models.

- ``llama`` (SentencePiece-style BPE with byte fallback: LLaMA-1/2, Mistral): tokens, a *score* per token and a
  token type. llama.cpp merges the adjacent pair whose concatenation is a token with the highest score, so the
  scores must rank tokens in the order the tokenizer's merges create them. tokenizer.json has the merges, not
  SentencePiece's scores; the score written is minus the rank of the first merge that yields the token (0 for
  tokens no merge yields: bytes, specials, single characters). llama.cpp also puts a space before the text after
  every special token, which is LLaMA's ``legacy=True`` behaviour (``</s>`` then ``"\\n"`` -> ``▁\\n``).
- ``gpt2`` (byte-level BPE: Llama-3, Qwen2/3): tokens, token types and the merges, plus the name of the
  pre-tokenizer (``tokenizer.ggml.pre``): llama.cpp implements each split regex by name, so a tokenizer.json whose
  regex is not one of the known ones can't be expressed.

Special tokens (BOS/EOS/UNK/PAD ids) and whether BOS/EOS are added come from the tokenizer as loaded; the chat
template is the tokenizer's, or TÜLU's for a tulu-format model without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_file, strict_json

# tokenizer.json split regexes of the byte-level vocabularies llama.cpp implements, by the name it knows them by.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE_LEVEL_PRE_TOKENIZERS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass(frozen=True)
class Vocabulary:
    """Everything the file says about the tokenizer."""

    model: str  # "llama" or "gpt2"
    pre: str  # pre-tokenizer name ("default" for llama)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None  # llama only
    merges: list[str] | None  # gpt2 only
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def read_vocabulary(tokenizer, vocab_size: int, chat_template: str | None, where: Path) -> Vocabulary:
    """Describe `tokenizer` (a fast tokenizer) for a model whose embedding has `vocab_size` rows."""
    spec = strict_json(tokenizer.backend_tokenizer.to_str(), f"{where} (tokenizer)")
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise TuluError(f"{where}: tokenizer model {model.get('type')!r} is not supported by export "
                        f"(BPE: SentencePiece-style or byte-level)")
    if len(tokenizer) > vocab_size:
        raise TuluError(f"{where}: the tokenizer has {len(tokenizer):,} tokens but the model only {vocab_size:,} "
                        f"embeddings")
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model.get("merges") or []]
    if model.get("byte_fallback"):
        kind, pre = "llama", "default"
        tokens, types = _token_list(tokenizer, vocab_size, byte_level=False)
        scores = merge_scores(tokens, merges)
        merges_written = None
    else:
        kind, pre = "gpt2", _byte_level_pre(spec, where)
        tokens, types = _token_list(tokenizer, vocab_size, byte_level=True)
        scores, merges_written = None, merges
    add_bos, add_eos = _added_specials(tokenizer)
    return Vocabulary(
        model=kind, pre=pre, tokens=tokens, token_types=types, scores=scores, merges=merges_written,
        bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, unk_id=tokenizer.unk_token_id,
        pad_id=tokenizer.pad_token_id, add_bos=add_bos, add_eos=add_eos, chat_template=chat_template,
    )


def _token_list(tokenizer, vocab_size: int, *, byte_level: bool) -> tuple[list[str], list[int]]:
    """Token strings by id and their GGUF token types; embedding rows past the tokenizer are ``[PAD{id}]``."""
    import gguf

    kind = gguf.TokenType
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")  # llama.cpp's converter names unused rows the same way
            types.append(kind.UNUSED)
            continue
        if index == tokenizer.unk_token_id:
            token_type = kind.UNKNOWN
        elif index in added and added[index].special:
            token_type = kind.CONTROL
        elif index in added:
            token_type = kind.USER_DEFINED
        elif not byte_level and _BYTE_TOKEN.fullmatch(token):
            token_type = kind.BYTE
        else:
            token_type = kind.NORMAL
        tokens.append(token)
        types.append(token_type)
    return tokens, types


def merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece-style scores from BPE merges: minus the rank of the first merge that makes each token.

    llama.cpp merges the highest-scoring pair first, so this reproduces the merge order; tokens no merge makes
    (bytes, specials, single characters, unused rows) are never the result of a merge and score 0, except unused
    rows which score below everything so that no text can ever merge into them.
    """
    rank: dict[str, int] = {}
    for position, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        rank.setdefault(left + right, position)
    lowest = -float(len(merges) + 1)
    return [-float(rank[token]) if token in rank else (lowest if token.startswith("[PAD") else 0.0)
            for token in tokens]


def _byte_level_pre(spec: dict, where: Path) -> str:
    """llama.cpp's name for the tokenizer's split regex; an unknown one is refused (it would tokenize wrongly)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]
    if not any(step.get("type") == "ByteLevel" for step in steps):
        raise TuluError(f"{where}: a BPE tokenizer that is neither SentencePiece-style (byte fallback) nor "
                        f"byte-level; not supported by export")
    for regex in regexes:
        if regex in BYTE_LEVEL_PRE_TOKENIZERS:
            return BYTE_LEVEL_PRE_TOKENIZERS[regex]
    raise TuluError(f"{where}: byte-level tokenizer with a pre-tokenizer llama.cpp has no name for (known: "
                    f"{', '.join(BYTE_LEVEL_PRE_TOKENIZERS.values())}); not supported by export")


def _added_specials(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer adds BOS / EOS to a text, as observed (post-processors differ by tokenizer)."""
    ids = tokenizer("a").input_ids
    bare = tokenizer("a", add_special_tokens=False).input_ids
    add_bos = tokenizer.bos_token_id is not None and len(ids) > len(bare) and ids[0] == tokenizer.bos_token_id
    add_eos = tokenizer.eos_token_id is not None and len(ids) > len(bare) and ids[-1] == tokenizer.eos_token_id
    return add_bos, add_eos


def add_vocabulary(writer, vocab: Vocabulary) -> None:
    """Write ``tokenizer.ggml.*`` and ``tokenizer.chat_template``."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(True)  # llama.cpp's default for this model, stated so no reader guesses
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos_id, writer.add_bos_token_id), (vocab.eos_id, writer.add_eos_token_id),
                       (vocab.unk_id, writer.add_unk_token_id), (vocab.pad_id, writer.add_pad_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# ---- chat template and model card -----------------------------------------------------------------------------


def chat_template_for(tokenizer, model_dir: Path) -> str | None:
    """The tokenizer's chat template; for a tulu-format model saved without one, TÜLU's (merge.json says so)."""
    if tokenizer.chat_template:
        return tokenizer.chat_template
    if _chat_format(model_dir) == "tulu":
        from tulu_lite.data.chat_format import TULU_CHAT_TEMPLATE

        return TULU_CHAT_TEMPLATE
    return None


def _chat_format(model_dir: Path) -> str | None:
    """The chat format `tulu-lite merge` recorded in merge.json, if this is a merged model."""
    record = model_dir / "merge.json"
    if not record.is_file():
        return None
    settings = read_json_file(record)
    return settings.get("chat_template") if isinstance(settings, dict) else None


@dataclass(frozen=True)
class ModelCard:
    name: str
    description: str | None


def read_model_card(model_dir: Path) -> ModelCard:
    """Name and description from README.md: its first heading and the paragraph after it (front matter skipped).

    Falls back to the directory's name.
    """
    card = model_dir / "README.md"
    name, description = model_dir.resolve().name, None
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)
        heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
        if heading:
            name = heading.group(1).strip()
            rest = text[heading.end():].strip()
            paragraph = rest.split("\n\n", 1)[0].strip() if rest else ""
            if paragraph and not paragraph.startswith(("#", "|", "```", "-")):
                description = " ".join(paragraph.split())
    return ModelCard(name=name, description=description)
