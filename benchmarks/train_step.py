"""Training-step benchmark: tulu-lite's train path against a bare PyTorch loop, and padding-free against padded.

    python benchmarks/train_step.py                  # ~8 minutes on a busy 2-core CPU
    python benchmarks/train_step.py --steps 20 --repeats 5 --threads 2

Everything runs in this one process on the same tiny LLaMA (the embedded `tiny-llama`, real 32k LLaMA vocabulary,
LoRA r=16 on every linear layer, fp32) and the same batches of length-diverse chats (1 to `--max-turns` turns of
the bundled demo conversations, long-tailed, encoded by tulu-lite's encoder):

- overhead: seconds per optimizer step of `tulu_lite.train.trainer.make_trainer` (TRL's SFTTrainer with our
  collator, rich progress, logging, grad clipping, LR schedule; data read from the Arrow dataset every step)
  divided by a bare loop over the very same collated batches (forward, backward, AdamW on the LoRA parameters,
  nothing else).
  Target: at most 1.15x.
- padding-free vs padded: real (non-pad) tokens per second through the train path, same example batches laid
  out both ways. Target: at least 1.3x. Also shown, for context: padded batches that transformers'
  LengthGroupedSampler forms (less padding, different batches), and padding-free token-budget batches.

Each configuration runs `--repeats` times, interleaved so that load from other processes hits all of them alike;
the first `--warmup` steps of every run are dropped and the figure is the median of the remaining step times.
torch runs on `--threads` threads (1 by default: on a shared 2-core machine, 2 threads spin against other jobs and
the timings scatter). The first-step loss of every configuration is printed: the bare loop and the train path
start from the same weights and batch, so it must agree between them (it checks that they train the same thing).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

import tulu_lite.tokenizer
from tulu_lite.data.conversations import read_conversations
from tulu_lite.json_files import write_json, write_jsonl
from tulu_lite.model.loading import load_recipe_tokenizer
from tulu_lite.recipe import Recipe
from tulu_lite.train import build_model
from tulu_lite.train.callbacks import RichProgress
from tulu_lite.train.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.train.data import TrainingData, encode_data
from tulu_lite.train.trainer import make_trainer

# (via a module file: a stale editable install can make the package itself a namespace without __file__)
DEMO = Path(tulu_lite.tokenizer.__file__).parent / "assets" / "demo" / "train.jsonl"
OVERHEAD_TARGET = 1.15
PADDING_FREE_TARGET = 1.3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (median over all)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    parser.add_argument("--max-turns", type=int, default=8, help="longest chat, in user/assistant turns")
    parser.add_argument("--max-seq-length", type=int, default=512, help="data.max_seq_length")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_step.json")
    return parser.parse_args(argv)


# ---- data and batches ---------------------------------------------------------------------------------------


def write_diverse_chats(path: Path, count: int, max_turns: int, seed: int) -> None:
    """Chats of 1..max_turns demo turns, long-tailed (P(turns = k) ~ 1/k) like real SFT mixes."""
    rng = random.Random(seed)
    turns = [[m for m in record["messages"] if m["role"] != "system"] for record in read_conversations(DEMO)]
    weights = [1 / k for k in range(1, max_turns + 1)]
    records = []
    for index in range(count):
        k = rng.choices(range(1, max_turns + 1), weights)[0]
        records.append({"id": f"bench-{index}", "messages": [m for turn in rng.sample(turns, k) for m in turn]})
    write_jsonl(records, path)


def recipe_for(workdir: Path, chats: Path, args: argparse.Namespace, *, padding_free: bool) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"name_or_path": "tiny-llama", "dtype": "float32"},
            # dropout 0 so that the first step of both paths is the same computation (checked below)
            "lora": {"r": 16, "alpha": 16, "dropout": 0.0},
            "data": {"train_files": [str(chats)], "max_seq_length": args.max_seq_length, "padding_free": padding_free},
            "training": {
                "max_steps": args.warmup + args.steps,
                "per_device_batch_size": args.batch_size,
                "gradient_checkpointing": False,  # the bare loop has none; a tiny model does not need it
                "logging_steps": 5,
                "save_steps": 10_000,
                "seed": args.seed,
            },
            "output_dir": str(workdir / f"out-{'pf' if padding_free else 'pad'}"),
        }
    )


class FixedBatches(torch.utils.data.Sampler):
    """Hands the trainer's DataLoader a given list of index batches, so every configuration sees the same data."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter([list(batch) for batch in self.batches])


