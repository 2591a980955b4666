"""GSM8K: grade-school maths word problems, 8-shot chain of thought, greedy (`gsm_direct`: 8-shot final answers).

Prompt: "Answer the following questions.\\n\\n", the eight published chain-of-thought exemplars (Wei et al. 2022,
Table 20) as "Question: ..\\nAnswer: ..", then "Question: <q>" and "Answer:" (after "\\n" in a raw prompt, after the
assistant header in a chat).

- tulu-v1 (the paper): 200 questions drawn with `random.seed(42)` + `random.sample`; generation stops at the first
  newline, chat or not; the prediction is the last number (integers lose their sign) or the whole output, and it
  counts when it equals the reference after lower-casing and deleting punctuation ("10.0" and "$18.00" do not
  count for 10 and 18). tulu-lite's numeric match is reported beside it as `corrected`.
- tulu-lite: every question (or the first N); a chat model ends its own turn; the prediction is the last signed
  number, compared numerically.
"""

from __future__ import annotations

import re

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import require_keys, required_file, task_dir
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.scoring import (
    last_number,
    open_instruct_exact_match,
    open_instruct_gsm_answer,
    open_instruct_match,
    percent,
    same_number,
    truncate_at_stop,
)
from tulu_lite.eval.settings import EvalSettings, subset_size
from tulu_lite.eval.subsets import reference_rng, sample_if_longer
from tulu_lite.json_files import read_jsonl

NAME = "gsm"
MAX_NEW_TOKENS = 512
PAPER_SUBSET = 200
PREDICTION_KEYS = ("answer", "output")
SCORING_KEYS = ()
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
# The direct run (open-instruct's --no_cot, `gsm_direct` in submit_eval_jobs.py) shows only the final answers; its
# demonstrations say "Quesion: " (the reference's typo, kept in tulu-v1: the model sees it 8 times).
SHORT_ANSWERS = ("6", "5", "39", "8", "9", "29", "33", "8")


def prefix(settings: EvalSettings, *, direct: bool) -> str:
    if not direct:
        return PREFIX
    label = "Quesion" if settings.protocol == "tulu-v1" else "Question"
    return "Answer the following questions.\n\n" + "\n\n".join(
        f"{label}: {question}\nAnswer: {short}" for (question, _), short in zip(EXEMPLARS, SHORT_ANSWERS)) + "\n\n"


def final_answer(text: str, where: str, settings: EvalSettings) -> str:
    """The number after "####", thousands commas removed (open-instruct takes the part after the first "####")."""
    if "####" not in text:
        raise TuluError(f"{where}: answer has no '#### <number>' final answer")
    parts = text.split("####")
    answer = re.sub(r"(\d),(\d)", r"\1\2", (parts[1] if settings.protocol == "tulu-v1" else parts[-1]).strip())
    try:
        float(answer)
    except ValueError:
        raise TuluError(f"{where}: final answer {answer!r} is not a number") from None
    return answer


def load(settings: EvalSettings) -> list[dict]:
    """Questions and their final answers from GSM8K's `test.jsonl`, subset per protocol."""
    path = required_file(task_dir(settings, NAME) / "test.jsonl", "GSM8K's test.jsonl")
    examples = []
    for number, record in read_jsonl(path):
        require_keys(record, ("question", "answer"), at(path, number))
        examples.append({"index": len(examples), "question": record["question"],
                         "answer": final_answer(record["answer"], at(path, number), settings)})
    n = subset_size(settings, PAPER_SUBSET)
    if settings.protocol == "tulu-v1":
        return sample_if_longer(reference_rng(settings.seed), examples, n)
    return examples[:n]


def stop_sequences(settings: EvalSettings) -> list[str]:
    if settings.protocol == "tulu-v1" or task_chat_format(settings, NAME) == "none":
        return ["\n"]
    return []


def predict(settings: EvalSettings, lm, *, direct: bool = False) -> list[dict]:
    examples = load(settings)
    chat_format = task_chat_format(settings, NAME)
    shots = prefix(settings, direct=direct)
    prompts = [build_prompt(shots + "Question: " + ex["question"].strip(), "Answer:", chat_format, lm.tokenizer,
                            protocol=settings.protocol, raw_joiner="\n") for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                          stop=stop_sequences(settings), description=NAME + ("_direct" if direct else ""))
    return [{**ex, "prompt": prompt.text, "output": out} for ex, prompt, out in zip(examples, prompts, outputs)]


def judge(text: str, answer: str) -> dict[str, tuple[str | None, bool]]:
    """Both scorers on one (stop-truncated) output: scorer -> (extracted answer, counted)."""
    as_string = open_instruct_gsm_answer(text)
    as_number = last_number(text)
    return {"open_instruct": (as_string, open_instruct_match(as_string, answer)),
            "numeric": (as_number, same_number(as_number, answer))}


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    """The stop rule, then both scorers per record; the protocol's scorer gives `extracted` / `correct`."""
    main, other = ("open_instruct", "numeric") if settings.protocol == "tulu-v1" else ("numeric", "open_instruct")
    verdicts = []
    for record in predictions:
        text = truncate_at_stop(record["output"], stop_sequences(settings))
        verdicts.append(judge(text, record["answer"]))
        (extracted, correct), (other_extracted, other_correct) = verdicts[-1][main], verdicts[-1][other]
        record.update({"truncated": text, "extracted": extracted, "correct": correct,
                       f"{other}_extracted": other_extracted, f"{other}_correct": other_correct})
    metrics = {"protocol": settings.protocol, "exact_match": percent(v[main][1] for v in verdicts),
               "n": len(predictions)}
    if settings.protocol == "tulu-v1":
        metrics["corrected"] = {"numeric_match": percent(v["numeric"][1] for v in verdicts),
                                "scorer": "tulu-lite: the last signed number, compared as a number"}
    return metrics | {"open_instruct": {"exact_match": open_instruct_exact_match(
        [v["open_instruct"][1] for v in verdicts])}}


def headline(metrics: dict) -> float | None:
    return metrics.get("exact_match")


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    return {}


def resolved(settings: EvalSettings, *, direct: bool = False) -> dict:
    subset = subset_size(settings, PAPER_SUBSET)
    draw = "random.seed({}) + random.sample".format(settings.seed) if settings.protocol == "tulu-v1" else "first N"
    return {"protocol": settings.protocol, "data": str(task_dir(settings, NAME) / "test.jsonl"),
            "chat_format": task_chat_format(settings, NAME), "shots": len(EXEMPLARS),
            "demonstrations": "final answers only" if direct else "chain of thought",
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "decoding": "greedy", "subset": subset, "subset_draw": draw if subset else "all",
            "headline_scorer": "open-instruct exact match" if settings.protocol == "tulu-v1" else "numeric match"}
