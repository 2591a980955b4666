"""Train: LoRA / QLoRA fine-tuning of a recipe through TRL's `SFTTrainer` with our assistant-only collator.

`train(recipe)` runs the stages in order: check the logger and the output location, take the run's lock, load the
tokenizer, encode the data (the foundation encoder, Arrow-cached) and set the held-out examples apart, load the base
(4-bit when the recipe quantizes) and add LoRA, train (evaluating the held-out loss per source as it goes), and
write the output directory atomically:

    OUTPUT_DIR/                  appears only when training finished
      adapter_config.json        PEFT adapter (load with PeftModel.from_pretrained(base, OUTPUT_DIR)); with
      adapter_model.safetensors  held-out data, the adapter of the best evaluation
      tokenizer.json ...         the tokenizer trained with
      recipe.yaml                the resolved recipe (rerun with `tulu-lite train OUTPUT_DIR/recipe.yaml`)
      base_model.json            where the base came from (+ a weights fingerprint for the embedded tiny LLaMA)
      metrics.json               losses, held-out losses per source, best step, tokens, what the encoder dropped
      loss.png                   training loss and held-out loss curves (one per source)
    OUTPUT_DIR.checkpoints/      checkpoints every training.save_steps (see tulu_lite.train.checkpoints); resume with
                                 --resume; the run's lock

Checkpoints live beside the output rather than inside it so the output directory itself is all-or-nothing.
The first Ctrl-C (or SIGTERM, SIGHUP: preemption) finishes the current optimizer step, saves a checkpoint and
stops (`TrainingStopped`); a second one aborts at once. Under `accelerate launch` every process trains its shard of
each batch (data parallel) and process 0 writes; with an FSDP config (recipes/accelerate/fsdp.yaml) the weights,
LoRA state and optimizer are sharded across the processes too, and the adapter is gathered onto process 0.

The package, in the order data flows through a run:

    devices.py      processes and devices: the process group, where the base goes, FSDP gathering
    run.py          the output location, where the run starts (fresh or a checkpoint), RunContext
    data.py         training files, mixtures, encoding, held-out split (`tulu-lite plan` imports only this)
    collate.py      the assistant-only collator and token-budget batches
    callbacks.py    progress, Ctrl-C, the sampler's epoch, resume state, checkpoint extras
    heldout.py      held-out examples, their loss per source, the best adapter
    checkpoints.py  what a checkpoint carries, which are complete, which recipe may resume one, the run lock
    report.py       metrics.json, the output directory, the held-out table, the loss curve, the device line
    compat.py       version workarounds, each with its "remove when"
    stage.py        what every stage's trainer adds to TRL's (StageTrainer: run, best adapter, early stopping,
                    token counts, evaluation hook, checkpoint write errors)
    trainer.py      the SFT stage: the SFTConfig mapping and TuluSFTTrainer (imports TRL: imported lazily)
    preference.py   the DPO stage (``stage: dpo``): the pair collator, PreferenceTrainer (TRL's DPOTrainer on our
                    encoded pairs), the DPOConfig mapping, held-out loss / reward accuracy / margin per source
    reference.py    DPO's starting adapter and reference, and the reference log-probs precomputed and cached

`train` dispatches on ``recipe.stage``: `_train_sft` and `_train_dpo` differ only in the data they encode, the model
they start from and their trainer; both run through `_run_stage` (same lock, locations, resume, callbacks,
held-out evaluation, checkpoints and report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from tulu_lite.recipe import Recipe

if TYPE_CHECKING:
    from transformers import TrainerCallback

# Importing this package is cheap (`tulu-lite plan` imports `tulu_lite.train.data`): the stages import torch,
# transformers and TRL inside the functions below, the SFT trainer (TRL) only when it trains.


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    main_process: bool = True  # False on the other ranks of a data-parallel launch (they write nothing)


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP stopped the run after an optimizer step; `checkpoint` holds everything needed to
    resume or merge; `signal_number` is the signal that asked (the CLI exits with 128 + it, as a shell would)."""

    def __init__(self, step: int, max_steps: int, checkpoint: Path, signal_number: int = 2) -> None:
        super().__init__(f"stopped at step {step}/{max_steps}; checkpoint saved in {checkpoint}")
        self.step, self.max_steps, self.checkpoint = step, max_steps, checkpoint
        self.signal_number = signal_number


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    console: Console | None = None,
) -> TrainResult:
    """Train the recipe's LoRA adapter and write the output directory; return its path and metrics.

    `resume` continues from the last complete checkpoint in ``OUTPUT_DIR.checkpoints`` (refused when the recipe
    changed in a way that can't continue that run); `force` overwrites an existing output (and discards old
    checkpoints when not resuming). `callbacks` are extra `TrainerCallback`s. Raises `TrainingStopped` when Ctrl-C
    stopped the run early.
    """
    from tulu_lite.train.checkpoints import run_lock
    from tulu_lite.train.devices import global_rank
    from tulu_lite.train.report import check_logger
    from tulu_lite.train.run import check_output

    console = console or Console()
    check_logger(recipe)  # before anything is loaded or created
    check_output(recipe, force=force)
    with run_lock(recipe, enabled=global_rank() == 0):
        if recipe.stage == "dpo":
            return _train_dpo(recipe, resume=resume, force=force, callbacks=callbacks, console=console)
        return _train_sft(recipe, resume=resume, force=force, callbacks=callbacks, console=console)


