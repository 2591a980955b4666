"""Train: LoRA / QLoRA fine-tuning of a recipe through TRL's `SFTTrainer` with our assistant-only collator.

`train(recipe)` runs the stages in order: check the output location, load the tokenizer, encode the data (the
foundation encoder, Arrow-cached), load the base (4-bit when the recipe quantizes) and add LoRA, train, and write
the output directory atomically:

    OUTPUT_DIR/                  appears only when training finished
      adapter_config.json        PEFT adapter (load with PeftModel.from_pretrained(base, OUTPUT_DIR))
      adapter_model.safetensors
      tokenizer.json ...         the tokenizer trained with
      recipe.yaml                the resolved recipe (rerun with `tulu-lite train OUTPUT_DIR/recipe.yaml`)
      base_model.json            where the base came from (+ a weights fingerprint for the embedded tiny LLaMA)
      metrics.json               losses, tokens, throughput, what the encoder dropped
      loss.png                   the training-loss curve
    OUTPUT_DIR.checkpoints/      Trainer checkpoints every training.save_steps (resume with --resume)

Checkpoints live beside the output rather than inside it so the output directory itself is all-or-nothing.
Under `accelerate launch` every process trains its shard of each batch (data parallel) and process 0 writes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tulu_lite.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.config import Recipe, save_recipe
from tulu_lite.errors import TuluError
from tulu_lite.model import add_lora, load_base_model, load_recipe_tokenizer, resolve_dtype, weights_sha256
from tulu_lite.outputs import atomic_dir, write_json

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    main_process: bool = True  # False on the other ranks of a data-parallel launch (they write nothing)


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    console: Console | None = None,
) -> TrainResult:
    """Train the recipe's LoRA adapter and write the output directory; return its path and metrics.

    `resume` continues from the last complete checkpoint in ``OUTPUT_DIR.checkpoints``; `force` overwrites an
    existing output (and discards old checkpoints when not resuming). `callbacks` are extra `TrainerCallback`s.
    """
    from accelerate import PartialState

    console = console or Console()
    # Created before TrainingArguments, so it must already say "CPU" on a machine without CUDA: otherwise a
    # two-process CPU launch (torchrun / accelerate launch) would run as two independent single-process jobs.
    state = PartialState(cpu=not torch.cuda.is_available())
    checkpoint = _prepare_locations(recipe, resume=resume, force=force, main=state.is_main_process, console=console)
    tokenizer = load_recipe_tokenizer(recipe.model)
    with state.main_process_first():  # the first process encodes and fills the Arrow cache; the others reuse it
        dataset, report = encode_training_data(recipe, tokenizer)
    model = build_model(recipe, device_map={"": state.local_process_index} if torch.cuda.is_available() else None)
    progress = RichProgress(console, state.is_main_process)
    trainer = make_trainer(recipe, model, tokenizer, dataset, [*callbacks, progress])
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = summarise(trainer, report)
    if trainer.is_world_process_zero():
        write_output(recipe, trainer, tokenizer, metrics, force=force)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output_dir=recipe.output_dir, metrics=metrics, main_process=state.is_main_process)


# ---- stages ---------------------------------------------------------------------------------------------------


def _prepare_locations(recipe: Recipe, *, resume: bool, force: bool, main: bool, console: Console) -> str | None:
    """Fail before any loading if the output exists; return the checkpoint to resume from (or None)."""
    out = recipe.output_dir
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise TuluError(f"output_dir: {out} already exists (pass --force to overwrite, or choose another output_dir)")
    checkpoint = last_checkpoint(recipe.checkpoint_dir)
    if checkpoint is not None and not resume:
        if not force:
            raise TuluError(
                f"{recipe.checkpoint_dir}: holds checkpoints of an earlier run "
                f"(pass --resume to continue it, or --force to start over)"
            )
        if main:
            shutil.rmtree(recipe.checkpoint_dir)
        checkpoint = None
    if resume and checkpoint is None and main:
        console.print(f"[yellow]no checkpoint in {recipe.checkpoint_dir}: starting from step 0[/]")
    elif checkpoint is not None and main:
        console.print(f"resuming from [bold]{checkpoint}[/]")
    return checkpoint


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint; `trainer_state.json` is written last, so its presence marks completeness."""
    if not checkpoint_dir.is_dir():
        return None
    steps = [
        int(path.name[len(CHECKPOINT_PREFIX):])
        for path in checkpoint_dir.iterdir()
        if path.name.startswith(CHECKPOINT_PREFIX) and path.name[len(CHECKPOINT_PREFIX):].isdigit()
        and (path / "trainer_state.json").is_file()
    ]
    return str(checkpoint_dir / f"{CHECKPOINT_PREFIX}{max(steps)}") if steps else None