def random_batches(n_examples: int, batch_size: int, count: int, seed: int) -> list[list[int]]:
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def length_grouped_batches(lengths: list[int], batch_size: int, count: int, seed: int) -> list[list[int]]:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed))
    order = list(sampler)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


# ---- the two ways to run a step -------------------------------------------------------------------------------


class StepClock(TrainerCallback):
    """Wall time of every optimizer step (from the end of one to the end of the next, data loading included)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    @property
    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def run_trainer(recipe: Recipe, tokenizer, data: TrainingData, batches: list[list[int]]) -> tuple[list[float], float]:
    """tulu-lite's train path (make_trainer: SFTTrainer + our collator + rich progress); step times, first loss."""
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe)
    clock = StepClock()
    progress = RichProgress(Console(file=io.StringIO()), True)  # the real progress bar, drawn nowhere
    trainer = make_trainer(recipe, model, tokenizer, data, [clock, progress], batch_sampler=FixedBatches(batches))
    losses = record_losses(trainer)
    trainer.train()
    return clock.step_times, losses[0].item()


def record_losses(trainer) -> list[torch.Tensor]:
    """Keep every micro-batch loss the trainer computes (to compare the first one with the bare loop's)."""
    losses: list[torch.Tensor] = []
    compute = trainer.compute_loss

    def recording(model, inputs, return_outputs=False, num_items_in_batch=None):
        result = compute(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        losses.append((result[0] if return_outputs else result).detach())
        return result

    trainer.compute_loss = recording
    return losses


def run_bare(recipe: Recipe, tokenizer, examples: list[dict], batches: list[list[int]]) -> tuple[list[float], float]:
    """The baseline: collate, forward, backward, AdamW on the LoRA parameters; nothing else."""
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe).train()
    collate = AssistantOnlyCollator(pad_token_id=tokenizer.pad_token_id, padding_free=recipe.data.padding_free)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.training.learning_rate, weight_decay=recipe.training.weight_decay)
    marks, losses = [time.perf_counter()], []
    for batch_indices in batches:
        batch = collate([examples[i] for i in batch_indices])
        loss = model(**{"use_cache": False, **batch}).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])], losses[0]


# ---- measuring ------------------------------------------------------------------------------------------------


def real_tokens(examples: list[dict], batches: list[list[int]]) -> list[int]:
    return [sum(len(examples[i]["input_ids"]) for i in batch) for batch in batches]


def padded_tokens(examples: list[dict], batches: list[list[int]]) -> list[int]:
    return [len(batch) * max(len(examples[i]["input_ids"]) for i in batch) for batch in batches]


def summarise(step_times: list[list[float]], tokens: list[int], warmup: int) -> dict:
    """Median seconds per warm step over all repeats, and real tokens per second over the same steps."""
    warm = [t for run in step_times for t in run[warmup:]]
    warm_tokens = [n for _ in step_times for n in tokens[warmup:]]
    per_token = sorted(t / n for t, n in zip(warm, warm_tokens))
    return {
        "median_step_s": statistics.median(warm),
        "tokens_per_s": 1 / statistics.median(per_token),
        "steps_timed": len(warm),
    }


def paired_ratio(numerator: list[list[float]], denominator: list[list[float]], warmup: int) -> float:
    """Median over (repeat, step) of one configuration's step time over another's on the very same batch.

    Pairing step by step cancels the batch-to-batch spread (a 300-token batch against a 1,000-token one), which
    would otherwise swamp a difference of a few percent; the median shrugs off steps hit by other jobs.
    """
    ratios = [
        a / b for run_a, run_b in zip(numerator, denominator) for a, b in zip(run_a[warmup:], run_b[warmup:])
    ]
    return statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tulu-bench-") as tmp:
        workdir = Path(tmp)
        chats = workdir / "chats.jsonl"
        write_diverse_chats(chats, 600, args.max_turns, args.seed)
        recipes = {free: recipe_for(workdir, chats, args, padding_free=free) for free in (True, False)}
        tokenizer = load_recipe_tokenizer(recipes[True].model)
        data = encode_data(recipes[True], tokenizer)
        examples = data.train.to_list()
        plan = make_plan(args, recipes, tokenizer, data, examples)
        times: dict[str, list[list[float]]] = {name: [] for name in plan}
        first_loss: dict[str, float] = {}
        for repeat in range(args.repeats):
            for name, (run, _) in plan.items():
                console.print(f"[dim]repeat {repeat + 1}/{args.repeats}: {name}[/]")
                step_times, first_loss[name] = run()
                times[name].append(step_times)

    figures = {
        name: summarise(times[name], real_tokens(examples, batches), args.warmup) for name, (_, batches) in plan.items()
    }
    ratios = {
        "overhead, padding-free (tulu-lite / bare)": paired_ratio(
            times["tulu-lite, padding-free"], times["bare, padding-free"], args.warmup
        ),
        "overhead, padded (tulu-lite / bare)": paired_ratio(
            times["tulu-lite, padded"], times["bare, padded"], args.warmup
        ),
        # same examples in every step, so the step-time ratio is the tokens/s ratio
        "padding-free / padded tokens/s": paired_ratio(
            times["tulu-lite, padded"], times["tulu-lite, padding-free"], args.warmup
        ),
    }
    result = report(console, args, figures, ratios, first_loss, examples, plan["bare, padded"][1])
    write_json(args.json, result)
    console.print(f"figures written to {args.json}")
    return 0


