"""BIG-Bench Hard: 27 tasks, 3-shot chain of thought (`bbh_direct`: 3-shot final answers), exact match per task
and averaged over tasks.

Prompt: the task's released CoT prompt (`cot-prompts/<task>.txt` without its two header lines: a description and
three worked "Q: ..\\nA: Let's think step by step. .. So the answer is X." examples), stripped, then
"\\n\\nQ: <input>" and "A:" (after "\\n" in a raw prompt, after the assistant header in a chat). The prediction is the
text between the first "So the answer is" and the next period on that line; without one, the output up to its
first blank line.

- tulu-v1 (the paper): 40 examples per task drawn with `random.seed(42)` + `random.sample`, task files in the
  order `glob` lists them; no stop sequence (512 new tokens or the end of the turn); exact match after
  lower-casing and deleting punctuation (spaces count: "])}" does not match "] ) }").
- tulu-lite: every example (or the first N) of the tasks in name order; generation stops at the next "\\n\\nQ:";
  matching also ignores surrounding spaces.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import required_file, task_dir
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.scoring import (
    loose_match,
    open_instruct_match,
    percent,
    truncate_at_stop,
)
from tulu_lite.eval.settings import EvalSettings, subset_size
from tulu_lite.eval.subsets import glob_order, reference_rng, sample_if_longer
from tulu_lite.json_files import read_json_file

NAME = "bbh"
MAX_NEW_TOKENS = 512
PAPER_SUBSET = 40
PREDICTION_KEYS = ("task", "target", "output")
SCORING_KEYS = ()
HEADLINE_LABEL = "BBH EM (3-shot CoT)"
_ANSWER = re.compile(r"So the answer is (.*?)\.")


def cot_prompt(path: Path, settings: EvalSettings, *, direct: bool = False) -> str:
    """A released CoT prompt without its canary line and "-----" separator (the reference drops the first two
    lines unconditionally; tulu-lite only when the second line is the separator); `direct` keeps only each
    example's question and final answer."""
    with open(required_file(path, "BBH chain-of-thought prompt"), encoding="utf-8") as handle:
        lines = handle.readlines()
    if settings.protocol == "tulu-v1" or (len(lines) > 1 and lines[1].strip() == "-----"):
        lines = lines[2:]
    text = "".join(lines)
    return (direct_prompt(text, path) if direct else text).strip()


def direct_prompt(text: str, path: Path) -> str:
    """The reference's --no_cot prompt: every "\n\n"-separated block that starts with "Q:" becomes its question,
    "\nA: " and what follows its last "So the answer is" (final period included); other blocks stay."""
    blocks = []
    for block in text.split("\n\n"):
        if block.startswith("Q:"):
            if "So the answer is" not in block or "\nA:" not in block:
                raise TuluError(f"{path}: an example without 'So the answer is' or '\\nA:' (a direct prompt is "
                                f"made from the chain-of-thought examples' final answers)")
            block = block.split("\nA:")[0].strip() + "\nA: " + block.split("So the answer is")[-1].strip()
        blocks.append(block)
    return "\n\n".join(blocks)


def task_files(settings: EvalSettings) -> list[Path]:
    root = task_dir(settings, NAME)
    if settings.protocol == "tulu-v1":
        files = glob_order(root / "bbh", "*.json")
    else:
        files = sorted((root / "bbh").glob("*.json"))
    if not files:
        raise TuluError(f"{root / 'bbh'}: no <task>.json files (expected BIG-Bench-Hard's bbh/ folder)")
    return files


def task_name(path: Path) -> str:
    return path.name.split(".")[0]


def read_task(path: Path) -> list[dict]:
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise TuluError(f"{path}: expected an object with an 'examples' list")
    for index, example in enumerate(data["examples"]):
        if not isinstance(example, dict) or not {"input", "target"} <= example.keys():
            raise TuluError(f"{path}: examples[{index}] needs 'input' and 'target'")
    return [{"task": task_name(path), "index": i, "input": ex["input"], "target": ex["target"]}
            for i, ex in enumerate(data["examples"])]


