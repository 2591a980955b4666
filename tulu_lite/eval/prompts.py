"""Wrapping a task's prompt the way the model was trained (`--chat-format tulu|native|none`).

Every task writes its prompt in two parts, as TÜLU's evaluation did: the text the user would send, and the
opening of the answer ("Answer:", "A:", "The answer is:"). Without a chat format the two are joined (a base model
sees the plain few-shot text); with one, the user text becomes a user turn and the answer opening follows the
assistant header (after a space unless the header already ends in whitespace), so the model continues it.

The two protocols differ in one character class: open-instruct's evaluation (`tulu-v1`) builds the tulu turn as
``"<|user|>\\n" + text + "\\n<|assistant|>\\n"`` with the text as it is, while tulu-lite's own protocol uses the
training renderer, which strips each message (a TydiQA prompt ending in "\\n" loses that newline there).
"""

from __future__ import annotations

from dataclasses import dataclass

from tulu_lite.eval.settings import ChatFormat, EvalSettings, Protocol

# Tasks the TÜLU paper evaluated without a chat format even for chat models (scripts/submit_eval_jobs.py runs
# Codex-HumanEval and TruthfulQA without --use_chat_format).
RAW_IN_TULU_V1 = ("codex_humaneval", "truthfulqa")


@dataclass(frozen=True)
class Prompt:
    """What the model reads: the text and whether the tokenizer should add its special tokens (BOS)."""

    text: str
    add_special_tokens: bool


def task_chat_format(settings: EvalSettings, task: str) -> ChatFormat:
    """The chat format a task runs with: tulu-v1 keeps the paper's raw prompts for HumanEval and TruthfulQA."""
    if settings.protocol == "tulu-v1" and task in RAW_IN_TULU_V1:
        return "none"
    return settings.chat_format


def add_special_tokens(chat_format: ChatFormat) -> bool:
    """A native chat template writes its own BOS; tulu text and raw prompts get it from the tokenizer."""
    return chat_format != "native"


def build_prompt(user: str, answer_start: str, chat_format: ChatFormat, tokenizer, *, protocol: Protocol,
                 raw_joiner: str = "") -> Prompt:
    """The prompt for one example.

    `raw_joiner` separates `user` and `answer_start` when no chat format is used (e.g. `"\\n"` before
    `"Answer:"`).
    """
    if chat_format == "none":
        return Prompt(user + raw_joiner + answer_start, True)
    if chat_format == "tulu" and protocol == "tulu-v1":
        text = "<|user|>\n" + user + "\n<|assistant|>\n"
    else:
        from tulu_lite.data.chat_format import generation_prompt

        text = generation_prompt([{"role": "user", "content": user}], tokenizer, chat_format)
    if answer_start:
        text += answer_start if text[-1:] in ("\n", " ") else " " + answer_start
    return Prompt(text, add_special_tokens(chat_format))
