"""Regenerate the bundled demo conversations (``python make_demo.py`` writes ``train.jsonl`` beside this file).

A small, closed chat task that a randomly initialised tiny LLaMA can learn with LoRA in a few minutes on a CPU:
short facts (capitals, animal sounds, opposites, colours), several phrasings of each question, and answers in a
fixed sentence shape. The loss falls from ~10 (uniform over the 32k vocabulary) as the model learns first the
answer shape, then the facts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo",
    "Greece": "Athens", "Poland": "Warsaw",
}
SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "owl": "hoot",
          "lion": "roar", "frog": "ribbit"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "happy": "sad", "light": "dark",
             "open": "closed", "early": "late", "full": "empty", "old": "new"}
COLOURS = {"banana": "yellow", "grass": "green", "the sky": "blue", "snow": "white", "coal": "black",
           "a tomato": "red", "an orange": "orange", "a plum": "purple"}

QUESTIONS = {
    "capital": (CAPITALS, ["What is the capital of {k}?", "Name the capital city of {k}.",
                           "Which city is the capital of {k}?"], "The capital of {k} is {v}."),
    "sound": (SOUNDS, ["What sound does a {k} make?", "How does a {k} sound?", "What does a {k} say?"],
              "A {k} says {v}."),
    "opposite": (OPPOSITES, ["What is the opposite of {k}?", "Give me the opposite of {k}.",
                             "Opposite of {k}?"], "The opposite of {k} is {v}."),
    "colour": (COLOURS, ["What color is {k}?", "Tell me the color of {k}.", "Which color is {k}?"],
               "{K} is {v}."),
}
SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def turns() -> list[tuple[str, str]]:
    pairs = []
    for table, phrasings, answer in QUESTIONS.values():
        for key, value in table.items():
            for phrasing in phrasings:
                pairs.append((phrasing.format(k=key), answer.format(k=key, K=key[:1].upper() + key[1:], v=value)))
    return pairs


def conversations(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pairs = turns()
    records = []
    for index, (question, answer) in enumerate(pairs):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if index % 4 == 0:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        if index % 5 == 0:  # some two-turn conversations: loss only on both assistant turns
            follow_q, follow_a = rng.choice(pairs)
            messages += [{"role": "user", "content": follow_q}, {"role": "assistant", "content": follow_a}]
        records.append({"id": f"demo-{index}", "dataset": "demo", "messages": messages})
    rng.shuffle(records)
    return records


if __name__ == "__main__":
    out = Path(__file__).with_name("train.jsonl")
    with out.open("w", encoding="utf-8") as handle:
        for record in conversations():
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
