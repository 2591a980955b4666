"""The SFT stage's trainer: the recipe mapped onto TRL's `SFTConfig`, and `TuluSFTTrainer`, TRL's SFTTrainer with
our assistant-only collator, held-out evaluation per source, best-adapter tracking, token counts and
self-contained checkpoints.

Importing this module imports TRL (seconds): `tulu_lite.train.train` imports it only when it trains, so the CLI
and `tulu-lite plan` start without it. A preference stage would sit beside it (`preference.py`: a DPOTrainer
subclass and the DPOConfig mapping) and reuse the rest of the package.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer

from tulu_lite.data.encode import IGNORE_INDEX
from tulu_lite.model.loading import resolve_dtype
from tulu_lite.outputs import write_errors
from tulu_lite.recipe import Recipe
from tulu_lite.train import devices
from tulu_lite.train.callbacks import CheckpointExtras, ResumeState, SamplerEpoch
from tulu_lite.train.checkpoints import CHECKPOINT_PREFIX
from tulu_lite.train.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.train.compat import (
    keep_adapters_fp32,
    quiet_cadence_warning,
    use_training_matmul,
)
from tulu_lite.train.data import TrainingData
from tulu_lite.train.heldout import EVAL_LOSS, BestAdapter, heldout_metrics
from tulu_lite.train.run import RunContext, Start

# ---- the recipe as TRL's arguments --------------------------------------------------------------------------------


def sft_config(recipe: Recipe, *, evaluate: bool = False, eval_on_start: bool = False) -> SFTConfig:
    """Map the recipe onto TRL's SFTConfig: our data is pre-tokenized with labels, and our collator lays it out.

    `evaluate`: held-out losses every eval_steps (default: save_steps) and at the last step
    (`TuluSFTTrainer.evaluate` computes them); `eval_on_start` adds one before the first step, the curves' start.
    """
    t = recipe.training
    dtype = resolve_dtype(recipe.model.dtype)
    return SFTConfig(
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
        # SFTConfig defaults to bf16=True; bf16 is ~4x slower than fp32 on CPU, so follow the resolved dtype.
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # Our encoder already tokenized, truncated and masked; our collator pads or packs.
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        packing=False,
        padding_free=False,
        max_length=None,
        disable_tqdm=True,  # RichProgress shows progress
        ddp_find_unused_parameters=False,
        ddp_timeout=devices.DDP_TIMEOUT_S,  # what the process group got in distributed_state()
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )


def make_trainer(recipe: Recipe, model, tokenizer, data: TrainingData, callbacks: Sequence[TrainerCallback], *,
                 start: Start | None = None, batch_sampler=None) -> TuluSFTTrainer:
    """The SFT trainer for a recipe: our collator, token-budget batches when training.max_tokens_per_batch is set,
    held-out evaluation when there is held-out data.

    `batch_sampler` replaces the recipe's batches with given index batches (a benchmark's fixed batches).
    """
    start, training = start or Start(), recipe.training
    if batch_sampler is None and training.max_tokens_per_batch is not None:
        lengths = [len(ids) for ids in data.train["input_ids"]]
        batch_sampler = TokenBudgetBatchSampler(lengths, training.max_tokens_per_batch, seed=training.seed)
    if training.report_to == "wandb":  # the run's folder and a project name, unless the user chose others
        os.environ.setdefault("WANDB_DIR", str(recipe.checkpoint_dir))
        os.environ.setdefault("WANDB_PROJECT", "tulu-lite")
    evaluate = bool(data.heldout)
    collator = AssistantOnlyCollator(pad_token_id=tokenizer.pad_token_id, padding_free=recipe.data.padding_free)
    return TuluSFTTrainer(
        run=RunContext(recipe, data, start),
        batch_sampler=batch_sampler,
        model=model,
        args=sft_config(recipe, evaluate=evaluate, eval_on_start=start.checkpoint is None),
        data_collator=collator,
        train_dataset=data.train,
        eval_dataset=dict(data.heldout) if evaluate else None,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


# ---- the trainer --------------------------------------------------------------------------------------------------


@dataclass
class TokenCounts:
    """Tokens this process has trained on (all, and trained: label) since the run (re)started, and the log before."""

    tokens: int = 0
    trained: int = 0
    last_log: tuple[float, int] | None = None  # (time, tokens) at the previous log; None before the first step
    earlier: tuple[int, int] | None = None  # the totals of the checkpointed run, after --resume (read once)

    def count(self, inputs: dict) -> None:
        if self.last_log is None:
            self.last_log = (time.perf_counter(), 0)
        mask = inputs.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        self.trained += int((inputs["labels"] != IGNORE_INDEX).sum())


class TuluSFTTrainer(SFTTrainer):
    """SFTTrainer plus held-out evaluation (per source, best adapter, early stopping), token counts in the logs,
    optional index batches for the DataLoader, and checkpoints usable on their own.

    Everything beyond TRL's arguments comes in through the constructor: `run` (the recipe, the data and how the run
    started) and `batch_sampler` (None: TRL's own batches).
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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.device.type != "cpu":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # TRL's chunked log-prob LM head avoids materialising the logits, which matters on a GPU (32k vocab x
        # 16k tokens), but on CPU it made a tiny-LLaMA step 2-4x slower than the model's own cross-entropy
        # (measured with trl 1.16). Same normalisation: summed token NLL / num_items_in_batch.
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

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
        totals = accelerator.reduce(torch.tensor([counts.tokens, counts.trained], device=accelerator.device),
                                    reduction="sum")
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
        """Held-out loss per source and overall; track the best adapter and early stopping."""
        metrics = heldout_metrics(self)
        step = self.state.global_step
        if self.best.observe(step, metrics[EVAL_LOSS], self.model):
            self.state.best_global_step, self.state.best_metric = step, metrics[EVAL_LOSS]
        patience = self.run.recipe.training.early_stopping_patience
        if patience is not None and self.best.evals_since >= patience and step < self.state.max_steps:
            self.control.should_training_stop = True
            self.stopped_early_at = step
        # Trainer.log, not SFTTrainer.log: TRL would fold (and clear) its pending training metrics into these.
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
