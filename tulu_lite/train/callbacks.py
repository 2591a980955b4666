"""Trainer callbacks any stage uses: the progress display, stopping on Ctrl-C, the token-budget sampler's epoch,
and what a resumed run or a fresh checkpoint needs beyond the Trainer's own state."""

from __future__ import annotations

import math
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback

from tulu_lite.outputs import write_errors
from tulu_lite.train import checkpoints as ckpt
from tulu_lite.train.collate import TokenBudgetBatchSampler
from tulu_lite.train.heldout import EVAL_LOSS

# ---- progress -----------------------------------------------------------------------------------------------------


class RichProgress(TrainerCallback):
    """A rich progress bar, plus one line per logging step (loss, learning rate, tokens/s, trained tokens).

    Only process 0 shows anything. The per-step lines stay on screen, so the falling loss can be read afterwards.
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]train[/]"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[loss]}"), console=self.console,
            # In Jupyter a live bar needs ipywidgets and otherwise leaves one output per refresh: lines only.
            disable=self.console.is_jupyter,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, loss="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if EVAL_LOSS in logs:
            self.progress.console.print(_eval_line(state, logs), highlight=False, soft_wrap=True)
            return
        if "loss" not in logs:
            return
        # A DPO step also shows its reward accuracy (chosen reward above rejected) and margin.
        rewards = (f"  acc {logs['rewards/accuracies']:.2f}  margin {logs.get('rewards/margins', 0):+.3f}"
                   if "rewards/accuracies" in logs else "")
        self.progress.console.print(
            f"step {state.global_step:>4}/{state.max_steps}  loss {logs['loss']:.4f}{rewards}  "
            f"lr {logs.get('learning_rate', 0):.1e}  {logs.get('tokens_per_second', 0):,.0f} tok/s  "
            f"{_human(logs.get('tokens', 0))} tok ({_human(logs.get('trained_tokens', 0))} trained)",
            highlight=False, soft_wrap=True,
        )
        self.progress.update(self.task, loss=f"loss {logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _eval_line(state, logs: dict) -> str:
    """``held-out step 60/240  loss 3.2104 best  ·  dolly 2.9100  oasst1 3.4800``"""
    from rich.markup import escape

    prefix = f"{EVAL_LOSS}/"
    sources = "  ".join(f"{escape(key[len(prefix):])} {value:.4f}" for key, value in logs.items()
                        if key.startswith(prefix))
    best = "  [green]best[/]" if state.global_step > 0 and state.best_global_step == state.global_step else ""
    rewards = (f"  acc {logs['eval_rewards/accuracies']:.2f}  margin {logs.get('eval_rewards/margins', 0):+.3f}"
               if "eval_rewards/accuracies" in logs else "")  # a DPO evaluation
    return (f"[cyan]held-out[/] {state.global_step:>4}/{state.max_steps}  loss {logs[EVAL_LOSS]:.4f}{best}{rewards}"
            f"  ·  {sources}")


def _human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{int(count)}"


# ---- Ctrl-C -------------------------------------------------------------------------------------------------------


# The signals that ask a run to stop: Ctrl-C, and what preemption sends (SLURM, `docker stop` and Kubernetes send
# SIGTERM, then SIGKILL after a grace period; a closed terminal or ssh session sends SIGHUP).
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class StopOnInterrupt(TrainerCallback):
    """The first Ctrl-C, SIGTERM or SIGHUP asks the run to stop after the current optimizer step, with a
    checkpoint; a second one aborts at once (KeyboardInterrupt). Installed only while training, from the main
    thread. `signal_number` is the first signal received (the command exits with 128 + it)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_number: int | None = None
        self.sync = None  # set under a multi-process launch: every process must stop at the same step

    def _on_signal(self, signum, frame):
        name = STOP_SIGNALS.get(signum, f"signal {signum}")
        if self.requested:
            for number in STOP_SIGNALS:
                signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested, self.signal_number = True, signum
        # os.write, not print: a signal handler may interrupt a print to the same stream.
        os.write(2, f"\n{name}: stopping after this optimizer step and saving a checkpoint ({name} again "
                    f"aborts)\n".encode())

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size > 1:
            from accelerate import PartialState

            device = PartialState().device

            def any_process(flag: bool) -> bool:
                import torch.distributed as dist

                value = torch.tensor([int(flag)], device=device)
                dist.all_reduce(value)
                return bool(value.item())

            self.sync = any_process

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.sync(self.requested) if self.sync is not None else self.requested
        if requested:
            self.requested = True
            control.should_save = True
            control.should_training_stop = True


# ---- the token-budget sampler's epoch -----------------------------------------------------------------------------


class SamplerEpoch(TrainerCallback):
    """Tells the token-budget sampler which epoch begins, so every process shuffles its batches alike.

    Trainer calls `set_epoch` on the DataLoader and on `loader.batch_sampler.batch_sampler` (trainer.py,
    `_run_epoch`), which reaches our sampler under accelerate's `BatchSamplerShard`. After `--resume` in the middle
    of an epoch >= 1 of a data-parallel run, `skip_first_batches` wraps it once more (SkipBatchSampler around
    BatchSamplerShard around ours: accelerate/data_loader.py) and neither call reaches it: the resumed epoch would
    replay epoch 0's order. Remove when transformers reaches nested batch samplers.
    """

    def __init__(self, sampler: TokenBudgetBatchSampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is epoch + (micro-batch + 1) / micro-batches per epoch: whole at an epoch's start, and its
        # integer part is the epoch a resumed run restarts in (global_step // steps per epoch in Trainer).
        self.sampler.set_epoch(math.floor(state.epoch or 0))


# ---- resume and checkpoints ---------------------------------------------------------------------------------------


class ResumeState(TrainerCallback):
    """On --resume, apply the recipe's (possibly changed) cadence and bring back the best adapter so far.

    `trainer` is the stage's trainer that owns this callback: it carries `run` (how the run started) and `best`.
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from tulu_lite.train.heldout import load_weights, trainable_weights

        checkpoint = self.trainer.run.start.checkpoint
        if checkpoint is None:
            return
        # The checkpoint's trainer_state.json brought back its logging / eval / save intervals; the recipe's win.
        state.compute_steps(args, state.max_steps)
        if state.best_global_step is None:
            return
        stored = Path(checkpoint) / ckpt.BEST_ADAPTER
        if stored.is_file():
            weights = load_weights(stored)
        else:  # the best evaluation was at the checkpoint's own step
            weights = trainable_weights(self.trainer.model)
        self.trainer.best.resume(state.log_history, state.best_global_step, weights)


class CheckpointExtras(TrainerCallback):
    """After the Trainer saved a checkpoint, write what makes it usable on its own and its manifest, last
    (`tulu_lite.train.checkpoints.write_checkpoint_extras`); process 0 only."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"{ckpt.CHECKPOINT_PREFIX}{state.global_step}"
        # A disk filling up is one line; the checkpoint has no manifest, so --resume skips it.
        with write_errors(folder, "a checkpoint"):
            ckpt.write_checkpoint_extras(self.trainer, folder)