def _train_sft(recipe: Recipe, *, resume: bool, force: bool, callbacks: Sequence[TrainerCallback],
               console: Console) -> TrainResult:
    """The SFT stage, under the run's lock: processes, where to start, tokenizer, data, model, trainer, train."""
    from tulu_lite.model.loading import load_recipe_tokenizer
    from tulu_lite.train.data import describe_data, encode_in_turn
    from tulu_lite.train.devices import base_device_map, start_processes
    from tulu_lite.train.run import prepare_locations

    processes = start_processes()
    main = processes.is_main_process
    start = prepare_locations(recipe, resume=resume, force=force, main=main, console=console)
    processes.wait_for_everyone()  # process 0 may have removed old checkpoints: nobody writes beside them before that
    tokenizer = load_recipe_tokenizer(recipe.model)
    data = encode_in_turn(recipe, tokenizer, processes=processes.num_processes)
    # The trainer's modules (TRL, PEFT: seconds) load once the data is known good, so bad data fails fast.
    from tulu_lite.train.callbacks import RichProgress, StopOnInterrupt
    from tulu_lite.train.trainer import make_trainer

    model = build_model(recipe, device_map=base_device_map(processes.local_process_index))
    if main:
        describe_data(recipe, data, console)
    progress, stop = RichProgress(console, main), StopOnInterrupt()
    trainer = make_trainer(recipe, model, tokenizer, data, [*callbacks, progress, stop], start=start)
    return _run_stage(recipe, trainer, tokenizer, stop, force=force, console=console)


def _train_dpo(recipe: Recipe, *, resume: bool, force: bool, callbacks: Sequence[TrainerCallback],
               console: Console) -> TrainResult:
    """The preference (DPO) stage, under the run's lock: as `_train_sft`, with encoded pairs, the policy a new
    adapter or the SFT adapter (`dpo.reference`), and `PreferenceTrainer` (reference log-probs precomputed through
    their cache before the first step when the recipe says so)."""
    from tulu_lite.model.loading import load_recipe_tokenizer
    from tulu_lite.train.data import describe_data, encode_in_turn
    from tulu_lite.train.devices import base_device_map, start_processes
    from tulu_lite.train.run import prepare_locations

    processes = start_processes()
    main = processes.is_main_process
    start = prepare_locations(recipe, resume=resume, force=force, main=main, console=console)
    processes.wait_for_everyone()
    tokenizer = load_recipe_tokenizer(recipe.model)
    data = encode_in_turn(recipe, tokenizer, processes=processes.num_processes)
    # As in _train_sft: the trainer's modules load once the data is known good.
    from tulu_lite.train.callbacks import RichProgress, StopOnInterrupt
    from tulu_lite.train.preference import make_preference_trainer
    from tulu_lite.train.reference import policy_model

    model = policy_model(recipe, load_base(recipe, device_map=base_device_map(processes.local_process_index)))
    if main:
        describe_data(recipe, data, console)
    progress, stop = RichProgress(console, main), StopOnInterrupt()
    trainer = make_preference_trainer(recipe, model, tokenizer, data, callbacks=[*callbacks, progress, stop],
                                      start=start)
    return _run_stage(recipe, trainer, tokenizer, stop, force=force, console=console)


def build_model(recipe: Recipe, *, device_map=None):
    """The frozen base (4-bit when the recipe quantizes) wrapped with trainable LoRA adapters."""
    from transformers import set_seed

    from tulu_lite.model.loading import add_lora

    base = load_base(recipe, device_map=device_map)
    set_seed(recipe.training.seed)  # LoRA A is initialised randomly: the same recipe must start from the same adapter
    return add_lora(base, recipe.lora)


def load_base(recipe: Recipe, *, device_map=None):
    """The frozen base of a recipe (4-bit when it quantizes), its attention kernel checked first."""
    from tulu_lite.model.loading import load_base_model, resolve_attention

    resolve_attention(recipe.model, recipe.quantization)  # a kernel the recipe names explicitly must run here
    return load_base_model(recipe.model, recipe.quantization, device_map=device_map)


def _run_stage(recipe: Recipe, trainer, tokenizer, stop, *, force: bool, console: Console) -> TrainResult:
    """Train with a stage's trainer, then write and report the output (any stage: its trainer carries `run`,
    `best` and `stopped_early_at`; `stop` is the run's `StopOnInterrupt` among the trainer's callbacks)."""
    from tulu_lite.train.checkpoints import CHECKPOINT_PREFIX
    from tulu_lite.train.devices import gathered_adapter
    from tulu_lite.train.report import report_run, summarise, write_output

    with stop.installed():
        trainer.train(resume_from_checkpoint=trainer.run.start.checkpoint)
    if stop.requested and trainer.state.global_step < trainer.state.max_steps:
        step = trainer.state.global_step
        raise TrainingStopped(step, trainer.state.max_steps, recipe.checkpoint_dir / f"{CHECKPOINT_PREFIX}{step}",
                              signal_number=stop.signal_number or 2)
    trainer.best.restore_into(trainer.model)  # with held-out data the output is the best evaluation's adapter
    metrics = summarise(trainer)
    adapter = gathered_adapter(trainer)  # a collective under FSDP: every process takes part
    if trainer.is_world_process_zero():
        write_output(recipe, trainer, tokenizer, metrics, force=force, adapter=adapter)
        report_run(metrics, console)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output_dir=recipe.output_dir, metrics=metrics, main_process=trainer.accelerator.is_main_process)
