"""MMLU (Hendrycks et al.): 57 subjects, 4-way multiple choice, 0-shot and 5-shot.

Prompt (the original evaluation's format): "The following are multiple choice questions (with answers) about
<subject>.\\n\\n", then the dev examples ("question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n"), then the test
question ending in "Answer:"; dev examples are dropped while the prompt is over 2048 tokens. The prediction is
whichever letter the model gives the highest next-token probability. Accuracy per subject, per category (STEM,
humanities, social sciences, other) and overall (pooled over all questions). In a chat format the whole prompt
is the user turn and the assistant's answer opens with "The answer is:".

- tulu-v1 (the paper): the CSVs are read by pandas as the reference reads them (in an all-numeric option
  column "4" prints as "4.0" once another value is a decimal; "None" prints as "nan"), the letters are
  `tokenizer.encode(letter)[0]`, the 2048 tokens are counted without BOS, `--limit N` is the reference's
  `--n_instances` (`DataFrame.sample(N, random_state=42)`).
- tulu-lite: the csv module, the letters as tokenized after "Answer: ", BOS counted, the first N questions.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import read_csv_frame, task_dir
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.scoring import percent
from tulu_lite.eval.settings import EvalSettings, subset_size

NAME = "mmlu"
LETTERS = ("A", "B", "C", "D")
PREDICTION_KEYS = ("subject", "shots", "answer", "logprobs")
SCORING_KEYS = ()
HEADLINE_LABEL = "MMLU acc (0-shot)"
OPEN_INSTRUCT_OTHER = "other (business, health, misc.)"  # the reference's name of the "other" category

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


# category -> its subcategories, in the order (and with the names) of open-instruct's eval/mmlu/categories.py
_OPEN_INSTRUCT_CATEGORIES = {
    (OPEN_INSTRUCT_OTHER if name == "other" else name): [sub for sub, cat in _CATEGORY_OF_SUBCATEGORY.items()
                                                         if cat == name]
    for name in dict.fromkeys(_CATEGORY_OF_SUBCATEGORY.values())
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


def check_rows(rows: list[list], path: Path) -> None:
    for number, row in enumerate(rows, start=1):
        if len(row) != 6:
            raise TuluError(f"{at(path, number)}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
        if not isinstance(row[0], str):
            raise TuluError(f"{at(path, number)}: the question is empty")
        if str(row[5]).strip() not in LETTERS:
            raise TuluError(f"{at(path, number)}: answer is {row[5]!r}, expected one of A, B, C, D")


def read_rows(path: Path, settings: EvalSettings) -> list[list]:
    """A headerless MMLU CSV as rows of (question, four options, answer letter); tulu-v1 keeps pandas' values."""
    if not path.is_file():
        raise TuluError(f"{path}: not found (every MMLU subject needs a dev and a test file)")
    if settings.protocol == "tulu-v1":
        frame = read_csv_frame(path, header=False)
        rows = [list(row) for row in frame.itertuples(index=False)]
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    check_rows(rows, path)
    return rows


def format_example(row: list, with_answer: bool) -> str:
    text = row[0] + "".join("\n{}. {}".format(letter, option) for letter, option in zip(LETTERS, row[1:5]))
    text += "\nAnswer:"
    return text + " {}\n\n".format(row[5]) if with_answer else text


def header(subject: str) -> str:
    # The original code joins " " + each word of the subject, so there are two spaces after "about"; kept so the
    # prompt is byte-identical to the published setup.
    return f"The following are multiple choice questions (with answers) about {' ' + ' '.join(subject.split('_'))}.\n\n"


def answer_start(settings: EvalSettings) -> str:
    """In a chat the assistant's turn opens the answer; a raw prompt already ends with "Answer:"."""
    return "The answer is:" if task_chat_format(settings, NAME) != "none" else ""


def prompt_length(prompt, tokenizer, settings: EvalSettings) -> int:
    # The reference counts without special tokens (the model then reads BOS as well).
    special = prompt.add_special_tokens and settings.protocol == "tulu-lite"
    return len(tokenizer(prompt.text, add_special_tokens=special).input_ids)


def build(subject: str, dev: list[list], row: list, shots: int, settings: EvalSettings, tokenizer):
    """The prompt for one question, dropping dev examples until it fits the token budget."""
    chat_format = task_chat_format(settings, NAME)
    while True:
        user = header(subject) + "".join(format_example(d, True) for d in dev[:shots]) + format_example(row, False)
        prompt = build_prompt(user, answer_start(settings), chat_format, tokenizer, protocol=settings.protocol)
        if shots == 0 or prompt_length(prompt, tokenizer, settings) <= settings.mmlu_max_prompt_tokens:
            return prompt, shots
        shots -= 1


def answer_token_ids(tokenizer, settings: EvalSettings) -> list[int]:
    """The token scored for each letter: tulu-v1 `encode(letter)[0]` as the reference; tulu-lite the letter as
    tokenized after "Answer: " (a leading-space piece for sentencepiece/BPE vocabularies)."""
    if settings.protocol == "tulu-v1":
        ids = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in LETTERS]
    else:
        ids = [tokenizer("Answer: " + letter, add_special_tokens=False).input_ids[-1] for letter in LETTERS]
    if len(set(ids)) != 4 or [tokenizer.decode([i]).strip() for i in ids] != list(LETTERS):
        raise TuluError("mmlu: this tokenizer has no single token for each answer letter A/B/C/D")
    return ids


