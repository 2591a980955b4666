"""MMLU (Hendrycks et al.): 57 subjects, 4-way multiple choice, 0-shot and 5-shot.

Prompt (the original evaluation's format): "The following are multiple choice questions (with answers) about
<subject>.\\n\\n", then the dev examples ("question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n"), then the test
question ending in "Answer:". The prediction is whichever of the letters A/B/C/D the model gives the highest
next-token probability. Accuracy per subject, per category (STEM, humanities, social sciences, other) and overall
(pooled over all questions). In a chat format the whole prompt is the user turn and the assistant's answer opens
with "The answer is:".
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import task_dir
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.scoring import percent
from tulu_lite.eval.settings import EvalSettings

NAME = "mmlu"
LETTERS = ("A", "B", "C", "D")
PREDICTION_KEYS = ("subject", "shots", "answer", "prediction")
HEADLINE_LABEL = "MMLU acc (0-shot)"

# subject -> category, from the MMLU release's subject -> subcategory -> category tables.
_SUBCATEGORY_OF = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics", "business_ethics": "business",
    "clinical_knowledge": "health", "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math", "college_medicine": "health",
    "college_physics": "physics", "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering", "elementary_mathematics": "math",
    "formal_logic": "philosophy", "global_facts": "other", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics", "security_studies": "politics",
    "sociology": "culture", "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
_CATEGORY_OF_SUBCATEGORY = {
    "physics": "STEM", "chemistry": "STEM", "biology": "STEM", "computer science": "STEM", "math": "STEM",
    "engineering": "STEM", "history": "humanities", "philosophy": "humanities", "law": "humanities",
    "politics": "social sciences", "culture": "social sciences", "economics": "social sciences",
    "geography": "social sciences", "psychology": "social sciences", "other": "other", "business": "other",
    "health": "other",
}


def category(subject: str) -> str:
    """The MMLU category of a subject ("unknown" for a subject outside the 57)."""
    return _CATEGORY_OF_SUBCATEGORY.get(_SUBCATEGORY_OF.get(subject, ""), "unknown")


def data_root(settings: EvalSettings) -> Path:
    """The folder holding `dev/` and `test/`: the release's `data/` folder, or the task folder itself."""
    base = task_dir(settings, NAME)
    root = base / "data" if (base / "data" / "test").is_dir() else base
    if not (root / "test").is_dir():
        raise TuluError(f"{base}: no test/ folder (expected MMLU's data/test/<subject>_test.csv layout)")
    return root


def read_rows(path: Path) -> list[list[str]]:
    """A headerless MMLU CSV: question, four options, answer letter."""
    if not path.is_file():
        raise TuluError(f"{path}: not found (every MMLU subject needs a dev and a test file)")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    for number, row in enumerate(rows, start=1):
        if len(row) != 6:
            raise TuluError(f"{at(path, number)}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
        if row[5].strip() not in LETTERS:
            raise TuluError(f"{at(path, number)}: answer is {row[5]!r}, expected one of A, B, C, D")
    return rows


def format_example(row: list[str], with_answer: bool) -> str:
    text = row[0] + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, row[1:5])) + "\nAnswer:"
    return text + f" {row[5].strip()}\n\n" if with_answer else text


def header(subject: str) -> str:
    # The original code joins " " + each word of the subject, so there are two spaces after "about"; kept so the
    # prompt is byte-identical to the published setup.
    return f"The following are multiple choice questions (with answers) about {' ' + ' '.join(subject.split('_'))}.\n\n"


def answer_start(settings: EvalSettings) -> str:
    """In a chat the assistant's turn opens the answer; a raw prompt already ends with "Answer:"."""
    return "The answer is:" if settings.chat_format != "none" else ""


def build(subject: str, dev: list[list[str]], row: list[str], shots: int, settings: EvalSettings, tokenizer):
    """The prompt for one question, dropping dev examples until it fits the token budget."""
    while True:
        user = header(subject) + "".join(format_example(d, True) for d in dev[:shots]) + format_example(row, False)
        prompt = build_prompt(user, answer_start(settings), settings.chat_format, tokenizer)
        length = len(tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens).input_ids)
        if shots == 0 or length <= settings.mmlu_max_prompt_tokens:
            return prompt, shots
        shots -= 1


def answer_token_ids(tokenizer) -> list[int]:
    """The token each letter is after "Answer:" (a leading-space piece for sentencepiece/BPE vocabularies)."""
    ids = [tokenizer("Answer: " + letter, add_special_tokens=False).input_ids[-1] for letter in LETTERS]
    if len(set(ids)) != 4 or [tokenizer.decode([i]).strip() for i in ids] != list(LETTERS):
        raise TuluError("mmlu: this tokenizer has no single token for each answer letter A/B/C/D after 'Answer:'")
    return ids


def subjects(settings: EvalSettings) -> list[str]:
    root = data_root(settings)
    names = sorted(p.name[: -len("_test.csv")] for p in (root / "test").glob("*_test.csv"))
    if not names:
        raise TuluError(f"{root / 'test'}: no <subject>_test.csv files")
    return names


def load(settings: EvalSettings) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """(subject, dev rows, test rows) for every subject, test rows cut to `limit`."""
    root = data_root(settings)
    return [(subject, read_rows(root / "dev" / f"{subject}_dev.csv"),
             read_rows(root / "test" / f"{subject}_test.csv")[: settings.limit]) for subject in subjects(settings)]


def predict(settings: EvalSettings, lm) -> list[dict]:
    records, prompts = [], []
    for subject, dev, test in load(settings):
        for shots in settings.mmlu_shots:
            for index, row in enumerate(test):
                prompt, used = build(subject, dev, row, shots, settings, lm.tokenizer)
                prompts.append(prompt)
                records.append({"subject": subject, "shots": shots, "shots_used": used, "index": index,
                                "question": row[0], "answer": row[5].strip()})
    logprobs = lm.next_token_logprobs(prompts, answer_token_ids(lm.tokenizer), description="mmlu")
    for record, scores in zip(records, logprobs):
        record["prediction"] = LETTERS[max(range(4), key=scores.__getitem__)]
        record["logprobs"] = dict(zip(LETTERS, scores))
    return records


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    by_shots: dict[int, list[dict]] = defaultdict(list)
    for record in predictions:
        by_shots[int(record["shots"])].append(record)
    return {f"{shots}-shot": _accuracies(rows) for shots, rows in sorted(by_shots.items())}


def _accuracies(rows: list[dict]) -> dict:
    by_subject: dict[str, list[float]] = defaultdict(list)
    by_category: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        correct = float(row["prediction"] == row["answer"])
        by_subject[row["subject"]].append(correct)
        by_category[category(row["subject"])].append(correct)
    return {"accuracy": percent(float(r["prediction"] == r["answer"]) for r in rows), "n": len(rows),
            "categories": {name: percent(v) for name, v in sorted(by_category.items())},
            "subjects": {name: percent(v) for name, v in sorted(by_subject.items())}}


def headline(metrics: dict) -> float | None:
    """0-shot accuracy as in the paper's Table 4 (the lowest shot count run when 0-shot was not)."""
    return metrics[min(metrics, key=lambda key: int(key.split("-")[0]))]["accuracy"] if metrics else None


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(data_root(settings)), "shots": settings.mmlu_shots,
            "max_prompt_tokens": settings.mmlu_max_prompt_tokens, "limit_per_subject": settings.limit,
            "answer_start": answer_start(settings),
            "prediction": "argmax of next-token log-probability over A/B/C/D"}
