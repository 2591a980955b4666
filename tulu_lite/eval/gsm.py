"""GSM8K: grade-school maths word problems, 8-shot chain of thought, greedy, exact match on the last number.

Prompt: "Answer the following questions.\\n\\n", the eight published chain-of-thought exemplars (Wei et al. 2022,
Table 20) as "Question: ..\\nAnswer: ..", then "Question: <q>\\nAnswer:". Without a chat format generation stops at
the first newline (each exemplar answer is one line); in a chat the model ends its own turn. The prediction is the
last number in the output, compared numerically with the number after "####" in the reference answer.
"""

from __future__ import annotations

import re

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import read_jsonl, required_file, require_keys, task_dir
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.scoring import last_number, percent, same_number
from tulu_lite.eval.settings import EvalSettings

NAME = "gsm"
MAX_NEW_TOKENS = 512
PREDICTION_KEYS = ("answer", "output")
HEADLINE_LABEL = "GSM EM (8-shot CoT)"

# (question, chain-of-thought answer): the standard exemplars from the chain-of-thought paper.
EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. So the answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. So the answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. So the answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "So the answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have "
     "now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "So the answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. So the answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. So the answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. So the answer is 8."),
)
PREFIX = "Answer the following questions.\n\n" + "\n\n".join(
    f"Question: {question}\nAnswer: {answer}" for question, answer in EXEMPLARS) + "\n\n"


def load(settings: EvalSettings) -> list[dict]:
    """Questions and their final numeric answers from GSM8K's `test.jsonl`."""
    path = required_file(task_dir(settings, NAME) / "test.jsonl", "GSM8K's test.jsonl")
    examples = []
    for number, record in read_jsonl(path):
        require_keys(record, ("question", "answer"), at(path, number))
        if "####" not in record["answer"]:
            raise TuluError(f"{at(path, number)}: answer has no '#### <number>' final answer")
        final = re.sub(r"(\d),(\d)", r"\1\2", record["answer"].split("####")[-1].strip())
        examples.append({"question": record["question"], "answer": final})
    return examples[: settings.limit]


def stop_sequences(settings: EvalSettings) -> list[str]:
    return ["\n"] if settings.chat_format == "none" else []


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples = load(settings)
    prompts = [build_prompt(PREFIX + "Question: " + ex["question"].strip(), "Answer:", settings.chat_format,
                            lm.tokenizer, raw_joiner="\n") for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                          stop=stop_sequences(settings), description="gsm")
    return [{**ex, "output": out} for ex, out in zip(examples, outputs)]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    correct = []
    for record in predictions:
        record["prediction"] = last_number(record["output"])
        correct.append(same_number(record["prediction"], record["answer"]))
    return {"exact_match": percent(correct), "n": len(predictions)}


def headline(metrics: dict) -> float | None:
    return metrics.get("exact_match")


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(task_dir(settings, NAME) / "test.jsonl"), "shots": len(EXEMPLARS),
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "decoding": "greedy", "limit": settings.limit}
