"""DPO step benchmark: a DPO optimizer step against an SFT step on the same pairs' chosen side, and the memory a live
reference forward costs against ``precompute_reference``.

    python benchmarks/dpo_step.py                   # ~1 minute on an idle 2-core CPU
    python benchmarks/dpo_step.py --steps 10 --repeats 3 --threads 2

Everything runs in this one process through the real train path (`tulu_lite.train.train`: TRL's DPOTrainer or
SFTTrainer with tulu-lite's collators, progress and callbacks), on the same tiny LLaMA (the embedded `tiny-llama`,
real 32k LLaMA vocabulary, fp32, LoRA r=16 on every linear layer) and the bundled demo preference pairs
(tulu_lite/assets/demo/preferences.jsonl), in the same order (no shuffling differences: the same seed):

- ``sft``: SFT on the pairs' chosen side only (each pair's chosen conversation), padded batches like DPO's;
- ``dpo-live``: sigmoid DPO (beta 0.1), the reference = the model with the adapter disabled, run every step;
- ``dpo-precomputed``: the same with ``dpo.precompute_reference``: the reference log-probs computed once before
  training (timed apart, as ``precompute_s``) and read from the cache, so a step runs the policy only.

A batch is `--batch-size` pairs (DPO: 2 x batch rows, chosen then rejected) or chosen conversations (SFT). Step
time is the median over the timed steps of all repeats (the first `--warmup` of every run left out), configurations
interleaved so that load from other processes hits all of them alike. Memory is the process's resident set size
(RSS, from /proc/self/statm, sampled every millisecond by a thread) during the steps, minus the RSS when training
began: what the steps allocate on top of the loaded model and data (torch's CPU allocator is invisible to
tracemalloc, so RSS is what is measured). It is the median of the runs' peaks.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

import tulu_lite.tokenizer
from tulu_lite.data.pairs import read_pairs
from tulu_lite.json_files import write_json, write_jsonl
from tulu_lite.recipe import Recipe

# (via a module file: a stale editable install can make the package itself a namespace without __file__)
PAIRS = Path(tulu_lite.tokenizer.__file__).parent / "assets" / "demo" / "preferences.jsonl"
CONFIGS = ("sft", "dpo-live", "dpo-precomputed")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of the timing")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (median over all)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs (or chosen conversations) per batch")
    parser.add_argument("--max-seq-length", type=int, default=128, help="data.max_seq_length (the demo's)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--pairs", type=Path, default=PAIRS, help="preference pairs JSONL")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "dpo_step.json")
    return parser.parse_args(argv)


# ---- recipes ----------------------------------------------------------------------------------------------------


def recipe_for(config: str, workdir: Path, data: Path, args: argparse.Namespace, run: int) -> Recipe:
    """The tiny LLaMA recipe of one configuration; the same model, LoRA, batches and seed for all three."""
    settings = {
        "model": {"name_or_path": "tiny-llama", "dtype": "float32"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train_files": [str(data)], "max_seq_length": args.max_seq_length, "padding_free": False},
        "training": {"max_steps": args.warmup + args.steps, "per_device_batch_size": args.batch_size,
                     "learning_rate": 1.0e-3, "gradient_checkpointing": False, "logging_steps": 1000,
                     "save_steps": 100_000, "seed": 42},
        "output_dir": str(workdir / f"{config}-{run}"),
    }
    if config != "sft":
        settings["stage"] = "dpo"
        settings["dpo"] = {"beta": 0.1, "loss_type": "sigmoid", "reference": "base",
                           "precompute_reference": config == "dpo-precomputed"}
    return Recipe.model_validate(settings)


def write_chosen_side(pairs: Path, out: Path) -> None:
    """The pairs' chosen conversations as SFT data, in the pairs' order."""
    write_jsonl(({"id": pair.get("id"), "messages": pair["chosen"]} for pair in read_pairs(pairs)), out)


# ---- measuring --------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class StepProbe(TrainerCallback):
    """Wall time of every optimizer step, and the peak RSS above the RSS at the start of training (a sampler
    thread reads it every millisecond between train begin and train end)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.start_rss = self.peak_rss = 0
        self.train_begin = 0.0
        self._running = False
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while self._running:
            self.peak_rss = max(self.peak_rss, rss_bytes())
            time.sleep(0.001)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_rss = self.peak_rss = rss_bytes()
        self.train_begin = time.perf_counter()
        self.marks = [self.train_begin]
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kwargs):
        self._running = False
        if self._thread is not None:
            self._thread.join()

    @property
    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def run_config(config: str, workdir: Path, data: dict[str, Path], args: argparse.Namespace, run: int) -> dict:
    """One training run of a configuration: its step times (warm-up left out), peak RSS above the start, and the
    seconds before training began (model, data, and for dpo-precomputed the reference pass)."""
    from tulu_lite.train import train

    recipe = recipe_for(config, workdir, data["sft" if config == "sft" else "dpo"], args, run)
    probe = StepProbe()
    began = time.perf_counter()
    train(recipe, callbacks=[probe], console=Console(file=io.StringIO()))
    return {"step_times": probe.step_times[args.warmup:], "peak_rss_delta": probe.peak_rss - probe.start_rss,
            "setup_s": probe.train_begin - began}


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    data = {"dpo": args.pairs, "sft": workdir / "chosen.jsonl"}
    write_chosen_side(args.pairs, data["sft"])
    runs: dict[str, list[dict]] = {config: [] for config in CONFIGS}
    for run in range(args.repeats):
        for config in CONFIGS:
            if config == "dpo-precomputed":  # a fresh cache: every run pays (and times) the reference pass once
                os.environ["TULU_LITE_CACHE"] = str(workdir / f"cache-{run}")
            runs[config].append(run_config(config, workdir, data, args, run))
            print(f"  run {run + 1}/{args.repeats} {config}: {statistics.median(runs[config][-1]['step_times']):.3f}"
                  f" s/step", file=sys.stderr)
    return {config: {"step_s": statistics.median([t for r in done for t in r["step_times"]]),
                     "peak_rss_delta_mib": statistics.median([r["peak_rss_delta"] for r in done]) / 2**20,
                     "setup_s": statistics.median([r["setup_s"] for r in done])}
            for config, done in runs.items()}


