"""BIG-Bench Hard: 27 tasks, 3-shot chain of thought, exact match per task and averaged over tasks.

Prompt: the task's released CoT prompt (`cot-prompts/<task>.txt`: a description and three worked "Q: ..\\nA: Let's
think step by step. .. So the answer is X." examples), then "\\n\\nQ: <input>\\nA:". The prediction is the text
between the first "So the answer is" and the next period; without one, the output up to its first blank line.
Matching ignores case and punctuation, so "(A)" equals "A".
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import read_json, required_file, task_dir
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.scoring import loose_match, percent
from tulu_lite.eval.settings import EvalSettings

NAME = "bbh"
MAX_NEW_TOKENS = 512
# The few-shot text continues with "\n\nQ:"; stopping there only saves compute (the answer is extracted from
# the first "So the answer is" anyway).
STOP = ["\n\nQ:"]
PREDICTION_KEYS = ("task", "target", "output")
HEADLINE_LABEL = "BBH EM (3-shot CoT)"
_ANSWER = re.compile(r"So the answer is (.*?)\.")


def cot_prompt(path: Path) -> str:
    """A released CoT prompt without its leading canary line and "-----" separator."""
    lines = required_file(path, "BBH chain-of-thought prompt").read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) > 1 and lines[1].strip() == "-----":
        lines = lines[2:]
    return "".join(lines).strip()


def load(settings: EvalSettings) -> list[dict]:
    root = task_dir(settings, NAME)
    files = sorted((root / "bbh").glob("*.json"))
    if not files:
        raise TuluError(f"{root / 'bbh'}: no <task>.json files (expected BIG-Bench-Hard's bbh/ folder)")
    examples = []
    for path in files:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise TuluError(f"{path}: expected an object with an 'examples' list")
        prompt = cot_prompt(root / "cot-prompts" / f"{path.stem}.txt")
        for index, example in enumerate(data["examples"][: settings.limit]):
            if not isinstance(example, dict) or not {"input", "target"} <= example.keys():
                raise TuluError(f"{path}: examples[{index}] needs 'input' and 'target'")
            examples.append({"task": path.stem, "index": index, "input": example["input"],
                             "target": example["target"], "cot_prompt": prompt})
    return examples


def extract_answer(output: str) -> str:
    found = _ANSWER.search(output)
    return found.group(1).strip() if found else output.strip().split("\n\n")[0].strip()


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples = load(settings)
    prompts = [build_prompt(ex["cot_prompt"] + "\n\nQ: " + ex["input"], "A:", settings.chat_format, lm.tokenizer,
                            raw_joiner="\n") for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS, stop=STOP,
                          description="bbh")
    return [{key: value for key, value in ex.items() if key != "cot_prompt"} | {"output": out}
            for ex, out in zip(examples, outputs)]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    by_task: dict[str, list[bool]] = defaultdict(list)
    for record in predictions:
        record["prediction"] = extract_answer(record["output"])
        by_task[record["task"]].append(loose_match(record["prediction"], record["target"]))
    tasks = {task: percent(values) for task, values in sorted(by_task.items())}
    return {"average_exact_match": sum(tasks.values()) / len(tasks) if tasks else 0.0, "n": len(predictions),
            "tasks": tasks}


def headline(metrics: dict) -> float | None:
    return metrics.get("average_exact_match")


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(task_dir(settings, NAME)), "shots": 3, "max_new_tokens": settings.max_new_tokens or
            MAX_NEW_TOKENS, "stop": STOP, "decoding": "greedy", "limit_per_task": settings.limit}
