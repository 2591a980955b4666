"""Wrapping a task's prompt the way the model was trained (`--chat-format tulu|native|none`).

Every task writes its prompt in two parts, as TÜLU's evaluation did: the text the user would send, and the
opening of the answer ("Answer:", "A:", "The answer is:"). Without a chat format the two are simply joined
(a base model sees the plain few-shot text); with one, the user text becomes a user turn and the answer opening
is put right after the assistant header so the model continues it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tulu_lite.eval.settings import ChatFormat


@dataclass(frozen=True)
class Prompt:
    """What the model reads: the text and whether the tokenizer should add its special tokens (BOS)."""

    text: str
    add_special_tokens: bool


def add_special_tokens(chat_format: ChatFormat) -> bool:
    """A native chat template writes its own BOS; tulu text and raw prompts get it from the tokenizer."""
    return chat_format != "native"


def build_prompt(user: str, answer_start: str, chat_format: ChatFormat, tokenizer, *, raw_joiner: str = "") -> Prompt:
    """The prompt for one example.

    `raw_joiner` separates `user` and `answer_start` when no chat format is used (e.g. `"\\n"` before
    `"Answer:"`); in a chat the answer opening follows the assistant header, after a space unless the header
    already ends in whitespace.
    """
    if chat_format == "none":
        return Prompt(user + raw_joiner + answer_start, True)
    from tulu_lite.data.chat_format import generation_prompt

    text = generation_prompt([{"role": "user", "content": user}], tokenizer, chat_format)
    if answer_start:
        text += answer_start if text[-1:] in ("\n", " ") else " " + answer_start
    return Prompt(text, add_special_tokens(chat_format))
