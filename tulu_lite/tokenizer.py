"""Loading tokenizers offline, with a pad token that never changes the vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tulu_lite.errors import TuluError, first_line
from tulu_lite.json_files import read_json_file

BUNDLED_LLAMA_TOKENIZER = Path(__file__).parent / "assets" / "tokenizers" / "llama"


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory and give it a pad token if it has none.

    The pad token is an existing token (`unk`, else `eos`), never a new one: adding a token would grow the
    embedding matrix and make a LoRA adapter unloadable on the untouched base. Labels never depend on the pad
    id (they are built from the encoder's mask), so reusing `eos` as pad cannot hide the real end of turn.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise TuluError(f"{directory}: tokenizer directory not found")
    if not any((directory / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise TuluError(f"{directory}: not a tokenizer directory (no tokenizer.json, tokenizer.model or vocab.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types here; the user needs one line.
        _blame_json_files(directory)
        raise TuluError(f"{directory}: could not load tokenizer ({type(exc).__name__}: {first_line(exc, '')})") from exc
    if not tokenizer.is_fast:
        raise TuluError(f"{directory}: a fast (tokenizer.json) tokenizer is required for exact masking")
    if getattr(tokenizer, "legacy", None) is not None:
        # transformers 5.23 leaves `legacy` out of a saved tokenizer_config.json when it came from the class
        # default, and the copy reloads as legacy=False: after </s> it then tokenizes "\n" as [13] instead of
        # [29871, 13], so an adapter dir's tokenizer would no longer match training. Pin it so saves round-trip.
        tokenizer.init_kwargs["legacy"] = tokenizer.legacy
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


# The JSON files a tokenizer directory may hold; a truncated or hand-edited one makes transformers raise an error
# that names neither the file nor the line.
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "config.json")


def _blame_json_files(directory: Path) -> None:
    """After a failed load: raise one line naming the first tokenizer JSON file that is not valid JSON, if any."""
    for name in _TOKENIZER_JSON:
        file = directory / name
        if not file.is_file():
            continue
        read_json_file(file)  # raises one line naming the file and line
