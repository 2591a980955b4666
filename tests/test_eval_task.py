"""Every task in the runner's table satisfies the task contract (eval/task.py), signatures included."""

from __future__ import annotations

import types

import pytest

from tulu_lite.eval import gsm
from tulu_lite.eval.runner import TASK_MODULES
from tulu_lite.eval.settings import TASKS
from tulu_lite.eval.task import EvalTask, interface_problems, members


def test_the_table_holds_every_task_name_once():
    assert tuple(TASK_MODULES) == TASKS


@pytest.mark.parametrize("name", TASKS)
def test_every_task_satisfies_the_contract(name):
    module = TASK_MODULES[name]
    assert isinstance(module, EvalTask)
    assert interface_problems(module) == []
    assert module.NAME == name


def test_the_contract_lists_functions_with_signatures_and_constants():
    found = members()
    assert {name for name, signature in found.items() if signature is None} == {"NAME", "PREDICTION_KEYS",
                                                                               "SCORING_KEYS"}
    assert list(found["score"].parameters) == ["predictions", "settings"]
    assert list(found["headline_label"].parameters) == ["metrics"]


def test_the_check_names_what_is_wrong():
    broken = types.ModuleType("broken")
    for name in members():
        setattr(broken, name, getattr(gsm, name))
    broken.NAME = 3
    broken.score = lambda settings, predictions: {}  # parameters swapped
    broken.headline = lambda metrics, extra: None  # an extra parameter without a default
    broken.resolved = lambda: {}  # too few
    del broken.headline_label
    assert not isinstance(broken, EvalTask)
    assert interface_problems(broken) == [
        "NAME is not a str",
        "score: parameter 1 is 'settings' (positional or keyword), expected 'predictions' (positional or keyword)",
        "score: parameter 2 is 'predictions' (positional or keyword), expected 'settings' (positional or keyword)",
        "headline: extra parameter 'extra' has no default",
        "no headline_label",
        "resolved: takes 0 parameters, expected 1"]
    broken.headline_label = "a label"
    assert "headline_label is not a function" in interface_problems(broken)