def subjects(settings: EvalSettings) -> list[str]:
    root = data_root(settings)
    if settings.protocol == "tulu-v1":
        names = sorted(f.split("_test.csv")[0] for f in os.listdir(root / "test") if "_test.csv" in f)
    else:
        names = sorted(p.name[: -len("_test.csv")] for p in (root / "test").glob("*_test.csv"))
    if not names:
        raise TuluError(f"{root / 'test'}: no <subject>_test.csv files")
    return names


def test_subset(rows: list[list], settings: EvalSettings) -> list[tuple[int, list]]:
    """(row index, row) of the evaluated test questions; tulu-v1 draws as `DataFrame.sample(n, random_state=42)`."""
    n = subset_size(settings, None)
    indexed = list(enumerate(rows))
    if n is None or n >= len(rows):
        return indexed
    if settings.protocol == "tulu-v1":
        import pandas as pd

        order = pd.DataFrame({"row": range(len(rows))}).sample(n, random_state=42)["row"].tolist()
        return [indexed[i] for i in order]
    return indexed[:n]


def load(settings: EvalSettings) -> list[tuple[str, list[list], list[tuple[int, list]]]]:
    """(subject, dev rows, evaluated (index, test row)) for every subject."""
    root = data_root(settings)
    return [(subject, read_rows(root / "dev" / f"{subject}_dev.csv", settings),
             test_subset(read_rows(root / "test" / f"{subject}_test.csv", settings), settings))
            for subject in subjects(settings)]


def predict(settings: EvalSettings, lm) -> list[dict]:
    records, prompts = [], []
    for subject, dev, test in load(settings):
        for shots in settings.mmlu_shots:
            for index, row in test:
                prompt, used = build(subject, dev, row, shots, settings, lm.tokenizer)
                prompts.append(prompt)
                answer = row[5] if settings.protocol == "tulu-v1" else row[5].strip()
                records.append({"subject": subject, "shots": shots, "shots_used": used, "index": index,
                                "question": row[0], "answer": answer, "prompt": prompt.text})
    logprobs = lm.next_token_logprobs(prompts, answer_token_ids(lm.tokenizer, settings), description=NAME)
    for record, scores in zip(records, logprobs):
        record["continuations"] = list(LETTERS)
        record["logprobs"] = dict(zip(LETTERS, scores))
    return records


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    """The prediction is the argmax over the four letters (the first on a tie, as numpy's argmax)."""
    by_shots: dict[int, list[dict]] = defaultdict(list)
    for record in predictions:
        scores = [record["logprobs"][letter] for letter in LETTERS]
        record["extracted"] = LETTERS[max(range(4), key=scores.__getitem__)]
        record["correct"] = record["extracted"] == record["answer"]
        by_shots[int(record["shots"])].append(record)
    metrics: dict = {f"{shots}-shot": _accuracies(rows) for shots, rows in sorted(by_shots.items())}
    return {"protocol": settings.protocol, **metrics,
            "open_instruct": {f"{shots}-shot": open_instruct_metrics(rows) for shots, rows in sorted(by_shots.items())}}


def _accuracies(rows: list[dict]) -> dict:
    by_subject: dict[str, list[float]] = defaultdict(list)
    by_category: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_subject[row["subject"]].append(float(row["correct"]))
        by_category[category(row["subject"])].append(float(row["correct"]))
    return {"accuracy": percent(float(r["correct"]) for r in rows), "n": len(rows),
            "categories": {name: percent(v) for name, v in sorted(by_category.items())},
            "subjects": {name: percent(v) for name, v in sorted(by_subject.items())}}


def open_instruct_metrics(rows: list[dict]) -> dict:
    """The reference's metrics.json of one `--ntrain` run: fractions, subcategories and categories in its order
    (only those with questions: the reference needs all 57 subjects to fill every one)."""
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_subject[row["subject"]].append(bool(row["correct"]))
    subcats: dict[str, list] = defaultdict(list)
    for subject, subcat in _SUBCATEGORY_OF.items():
        if subject in by_subject:
            subcats[subcat].append(np.array(by_subject[subject]))
    cats: dict[str, list] = defaultdict(list)
    for name, members in _OPEN_INSTRUCT_CATEGORIES.items():
        for subcat in members:
            cats[name] += subcats.get(subcat, [])
    everything = [np.array(values) for values in by_subject.values()]
    return {"average_acc": float(np.mean(np.concatenate(everything))) if everything else 0.0,
            "subcat_acc": {name: float(np.mean(np.concatenate(v))) for name, v in _in_order(subcats).items()},
            "cat_acc": {name: float(np.mean(np.concatenate(v))) for name, v in cats.items() if v}}


def _in_order(subcats: dict[str, list]) -> dict[str, list]:
    order = list(dict.fromkeys(_SUBCATEGORY_OF.values()))
    return {name: subcats[name] for name in order if subcats.get(name)}


def headline(metrics: dict) -> float | None:
    """0-shot accuracy as in the paper's Table 4 (the lowest shot count run when 0-shot was not)."""
    shots = [key for key in metrics if key.endswith("-shot")]
    return metrics[min(shots, key=lambda key: int(key.split("-")[0]))]["accuracy"] if shots else None


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    return {}


def resolved(settings: EvalSettings) -> dict:
    return {"protocol": settings.protocol, "data": str(data_root(settings)),
            "chat_format": task_chat_format(settings, NAME), "shots": settings.mmlu_shots,
            "max_prompt_tokens": settings.mmlu_max_prompt_tokens, "subset_per_subject": subset_size(settings, None),
            "subset_draw": "DataFrame.sample(N, random_state=42)" if settings.protocol == "tulu-v1" else "first N",
            "answer_start": answer_start(settings),
            "prediction": "argmax of next-token log-probability over A/B/C/D"}