def training_files(recipe: Recipe) -> list[Path]:
    """The conversation files to train on (from data.train_files, or the files a mixture resolves to)."""
    if recipe.data.mixture is not None:
        return _mixture_files(recipe)
    missing = [(i, f) for i, f in enumerate(recipe.data.train_files) if not f.is_file()]
    if missing:
        index, path = missing[0]
        raise TuluError(f"data.train_files[{index}]: {path}: file not found")
    return list(recipe.data.train_files)


def _mixture_files(recipe: Recipe) -> list[Path]:
    """Write the mixture once into OUT.checkpoints/data/ (seeded, so a rerun or --resume reuses it) and train on it.

    The written mixture is reused while its recorded resolved mixture equals the current one; edit a source file in
    place without touching the YAML and you must delete OUT.checkpoints/data/ to re-mix.
    """
    import json

    from tulu_lite.data.mix import load_mixture, mix
    from tulu_lite.data.sources import meta_path

    mixture = load_mixture(recipe.data.mixture)
    out = recipe.checkpoint_dir / "data" / "mixture.jsonl"
    resolved = json.loads(mixture.model_dump_json())
    meta = meta_path(out)
    if not (out.is_file() and meta.is_file() and json.loads(meta.read_text()).get("resolved") == resolved):
        mix(recipe.data.mixture, out)
    return [out]


def encode_training_data(recipe: Recipe, tokenizer):
    """Encode the training files once (Arrow-cached by data + tokenizer + template + max length)."""
    from tulu_lite.data.encode import encode_dataset

    files = training_files(recipe)
    dataset, report = encode_dataset(
        [str(path) for path in files],
        tokenizer,
        recipe.model.chat_template,
        recipe.data.max_seq_length,
        num_proc=recipe.data.num_proc,
    )
    if len(dataset) == 0:
        raise TuluError(f"data: no trainable example in {', '.join(map(str, files))} (dropped: {report.dropped})")
    return dataset, report


def build_model(recipe: Recipe, *, device_map=None):
    """The frozen base (4-bit when the recipe quantizes) wrapped with trainable LoRA adapters."""
    from transformers import set_seed

    base = load_base_model(recipe.model, recipe.quantization, device_map=device_map)
    set_seed(recipe.training.seed)  # LoRA A is initialised randomly: the same recipe must start from the same adapter
    return add_lora(base, recipe.lora)


def sft_config(recipe: Recipe):
    """Map the recipe onto TRL's SFTConfig: our data is pre-tokenized with labels, and our collator lays it out."""
    from trl import SFTConfig

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
        report_to=[] if t.report_to == "none" else [t.report_to],
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
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )


