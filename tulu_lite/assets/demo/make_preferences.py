"""Regenerate the bundled demo preference pairs (``python make_preferences.py`` writes ``preferences.jsonl`` beside
this file) from the demo chats of ``make_demo.py``.

Every demo chat gives two pairs, both with the chat's own answer as the chosen reply:

- ``wrong-fact``: the rejected reply is the same sentence with the fact swapped for another of its table ("The
  capital of France is Rome."): to prefer the chosen one, a model must know the fact;
- ``off-topic``: the rejected reply is the answer of a chat on another topic ("A cow says moo." to a question about
  a capital): a model prefers the chosen one once it answers the question that was asked.

The rejected reply belongs to the fact, not to the chat: the three phrasings of a question get the same one, so
held-out pairs (other phrasings of facts seen in training) measure whether the preference carries over to a
question asked differently. The ``dataset`` field names the kind, so held-out metrics are reported per kind.
Seeded, so the file is stable.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_demo import QUESTIONS, conversations  # noqa: E402  (the script beside this one)


def answer_facts() -> dict[str, tuple[str, str, dict, str]]:
    """Every demo answer sentence -> (topic, key, its table, the answer template)."""
    facts = {}
    for topic, (table, _, template) in QUESTIONS.items():
        for key, value in table.items():
            facts[template.format(k=key, K=key[:1].upper() + key[1:], v=value)] = (topic, key, table, template)
    return facts


def wrong_fact(answer: str, facts: dict, rng: random.Random) -> str:
    """The same sentence with another value of the same table."""
    topic, key, table, template = facts[answer]
    value = rng.choice(sorted(v for v in set(table.values()) if v != table[key]))
    return template.format(k=key, K=key[:1].upper() + key[1:], v=value)


def off_topic(answer: str, facts: dict, rng: random.Random) -> str:
    """An answer from another topic."""
    topic = facts[answer][0]
    return rng.choice(sorted(other for other, fact in facts.items() if fact[0] != topic))


def preference_pairs(seed: int = 0) -> list[dict]:
    facts = answer_facts()
    pairs = []
    for chat in conversations():
        messages = chat["messages"]
        answer = messages[-1]["content"]
        for kind, make in (("wrong-fact", wrong_fact), ("off-topic", off_topic)):
            reply = make(answer, facts, random.Random(f"{seed}:{kind}:{answer}"))  # the same for every phrasing
            rejected = [*messages[:-1], {"role": "assistant", "content": reply}]
            pairs.append({"id": f"{chat['id']}-{kind}", "dataset": kind, "chosen": messages, "rejected": rejected})
    random.Random(seed).shuffle(pairs)
    return pairs


if __name__ == "__main__":
    out = Path(__file__).with_name("preferences.jsonl")
    with out.open("w", encoding="utf-8") as handle:
        for record in preference_pairs():
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
