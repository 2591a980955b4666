"""Where HumanEval's time goes at temperature 0.1 and 0.8: generation (steps, lengths, why rows ended) and the
sandbox (programs per second, outcomes), on a few problems.

    python benchmarks/eval_humaneval.py MODEL_DIR                  # e.g. the demo model merged: runs/demo-merged
    python benchmarks/eval_humaneval.py MODEL_DIR --problems 8 --samples 20

For each temperature, exactly as `tulu-lite eval --tasks codex_humaneval --protocol P` generates (its prompts,
top-p 0.95, its top-k, its stop sequences, `--max-new-tokens`), then scores (every completion's program in the
sandbox). Reported per temperature: generation seconds (CPU and wall), new
tokens per sample, how samples ended (a stop sequence, eos, or the token budget), sandbox seconds and programs per
second, and the outcomes (passed, failed by a syntax error, other failures, timed out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from tulu_lite.eval import execution, humaneval
from tulu_lite.eval.generate import LanguageModel, load_model
from tulu_lite.eval.settings import make_settings
from tulu_lite.json_files import write_json


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model folder (e.g. the demo's merged model)")
    parser.add_argument("--protocol", default="tulu-v1", choices=["tulu-v1", "tulu-lite"])
    parser.add_argument("--problems", type=int, default=4, help="the first N HumanEval problems")
    parser.add_argument("--samples", type=int, default=8, help="samples per problem and temperature")
    parser.add_argument("--max-new-tokens", type=int, default=humaneval.MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="--humaneval-workers (capped at the CPU count)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "eval_humaneval.json")
    return parser.parse_args(argv)


def ending(output: str, tokens: int, budget: int, stop: list[str]) -> str:
    """Why a sample ended: a stop sequence in its text, the token budget used up, or else eos."""
    if any(s in output for s in stop):
        return "stop sequence"
    return "token budget" if tokens >= budget else "eos"


def outcome(record: dict) -> str:
    if record["passed"]:
        return "passed"
    if record["result"].startswith("timed out"):
        return "timed out"
    return "syntax error" if "SyntaxError" in record["result"] or "IndentationError" in record["result"] \
        else "failed otherwise"


def run_temperature(lm: LanguageModel, settings, temperature: float, args: argparse.Namespace) -> dict:
    problems = humaneval.load(settings)
    prompts = humaneval.problem_prompts(settings, problems, lm.tokenizer)
    cpu, wall = time.process_time(), time.perf_counter()
    outputs = lm.generate([p for p in prompts for _ in range(args.samples)], temperature=temperature,
                          top_p=humaneval.TOP_P, top_k=humaneval.top_k(settings), max_new_tokens=args.max_new_tokens,
                          stop=humaneval.stop_sequences(settings), description=f"T={temperature}")
    generation = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    lengths = [len(lm.tokenizer(o, add_special_tokens=False).input_ids) for o in outputs]
    records = [{"task_id": problem["task_id"], "temperature": temperature, "sample": i, "output": outputs[k]}
               for k, (problem, i) in enumerate((p, i) for p in problems for i in range(args.samples))]
    every_program = score_seconds(records, settings, precheck=False)
    sandbox_s = score_seconds(records, settings, precheck=True)
    return {"samples": len(outputs), "generation": generation,
            "new_tokens_mean": sum(lengths) / len(lengths), "new_tokens_max": max(lengths),
            "endings": dict(Counter(ending(o, n, args.max_new_tokens, humaneval.stop_sequences(settings))
                                    for o, n in zip(outputs, lengths))),
            "sandbox_wall_s_every_program_started": every_program, "sandbox_wall_s": sandbox_s,
            "programs_per_s": len(records) / sandbox_s, "outcomes": dict(Counter(outcome(r) for r in records))}


def score_seconds(records: list[dict], settings, *, precheck: bool) -> float:
    """Wall seconds to score the records; without `precheck`, as before: a sandbox for every program, including
    those that do not compile (the outcomes are the same either way, which this checks)."""
    before = [dict(record) for record in records]
    original = execution._fails_to_compile
    if not precheck:
        execution._fails_to_compile = lambda source: None
    try:
        wall = time.perf_counter()
        humaneval.score(records, settings)
        seconds = time.perf_counter() - wall
    finally:
        execution._fails_to_compile = original
    if "result" in before[0]:  # scored before: the verdicts must not change
        assert [r["result"] for r in before] == [r["result"] for r in records], "outcomes differ"
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    lm = LanguageModel(model, tokenizer, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="tulu-bench-") as tmp:
        settings = make_settings(tasks=["codex_humaneval"], output_dir=Path(tmp), limit=args.problems,
                                 protocol=args.protocol,
                                 humaneval_samples=args.samples, humaneval_workers=args.workers)
        figures = {str(t): run_temperature(lm, settings, t, args) for t in humaneval.TEMPERATURES}
    write_json(args.json, {"config": {k: str(v) for k, v in vars(args).items()}, "temperatures": figures})
    table = Table(title=f"HumanEval, {args.problems} problems x {args.samples} samples, protocol {args.protocol}")
    for column in ("T", "gen CPU s", "gen wall s", "tokens/sample", "endings", "sandbox s: before", "after",
                   "outcomes"):
        table.add_column(column)
    for temperature, f in figures.items():
        table.add_row(temperature, f"{f['generation']['cpu_s']:.1f}", f"{f['generation']['wall_s']:.1f}",
                      f"{f['new_tokens_mean']:.0f} (max {f['new_tokens_max']})",
                      ", ".join(f"{k} {v}" for k, v in f["endings"].items()),
                      f"{f['sandbox_wall_s_every_program_started']:.1f}", f"{f['sandbox_wall_s']:.1f}",
                      ", ".join(f"{k} {v}" for k, v in f["outcomes"].items()))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