def make_trainer(recipe: Recipe, model, tokenizer, dataset, callbacks: Sequence[TrainerCallback]):
    """An SFTTrainer with our collator (and token-budget batches when training.max_tokens_per_batch is set)."""
    collator = AssistantOnlyCollator(pad_token_id=tokenizer.pad_token_id, padding_free=recipe.data.padding_free)
    batch_sampler = None
    if recipe.training.max_tokens_per_batch is not None:
        lengths = [len(ids) for ids in dataset["input_ids"]]
        budget = recipe.training.max_tokens_per_batch
        batch_sampler = TokenBudgetBatchSampler(lengths, budget, seed=recipe.training.seed)
    trainer = _trainer_class()(
        model=model,
        args=sft_config(recipe),
        data_collator=collator,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.batch_sampler = batch_sampler
    trainer.remove_callback(PrinterCallback)  # without tqdm, Trainer prints every log dict; RichProgress replaces it
    _keep_adapters_fp32(trainer.model)
    return trainer


def _keep_adapters_fp32(model) -> None:
    # SFTTrainer casts the LoRA weights of a quantized base to bf16 (trl sft_trainer.py, "QLoRA ... converted to
    # bf16", pending peft#2889). On CPU that is ~4x slower, and everywhere small AdamW updates vanish in bf16, so we
    # keep fp32 master weights (compute still runs in the bnb compute dtype / autocast). Remove when TRL makes
    # the cast optional.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def _trainer_class():
    """SFTTrainer plus token counting and optional token-budget batches (built lazily: importing trl is slow)."""
    from torch.utils.data import DataLoader
    from transformers import Trainer
    from trl import SFTTrainer

    class TuluTrainer(SFTTrainer):
        batch_sampler = None

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
            if "_local_counts" not in self.__dict__:
                self._local_counts = [0, 0]
                self._last_log = (time.perf_counter(), 0)
            counts = self._local_counts
            mask = inputs.get("attention_mask")
            counts[0] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            counts[1] += int((inputs["labels"] != -100).sum())
            return super().training_step(model, inputs, *args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:
                logs.update(_token_rates(self))
            super().log(logs, start_time)

    return TuluTrainer


def _token_rates(trainer) -> dict[str, float]:
    """Tokens and trained (label) tokens so far, over all processes, and tokens/s since the previous log."""
    local = trainer._local_counts
    totals = trainer.accelerator.reduce(torch.tensor(local, device=trainer.accelerator.device), reduction="sum")
    if "_count_base" not in trainer.__dict__:  # after --resume, continue the counts of the checkpointed run
        previous = [entry for entry in trainer.state.log_history if "tokens" in entry]
        last = previous[-1] if previous else {}
        trainer._count_base = (last.get("tokens", 0), last.get("trained_tokens", 0))
    tokens = int(totals[0]) + trainer._count_base[0]
    trained = int(totals[1]) + trainer._count_base[1]
    then, tokens_then = trainer._last_log
    now = time.perf_counter()
    rate = (int(totals[0]) - tokens_then) / max(now - then, 1e-9)
    trainer._last_log = (now, int(totals[0]))
    return {"tokens": tokens, "trained_tokens": trained, "tokens_per_second": round(rate, 1)}


# ---- progress -------------------------------------------------------------------------------------------------


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
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, loss="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs or "loss" not in logs:
            return
        self.progress.console.print(
            f"step {state.global_step:>4}/{state.max_steps}  loss {logs['loss']:.4f}  "
            f"lr {logs.get('learning_rate', 0):.1e}  {logs.get('tokens_per_second', 0):,.0f} tok/s  "
            f"{_human(logs.get('tokens', 0))} tok ({_human(logs.get('trained_tokens', 0))} trained)",
            highlight=False, soft_wrap=True,
        )
        self.progress.update(self.task, loss=f"loss {logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{int(count)}"


# ---- outputs --------------------------------------------------------------------------------------------------


def summarise(trainer, report) -> dict:
    """metrics.json: the per-step log, first/final loss, totals and what the encoder kept and dropped."""
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = next((entry for entry in reversed(trainer.state.log_history) if "train_runtime" in entry), {})
    last = history[-1] if history else {}
    return {
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        "train_loss": final.get("train_loss"),
        "train_runtime_s": final.get("train_runtime"),
        "tokens": last.get("tokens"),
        "trained_tokens": last.get("trained_tokens"),
        "world_size": trainer.accelerator.num_processes,
        "examples": report.kept,
        "dropped": report.dropped,
        "log_history": history,
    }


def write_output(recipe: Recipe, trainer, tokenizer, metrics: dict, *, force: bool) -> None:
    """Adapter, tokenizer, resolved recipe, base record, metrics and loss curve, all at once or not at all."""
    with atomic_dir(recipe.output_dir, force=force) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_recipe(recipe, tmp / "recipe.yaml")
        write_json(tmp / "base_model.json", base_record(recipe, trainer.model))
        write_json(tmp / "metrics.json", metrics)
        plot_loss(metrics["log_history"], tmp / "loss.png", title=recipe.output_dir.name)


def base_record(recipe: Recipe, model) -> dict:
    """Where the base weights came from, and a fingerprint `merge` checks the base against.

    Any other base: `tulu_lite.model.base_fingerprint` (safetensors headers and samples of every tensor, cheap
    even for 65B; a hub base is fingerprinted in its cache snapshot). The tiny LLaMA, which merge rebuilds from
    its seed: the full weights hash.
    """
    from tulu_lite.model import base_fingerprint, model_files_dir

    loaded_from = model.peft_config["default"].base_model_name_or_path
    record = {"name_or_path": recipe.model.name_or_path, "loaded_from": loaded_from}
    if recipe.model.is_tiny:
        record["weights_sha256"] = weights_sha256(loaded_from)
    else:
        directory = model_files_dir(loaded_from)
        record["fingerprint"] = base_fingerprint(directory) if directory is not None else None
    return record


def plot_loss(history: list[dict], target: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [entry["step"] for entry in history]
    losses = [entry["loss"] for entry in history]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.plot(steps, losses, marker="o" if len(steps) < 30 else None, linewidth=1.5)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss (assistant tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if losses and all(math.isfinite(value) and value > 0 for value in losses) and max(losses) / min(losses) > 20:
        axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(target)
    plt.close(figure)


def device_summary() -> str:
    """One line for the CLI: where training runs."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
    return f"cpu ({os.cpu_count()} cores)"