def figures(results: dict[str, dict], args: argparse.Namespace) -> dict:
    sft, live, pre = (results[name] for name in CONFIGS)
    return {
        "configs": results,
        "dpo_live_over_sft_step": live["step_s"] / sft["step_s"],
        "dpo_precomputed_over_sft_step": pre["step_s"] / sft["step_s"],
        "dpo_live_over_precomputed_step": live["step_s"] / pre["step_s"],
        "peak_rss_live_over_precomputed": live["peak_rss_delta_mib"] / pre["peak_rss_delta_mib"],
        "precompute_reference_once_s": pre["setup_s"] - live["setup_s"],
        "memory_measure": "peak process RSS (/proc/self/statm, sampled every 1 ms) during training minus RSS at "
                          "train begin; median over runs",
        "setup": {"model": "tiny-llama fp32 (hidden 64, 2 layers, 32k vocab), LoRA r16 every linear layer",
                  "pairs": str(args.pairs.name), "batch_pairs": args.batch_size,
                  "max_seq_length": args.max_seq_length, "steps": args.steps, "warmup": args.warmup,
                  "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__},
    }


def show(report: dict) -> None:
    table = Table(title="DPO vs SFT step (tiny LLaMA, demo pairs)")
    for column in ("config", "s / step", "x SFT step", "peak RSS above start (MiB)", "before training (s)"):
        table.add_column(column, justify="left" if column == "config" else "right")
    sft = report["configs"]["sft"]["step_s"]
    for name, entry in report["configs"].items():
        table.add_row(name, f"{entry['step_s']:.3f}", f"{entry['step_s'] / sft:.2f}",
                      f"{entry['peak_rss_delta_mib']:.0f}", f"{entry['setup_s']:.1f}")
    Console().print(table)
    print(f"peak memory, live reference / precomputed: {report['peak_rss_live_over_precomputed']:.2f}x; "
          f"the reference pass once: {report['precompute_reference_once_s']:.1f} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        report = figures(measure(args, Path(tmp)), args)
    show(report)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
