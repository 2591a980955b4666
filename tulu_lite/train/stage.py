"""What every training stage's trainer adds to TRL's: `StageTrainer`, a mixin placed before TRL's trainer class
(``class TuluSFTTrainer(StageTrainer, SFTTrainer)``, ``class PreferenceTrainer(StageTrainer, DPOTrainer)``).

It carries the run (`RunContext`: recipe, data, how the run started), the best adapter and early stopping, token
counts in the logs, optional index batches for the DataLoader, the resume and checkpoint callbacks, and
checkpoints whose write errors are one line. A stage says how its held-out data is measured
(`heldout_metrics`); `tulu_lite.train._run_stage` then trains, writes and reports any stage the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tulu_lite.data.encode import IGNORE_INDEX
from tulu_lite.outputs import write_errors
from tulu_lite.recipe import Recipe
from tulu_lite.train.callbacks import CheckpointExtras, ResumeState, SamplerEpoch
from tulu_lite.train.checkpoints import CHECKPOINT_PREFIX
from tulu_lite.train.collate import TokenBudgetBatchSampler
from tulu_lite.train.compat import (
    keep_adapters_fp32,
    quiet_cadence_warning,
    use_training_matmul,
)
from tulu_lite.train.heldout import EVAL_LOSS, BestAdapter
from tulu_lite.train.run import RunContext


@dataclass
class TokenCounts:
    """Tokens this process has trained on (all, and trained: label) since the run (re)started, and the log before."""

    # Kept as tensors where the batch is (on the GPU): reading a count back each step would wait for the GPU every
    # step; `token_rates` reads them once per log.
    tokens: int | torch.Tensor = 0
    trained: int | torch.Tensor = 0
    last_log: tuple[float, int] | None = None  # (time, tokens) at the previous log; None before the first step
    earlier: tuple[int, int] | None = None  # the totals of the checkpointed run, after --resume (read once)

    def count(self, inputs: dict) -> None:
        """Count a batch: SFT's (``labels``), or DPO's (``completion_mask`` marks the trained tokens of both sides)."""
        if self.last_log is None:
            self.last_log = (time.perf_counter(), 0)
        mask = inputs.get("attention_mask")
        self.tokens = self.tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        if "labels" in inputs:
            self.trained = self.trained + (inputs["labels"] != IGNORE_INDEX).sum()
        else:
            self.trained = self.trained + inputs["completion_mask"].sum()


class StageTrainer:
    """The mixin every stage's trainer starts with (see the module docstring).

    Everything beyond TRL's arguments comes in through the constructor: `run` (the recipe, the data and how the run
    started) and `batch_sampler` (None: TRL's own batches). Subclasses define `heldout_metrics`.
    """

    def __init__(self, *, run: RunContext, batch_sampler=None, callbacks: Sequence[TrainerCallback] = (),
                 **kwargs) -> None:
        self.run = run
        self.batch_sampler = batch_sampler
        self.best = BestAdapter()
        self.stopped_early_at: int | None = None
        self.counts = TokenCounts()
        if isinstance(batch_sampler, TokenBudgetBatchSampler):
            callbacks = [*callbacks, SamplerEpoch(batch_sampler)]
        super().__init__(callbacks=list(callbacks), **kwargs)
        self.remove_callback(PrinterCallback)  # without tqdm, Trainer prints every log dict; RichProgress replaces it
        self.add_callback(ResumeState(self))
        self.add_callback(CheckpointExtras(self))
        if run.start.checkpoint is not None:
            quiet_cadence_warning()
        keep_adapters_fp32(self.model)
        use_training_matmul(self.model)

    def heldout_metrics(self) -> dict[str, float]:
        """The stage's held-out metrics of the model as it is now; must include `EVAL_LOSS` (lower is better)."""
        raise NotImplementedError

    def get_train_dataloader(self):
        if self.batch_sampler is None:
            return super().get_train_dataloader()
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator)
        return self.accelerator.prepare(loader)

    def training_step(self, model, inputs, *args, **kwargs):
        self.counts.count(inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self.token_rates())
        super().log(logs, start_time)

    def token_rates(self) -> dict[str, float]:
        """Tokens and trained (label) tokens so far, over all processes, and tokens/s since the previous log."""
        counts, accelerator = self.counts, self.accelerator
        local = torch.stack([torch.as_tensor(count, dtype=torch.long, device=accelerator.device)
                             for count in (counts.tokens, counts.trained)])
        totals = accelerator.reduce(local, reduction="sum")
        if counts.earlier is None:  # after --resume, continue the counts of the checkpointed run
            previous = [entry for entry in self.state.log_history if "tokens" in entry]
            last = previous[-1] if previous else {}
            counts.earlier = (last.get("tokens", 0), last.get("trained_tokens", 0))
        then, tokens_then = counts.last_log or (time.perf_counter(), 0)
        now = time.perf_counter()
        rate = (int(totals[0]) - tokens_then) / max(now - then, 1e-9)
        counts.last_log = (now, int(totals[0]))
        return {"tokens": int(totals[0]) + counts.earlier[0], "trained_tokens": int(totals[1]) + counts.earlier[1],
                "tokens_per_second": round(rate, 1)}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Held-out metrics per source and overall; track the best adapter and early stopping."""
        metrics = self.heldout_metrics()
        step = self.state.global_step
        if self.best.observe(step, metrics[EVAL_LOSS], self.model):
            self.state.best_global_step, self.state.best_metric = step, metrics[EVAL_LOSS]
        patience = self.run.recipe.training.early_stopping_patience
        if patience is not None and self.best.evals_since >= patience and step < self.state.max_steps:
            self.control.should_training_stop = True
            self.stopped_early_at = step
        # Trainer.log, not TRL's log: TRL would fold (and clear) its pending training metrics into these.
        Trainer.log(self, dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def create_model_card(self, *args, **kwargs) -> None:
        """Write no card in OUTPUT_DIR.checkpoints/: TRL's, written there before every checkpoint, names no base
        ("a fine-tuned version of [None]"); each checkpoint folder gets its own card (`write_checkpoint_extras`)."""

    def _save_checkpoint(self, model, trial):
        # Private, on purpose: Trainer's own checkpoint writes (adapter, tokenizer, optimizer, scheduler, RNG and
        # trainer state, all inside `_save_checkpoint`) have no public hook around them, and a disk filling up
        # there must be one line naming the checkpoint, not a traceback. The half-written checkpoint has no
        # manifest, so --resume skips it (what a checkpoint carries besides is written by the public `on_save`
        # of `CheckpointExtras`). Remove when transformers reports checkpoint write errors itself or offers a
        # public hook around the whole save (transformers 5.25 has neither).
        folder = Path(self.args.output_dir) / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        with write_errors(folder, "a checkpoint"):
            super()._save_checkpoint(model, trial)


def training_arguments(recipe: Recipe, *, evaluate: bool, eval_on_start: bool) -> dict:
    """The recipe's `training:` section as the TrainingArguments every stage's config shares (SFTConfig and
    DPOConfig add their own keys). `evaluate`: held-out losses every eval_steps (default: save_steps) and at the
    last step; `eval_on_start` adds one before the first step, the curves' start."""
    from tulu_lite.model.loading import resolve_dtype
    from tulu_lite.train.devices import DDP_TIMEOUT_S

    t = recipe.training
    dtype = resolve_dtype(recipe.model.dtype)
    return dict(
        output_dir=str(recipe.checkpoint_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old names warn).
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=(t.eval_steps or t.save_steps) if evaluate else None,
        eval_on_start=evaluate and eval_on_start,
        report_to=[] if t.report_to == "none" else [t.report_to],
        run_name=recipe.output_dir.name,
        # TRL's configs default to bf16=True; bf16 is ~4x slower than fp32 on CPU, so follow the resolved dtype.
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        remove_unused_columns=False,
        padding_free=False,
        max_length=None,  # our encoder truncated at data.max_seq_length
        disable_tqdm=True,  # RichProgress shows progress
        ddp_find_unused_parameters=False,
        ddp_timeout=DDP_TIMEOUT_S,  # what the process group got in distributed_state()
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
