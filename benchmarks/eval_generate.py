"""Generation benchmark: the cost of eval's stop check, against a bare `model.generate` loop, before and after.

    python benchmarks/eval_generate.py                       # ~6 minutes on a busy 2-core CPU
    python benchmarks/eval_generate.py --new-tokens 128 --modes greedy --repeats 5

Everything runs in this one process on the same model (a tiny random LLaMA with the bundled 32k LLaMA vocabulary,
2 layers, hidden 64, fp32; `--model DIR` for another) and the same batch of HumanEval prompts, with HumanEval's
stop sequences, decoded two ways: greedy (GSM, BBH, TydiQA, ...: every task but HumanEval) and sampled at
temperature 0.8, top-p 0.95 (HumanEval's pass@10 run), seeded. Configurations:

- bare: `model.generate(...)` with no stopping criterion (the floor);
- before: the same with the stop check tulu-lite used before (kept below as `WholeTextStop`): it decodes every
  row's whole continuation at every step, so its cost grows with the square of the length;
- after: the same with `tulu_lite.eval.generate.StopOnText`, which decodes only each row's tail;
- tulu-lite: `LanguageModel.generate`, eval's whole path (padding, the stop check, decoding the outputs).

After one untimed warm-up call, each configuration runs `--repeats` times, interleaved so that load from other
processes hits all of them alike. A figure is the median CPU seconds of this process per `generate` call (torch on
one thread: on a shared machine, CPU time is what the work costs; wall time is recorded too); the ratios are over
bare. The tokens of "before" and "after" must be identical (the same rows stop at the same step), which the
script checks; it also reports how many rows ended early (none, with a random model: every row runs the full
`--new-tokens`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import StoppingCriteria, StoppingCriteriaList

from tulu_lite.eval import humaneval
from tulu_lite.eval.generate import LanguageModel, StopOnText, load_model
from tulu_lite.eval.prompts import Prompt
from tulu_lite.eval.settings import make_settings
from tulu_lite.json_files import write_json
from tulu_lite.model.tiny import build_tiny_llama
from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

TEMPERATURE, TOP_P = 0.8, 0.95


class WholeTextStop(StoppingCriteria):
    """The stop check before: decode each row's whole continuation at every step (kept here as the baseline)."""

    def __init__(self, tokenizer, stop, prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, [s for s in stop if s], prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:].tolist(), skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: a tiny random LLaMA)")
    parser.add_argument("--new-tokens", type=int, default=512, help="max_new_tokens (HumanEval's budget)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per generate call (eval's default)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (median over all)")
    parser.add_argument("--modes", default="greedy,sampled", help="greedy, sampled or both (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "eval_generate.json")
    return parser.parse_args(argv)


def load(args: argparse.Namespace):
    if args.model is not None:
        return load_model(args.model)
    tokenizer = load_tokenizer(BUNDLED_LLAMA_TOKENIZER)
    return build_tiny_llama(tokenizer).eval(), tokenizer


def prompts(batch_size: int) -> list[str]:
    """The first HumanEval problems' prompts, as protocol tulu-v1 gives them to the model (no chat format)."""
    problems = humaneval.load_problems(make_settings(tasks=["codex_humaneval"], output_dir=Path("unused")))
    return [problem["prompt"] for problem in list(problems.values())[:batch_size]]


def plan(model, tokenizer, texts: list[str], sampled: bool, args: argparse.Namespace) -> dict:
    """name -> a function that runs one generate call and returns ((cpu seconds, wall seconds), new tokens)."""
    lm = LanguageModel(model, tokenizer, batch_size=args.batch_size, seed=args.seed)
    stop = humaneval.STOP
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    decoding = {"temperature": TEMPERATURE, "top_p": TOP_P} if sampled else {"temperature": 0.0}
    options = {"max_new_tokens": args.new_tokens, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": lm.eos_ids}
    options |= {"do_sample": True, "top_k": 0, **decoding} if sampled else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    width = batch.input_ids.shape[1]

    def timed(call):
        cpu, wall = time.process_time(), time.perf_counter()
        out = call()
        return (time.process_time() - cpu, time.perf_counter() - wall), out

    def generate(criterion=None):
        def run():
            torch.manual_seed(args.seed)
            extra = {} if criterion is None else {
                "stopping_criteria": StoppingCriteriaList([criterion(tokenizer, stop, width)])}
            with torch.no_grad():
                seconds, out = timed(lambda: model.generate(**batch, **options, **extra))
            return seconds, out[:, width:]
        return run

    def whole_path():
        prompts = [Prompt(t, True) for t in texts]
        return timed(lambda: lm.generate(prompts, max_new_tokens=args.new_tokens, stop=stop, top_p=decoding.get(
            "top_p", 1.0), temperature=decoding["temperature"], description="tulu-lite"))[0], None

    return {"bare": generate(), "before (whole text)": generate(WholeTextStop), "after (tail)": generate(StopOnText),
            "tulu-lite LanguageModel.generate": whole_path}


def stopped_rows(tokens: torch.Tensor, tokenizer) -> int:
    """Rows that ended before the budget (a stop sequence or eos: padding follows)."""
    return int((tokens[:, -1] == tokenizer.pad_token_id).sum())


def measure(runs: dict, repeats: int, console: Console, mode: str) -> dict:
    """Warm up, then run every configuration `repeats` times, interleaved; the figures of one decoding mode."""
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, torch.Tensor] = {}
    console.print(f"[dim]{mode}: warm-up[/]")
    runs["bare"]()
    for repeat in range(repeats):
        for name, run in runs.items():
            console.print(f"[dim]{mode}: repeat {repeat + 1}/{repeats}: {name}[/]")
            (seconds, wall_seconds), tokens[name] = run()
            cpu[name].append(seconds)
            wall[name].append(wall_seconds)
    before, after = tokens["before (whole text)"], tokens["after (tail)"]
    bare = statistics.median(cpu["bare"])
    return {"cpu_seconds_per_call": {name: statistics.median(values) for name, values in cpu.items()},
            "wall_seconds_per_call": {name: statistics.median(values) for name, values in wall.items()},
            "ratio_to_bare": {name: statistics.median(values) / bare for name, values in cpu.items()},
            "new_tokens_generated": int(after.shape[1]), "rows_stopped_early": stopped_rows(after, runs.tokenizer),
            "before_and_after_identical": before.shape == after.shape and torch.equal(before, after)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    console = Console()
    model, tokenizer = load(args)
    texts = prompts(args.batch_size)
    modes = {}
    for mode in args.modes.split(","):
        runs = Runs(plan(model, tokenizer, texts, mode == "sampled", args), tokenizer)
        modes[mode] = measure(runs, args.repeats, console, mode)
    result = {"config": vars(args) | {"model": str(args.model or "tiny random LLaMA (2 layers, hidden 64, 32k vocab)"),
                                      "json": str(args.json), "stop": humaneval.STOP,
                                      "sampled": {"temperature": TEMPERATURE, "top_p": TOP_P},
                                      "torch": torch.__version__},
              "modes": modes}
    write_json(args.json, result)
    for mode, figures in modes.items():
        report(console, mode, figures, args)
    return 0 if all(figures["before_and_after_identical"] for figures in modes.values()) else 1


class Runs(dict):
    """The configurations of one mode, with the tokenizer (to count rows that ended early)."""

    def __init__(self, runs: dict, tokenizer):
        super().__init__(runs)
        self.tokenizer = tokenizer


def report(console: Console, mode: str, figures: dict, args: argparse.Namespace) -> None:
    table = Table(title=f"{mode}: {args.batch_size} rows x {figures['new_tokens_generated']} new tokens "
                        f"(median of {args.repeats})")
    for column in ("configuration", "CPU s per call", "wall s", "x bare (CPU)"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, seconds in figures["cpu_seconds_per_call"].items():
        table.add_row(name, f"{seconds:.2f}", f"{figures['wall_seconds_per_call'][name]:.2f}",
                      f"{figures['ratio_to_bare'][name]:.2f}")
    console.print(table)
    console.print(f"rows stopped early: {figures['rows_stopped_early']}; before and after stop at the same tokens: "
                  f"{'yes' if figures['before_and_after_identical'] else '[red]NO[/]'}")


if __name__ == "__main__":
    raise SystemExit(main())
