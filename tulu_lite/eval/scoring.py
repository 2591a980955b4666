"""Scorers shared by the tasks: answer extraction, string matching, SQuAD F1/EM, TruthfulQA MC1/MC2, pass@k.

Plain functions of strings and numbers (no model), so saved predictions can be re-scored anywhere.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

# Signed integers and decimals. (The original pattern dropped the sign of integers, turning "-5" into 5.)
_NUMBER = re.compile(r"[-+]?\d*\.?\d+")
_THOUSANDS = re.compile(r"(\d),(\d)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def percent(values: Iterable[float]) -> float:
    """Mean of 0/1 (or fractional) scores as a percentage; 0.0 for no values."""
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else 0.0
