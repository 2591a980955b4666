"""Regenerate the bundled demo preference pairs (``python make_preferences.py`` writes ``preferences.jsonl`` beside
this file) from the demo chats in ``train.jsonl``.

The pairs teach a preference that a tiny RANDOM base can learn in a minute and carry over to questions it was not
trained on: how to answer, not what is true. (An earlier draft's rejected replies were wrong facts, "The capital of
France is Rome.": a random model knows no facts, so held-out reward accuracy stayed near chance.) The chosen reply
is always the chat's own answer; the rejected one is, by source (the ``dataset`` field, so held-out metrics are
reported per kind of mistake):

- ``refusal``: a refusal or an evasive non-answer ("I'm sorry, but I can't help with that.");
- ``shouting``: the right answer in the wrong form, in capitals ("THE CAPITAL OF FRANCE IS PARIS.");
- ``off-topic``: the answer of a chat on another topic ("A cow says moo." to a question about a capital): the
  hardest kind, as the model must relate the reply to the question.

Each chat gives one pair of each kind; every message before the last reply is the chat's own (system prompt and
earlier turns included), so chosen and rejected differ only in the reply being compared. Which refusal or
off-topic answer a chat gets is drawn from a generator seeded by the chat's id, so the file is stable and does not
depend on the order of ``train.jsonl``; the pairs are then shuffled with a fixed seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tulu_lite.json_files import read_jsonl

HERE = Path(__file__).parent
REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I cannot answer that question.",
    "As an AI, I am not able to answer this.",
    "Sorry, I would rather not say.",
    "That is a good question, but I don't know.",
    "It depends on how you look at it.",
    "Why do you want to know?",
    "Let me think about that and get back to you.",
]
KINDS = ("refusal", "shouting", "off-topic")


def read_chats(path: Path) -> list[dict]:
    """The demo chats, in file order."""
    return [record for _, record in read_jsonl(path)]


def topic(answer: str) -> str:
    """The demo topic of an answer, from its fixed sentence shape (see make_demo.py)."""
    if answer.startswith("The capital of "):
        return "capital"
    if answer.startswith("The opposite of "):
        return "opposite"
    return "sound" if " says " in answer else "colour"


def rejected_reply(kind: str, answer: str, answers: list[str], rng: random.Random) -> str:
    """The worse reply of one kind to the question whose good answer is `answer`."""
    if kind == "refusal":
        return rng.choice(REFUSALS)
    if kind == "shouting":
        return answer.upper()
    return rng.choice([other for other in answers if topic(other) != topic(answer)])


def preference_pairs(chats: list[dict], seed: int = 0) -> list[dict]:
    """One pair per chat and kind, shuffled with `seed`."""
    answers = sorted({chat["messages"][-1]["content"] for chat in chats})
    pairs = []
    for chat in sorted(chats, key=lambda chat: int(chat["id"].rsplit("-", 1)[1])):
        messages = chat["messages"]
        for kind in KINDS:
            rng = random.Random(f"{seed}:{kind}:{chat['id']}")
            reply = rejected_reply(kind, messages[-1]["content"], answers, rng)
            rejected = [*messages[:-1], {"role": "assistant", "content": reply}]
            pairs.append({"id": f"{chat['id']}-{kind}", "dataset": kind, "chosen": messages, "rejected": rejected})
    random.Random(seed).shuffle(pairs)
    return pairs


if __name__ == "__main__":
    out = HERE / "preferences.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        for record in preference_pairs(read_chats(HERE / "train.jsonl")):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