def make_plan(args, recipes: dict[bool, Recipe], tokenizer, data: TrainingData, examples: list[dict]) -> dict:
    """Configuration name -> (a function running it once, the index batches it trains on)."""
    steps = args.warmup + args.steps
    lengths = [len(e["input_ids"]) for e in examples]
    same = random_batches(len(examples), args.batch_size, steps, args.seed)
    grouped = length_grouped_batches(lengths, args.batch_size, steps, args.seed)
    # rows of up to two max-length examples' worth of tokens (a fixed memory ceiling per step)
    sampler = TokenBudgetBatchSampler(lengths, 2 * args.max_seq_length, seed=args.seed)
    budget = [batch for _, batch in zip(range(steps), sampler)]
    free, padded = recipes[True], recipes[False]
    plan = {
        "bare, padding-free": (lambda: run_bare(free, tokenizer, examples, same), same),
        "tulu-lite, padding-free": (lambda: run_trainer(free, tokenizer, data, same), same),
        "bare, padded": (lambda: run_bare(padded, tokenizer, examples, same), same),
        "tulu-lite, padded": (lambda: run_trainer(padded, tokenizer, data, same), same),
        "tulu-lite, padded, length-grouped": (lambda: run_trainer(padded, tokenizer, data, grouped), grouped),
        f"tulu-lite, padding-free, {2 * args.max_seq_length}-token budget": (
            lambda: run_trainer(free, tokenizer, data, budget), budget
        ),
    }
    return plan


def verdict(name: str, value: float) -> tuple[str, bool]:
    """The target for a ratio, and whether it is met."""
    if name.startswith("overhead"):
        return f"<= {OVERHEAD_TARGET}", value <= OVERHEAD_TARGET
    return f">= {PADDING_FREE_TARGET}", value >= PADDING_FREE_TARGET


def report(
    console: Console, args, figures: dict, ratios: dict, first_loss: dict, examples: list[dict], batches
) -> dict:
    lengths = [len(e["input_ids"]) for e in examples]
    fill = sum(real_tokens(examples, batches)) / sum(padded_tokens(examples, batches))

    table = Table(title=f"training step (tiny LLaMA, LoRA r=16, fp32, CPU, {args.threads} thread(s))")
    for column in ("configuration", "median s/step", "real tokens/s", "first-step loss"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for name, figure in figures.items():
        loss = first_loss[name]
        table.add_row(name, f"{figure['median_step_s']:.3f}", f"{figure['tokens_per_s']:,.0f}", f"{loss:.4f}")
    console.print(table)
    console.print(
        f"examples: {len(lengths)}, {min(lengths)}-{max(lengths)} tokens (median {statistics.median(lengths):.0f}); "
        f"padded batches are {fill:.0%} real tokens"
    )
    checks = [(name, value, *verdict(name, value)) for name, value in ratios.items()]
    for label, value, target, ok in checks:
        console.print(f"{label}: [bold]{value:.2f}x[/] (target {target}) {'[green]met' if ok else '[red]missed'}[/]")
    return {
        "config": {**{k: v for k, v in vars(args).items() if k != "json"}, "torch_threads": torch.get_num_threads()},
        "examples": {"count": len(lengths), "min": min(lengths), "max": max(lengths),
                     "median": statistics.median(lengths), "padded_batch_fill": round(fill, 4)},
        "figures": figures,
        "first_step_loss": first_loss,
        "ratios": ratios,
        "targets": {label: target for label, _, target, _ in checks},
        "targets_met": all(ok for *_, ok in checks),
    }


if __name__ == "__main__":
    raise SystemExit(main())