def load(settings: EvalSettings, *, direct: bool = False) -> list[dict]:
    """Examples of every task with its CoT (or direct) prompt; one seeded generator across tasks, as the
    reference."""
    root = task_dir(settings, NAME)
    n = subset_size(settings, PAPER_SUBSET)
    rng = reference_rng(settings.seed)
    examples = []
    for path in task_files(settings):
        task = read_task(path)
        chosen = sample_if_longer(rng, task, n) if settings.protocol == "tulu-v1" else task[:n]
        prompt = cot_prompt(root / "cot-prompts" / f"{task_name(path)}.txt", settings, direct=direct)
        examples += [example | {"cot_prompt": prompt} for example in chosen]
    return examples


def stop_sequences(settings: EvalSettings) -> list[str]:
    # tulu-lite: the few-shot text continues with "\n\nQ:"; stopping there saves compute. The reference stops
    # nowhere, and a later "So the answer is" can be the one it extracts, so tulu-v1 must not stop either. Its
    # direct run asks for a stop at "\n\n", but passes the token ids nested one list too deep
    # (`stop_id_sequences=[[ids]]`, eval/bbh/run_eval.py), so that stop never fires: none here either.
    return [] if settings.protocol == "tulu-v1" else ["\n\nQ:"]


def extract_answer(output: str) -> str:
    found = _ANSWER.search(output)
    return found.group(1).strip() if found else output.strip().split("\n\n")[0].strip()


def predict(settings: EvalSettings, lm, *, direct: bool = False) -> list[dict]:
    examples = load(settings, direct=direct)
    chat_format = task_chat_format(settings, NAME)
    prompts = [build_prompt(ex["cot_prompt"] + "\n\nQ: " + ex["input"], "A:", chat_format, lm.tokenizer,
                            protocol=settings.protocol, raw_joiner="\n") for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                          stop=stop_sequences(settings), description=NAME + ("_direct" if direct else ""))
    return [{key: value for key, value in ex.items() if key != "cot_prompt"} | {"prompt": p.text, "output": out}
            for ex, p, out in zip(examples, prompts, outputs)]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    exact: dict[str, list[bool]] = defaultdict(list)
    loose: dict[str, list[bool]] = defaultdict(list)
    for record in predictions:
        text = truncate_at_stop(record["output"], stop_sequences(settings))
        answer = extract_answer(text)
        exact[record["task"]].append(open_instruct_match(answer, record["target"]))
        loose[record["task"]].append(loose_match(answer, record["target"]))
        counted = exact if settings.protocol == "tulu-v1" else loose
        record.update(truncated=text, extracted=answer, correct=counted[record["task"]][-1])
    reference = {task: float(np.mean(values)) for task, values in exact.items()}  # tasks in the order run
    reference["average_exact_match"] = sum(reference.values()) / len(reference) if reference else 0.0
    main = exact if settings.protocol == "tulu-v1" else loose
    tasks = {task: percent(values) for task, values in sorted(main.items())}
    metrics = {"protocol": settings.protocol, "average_exact_match": sum(tasks.values()) / len(tasks) if tasks else 0.0,
               "n": len(predictions), "tasks": tasks}
    if settings.protocol == "tulu-v1":
        averaged = [percent(values) for values in loose.values()]
        metrics["corrected"] = {"average_loose_match": sum(averaged) / len(averaged) if averaged else 0.0,
                                "scorer": "tulu-lite: case, punctuation and surrounding spaces ignored"}
    return metrics | {"open_instruct": reference}


def headline(metrics: dict) -> float | None:
    return metrics.get("average_exact_match")


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    return {}


def resolved(settings: EvalSettings, *, direct: bool = False) -> dict:
    subset = subset_size(settings, PAPER_SUBSET)
    order = [task_name(p) for p in task_files(settings)]
    return {"protocol": settings.protocol, "data": str(task_dir(settings, NAME)),
            "chat_format": task_chat_format(settings, NAME), "shots": 3,
            "demonstrations": "question and final answer" if direct else "chain of thought",
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "decoding": "greedy", "subset_per_task": subset,
            "subset_draw": ("random.seed({}) + random.sample per task, one generator, tasks in this order"
                            .format(settings.seed) if settings.protocol == "tulu-v1" else "first N"),
            "task_order": order}
