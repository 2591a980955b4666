"""The preference-pair family: releases whose records are two replies to one conversation, one of them preferred.

Pairs are not conversations, so they have their own rows (`table.PAIR_SOURCES`), their converters (here) and their
own output, one ``{"dataset": ..., "id": ..., "chosen": [messages], "rejected": [messages]}`` line per pair, the
format `tulu_lite.data.pairs` reads for ``stage: dpo``. The pipeline (`pipeline.convert_pairs`) passes every pair
through `tulu_lite.data.pairs.to_pair`, the row checks training applies, before writing it; a record those checks
would refuse, or that preference tuning would drop (identical sides), is dropped here and counted by reason.

Anthropic HH-RLHF (github.com/anthropics/hh-rlhf, also the hub dataset ``Anthropic/hh-rlhf``) is released as one
folder per subset (harmless-base, helpful-base, helpful-online, helpful-rejection-sampled), each holding
``train.jsonl.gz`` and ``test.jsonl.gz``; a line is ``{"chosen": TRANSCRIPT, "rejected": TRANSCRIPT}``, two
``\\n\\nHuman: ...\\n\\nAssistant: ...`` transcripts meant to share every turn but the last Assistant reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tulu_lite.data.raw import RawRecord
from tulu_lite.errors import TuluError

Pair = dict  # {"chosen": messages, "rejected": messages}
# A converter returns the pair, or None and why the record is dropped.
PairConverter = Callable[[RawRecord], tuple[Pair | None, str | None]]

DROP_NOT_TRANSCRIPT = "a side is not a '\\n\\nHuman:' transcript"
DROP_NO_REPLY = "a side does not end with an Assistant reply"
DROP_DIFFERENT_PROMPT = "chosen and rejected differ before the last Assistant reply"


@dataclass(frozen=True)
class PairSource:
    """One row of the preference-pair table: what the authors release and how a record becomes a pair."""

    name: str
    release: str  # the raw files as released, for help and error messages
    files: tuple[str, ...]  # file names read in RAW_PATH (a folder) or in each of its sub-folders, plain or .gz
    fields: dict[str, tuple[type, ...]]  # required top-level keys of a record and their JSON types
    convert: PairConverter
    subsets: tuple[str, ...] = ()  # released sub-folder names; a file inside one is the dataset NAME/SUBSET

    @property
    def expected(self) -> str:
        return f"the '{self.name}' format: {self.release}"

    def dataset(self, folder_name: str) -> str:
        """The records' ``dataset``: the subset a file's folder names, else the source (a per-source metric key)."""
        return f"{self.name}/{folder_name}" if folder_name in self.subsets else self.name


def convert_hh_rlhf(raw: RawRecord) -> tuple[Pair | None, str | None]:
    """An HH-RLHF record as a pair, or why it is dropped: a side that doesn't parse as a transcript or doesn't end
    with an Assistant reply, sides that differ before that reply (the row checks would refuse those), identical
    sides (preference tuning drops them: they carry no preference)."""
    from tulu_lite.data.pairs import (  # imports transformers: not at CLI start
        DROP_IDENTICAL,
        hh_rlhf_messages,
    )

    try:
        chosen, rejected = hh_rlhf_messages(raw.value["chosen"]), hh_rlhf_messages(raw.value["rejected"])
    except TuluError:
        return None, DROP_NOT_TRANSCRIPT
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None, DROP_NO_REPLY
    if chosen[:-1] != rejected[:-1]:
        return None, DROP_DIFFERENT_PROMPT
    if chosen == rejected:
        return None, DROP_IDENTICAL
    return {"chosen": chosen, "rejected": rejected}, None
