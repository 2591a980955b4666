"""The SFT stage's trainer: the recipe mapped onto TRL's `SFTConfig`, and `TuluSFTTrainer`, TRL's SFTTrainer with
our assistant-only collator, held-out evaluation per source, best-adapter tracking, token counts and
self-contained checkpoints.

Importing this module imports TRL (seconds): `tulu_lite.train.train` imports it only when it trains, so the CLI
and `tulu-lite plan` start without it. The preference stage sits beside it (`preference.py`); what both add to
TRL's trainers is `stage.StageTrainer`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from transformers import Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from tulu_lite.recipe import Recipe
from tulu_lite.train.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.train.data import TrainingData
from tulu_lite.train.heldout import heldout_metrics
from tulu_lite.train.run import RunContext, Start
from tulu_lite.train.stage import StageTrainer, training_arguments

# ---- the recipe as TRL's arguments --------------------------------------------------------------------------------


def sft_config(recipe: Recipe, *, evaluate: bool = False, eval_on_start: bool = False) -> SFTConfig:
    """Map the recipe onto TRL's SFTConfig: our data is pre-tokenized with labels, and our collator lays it out.

    `evaluate`: held-out losses every eval_steps (default: save_steps) and at the last step
    (`TuluSFTTrainer.evaluate` computes them); `eval_on_start` adds one before the first step, the curves' start.
    """
    return SFTConfig(
        **training_arguments(recipe, evaluate=evaluate, eval_on_start=eval_on_start),
        # Our encoder already tokenized, truncated and masked; our collator pads or packs.
        dataset_kwargs={"skip_prepare_dataset": True},
        packing=False,
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


class TuluSFTTrainer(StageTrainer, SFTTrainer):
    """SFTTrainer plus what every stage adds (`StageTrainer`: held-out evaluation per source, best adapter, early
    stopping, token counts, index batches, checkpoints usable on their own), with the held-out loss of
    `tulu_lite.train.heldout` and the model's own cross-entropy on CPU."""

    def heldout_metrics(self) -> dict[str, float]:
        return heldout_metrics(self)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.device.type != "cpu":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # TRL's chunked log-prob LM head avoids materialising the logits, which matters on a GPU (32k vocab x
        # 16k tokens), but on CPU it made a tiny-LLaMA step 2-4x slower than the model's own cross-entropy
        # (measured with trl 1.16). Same normalisation: summed token NLL / num_items_in_batch.
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
