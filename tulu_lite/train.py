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
Under `accelerate launch` every process trains its shard of each batch (data parallel) and process 0 writes; with
an FSDP config (recipes/accelerate/fsdp.yaml) the weights, LoRA state and optimizer are sharded across the processes
too, and the adapter is gathered onto process 0 to be written.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from tulu_lite.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.config import Recipe, save_recipe
from tulu_lite.errors import TuluError
from tulu_lite.model import (
    add_lora,
    compute_dtype,
    fsdp_launch,
    load_base_model,
    load_recipe_tokenizer,
    resolve_attention,
    resolve_dtype,
    weights_sha256,
)
from tulu_lite.outputs import atomic_dir, write_json

CHECKPOINT_PREFIX = "checkpoint-"
# Seconds a collective may wait for the slowest process before the job is killed: transformers' default
# `ddp_timeout`, given to the process group when `train` creates it (see `distributed_state`).
DDP_TIMEOUT_S = 1800


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
    console = console or Console()
    state = distributed_state()
    check_gpu_launch(torch.cuda.device_count() if torch.cuda.is_available() else 0, state.num_processes)
    checkpoint = _prepare_locations(recipe, resume=resume, force=force, main=state.is_main_process, console=console)
    state.wait_for_everyone()  # process 0 may have removed old checkpoints: nobody writes beside them before that
    tokenizer = load_recipe_tokenizer(recipe.model)
    dataset, report = encode_in_turn(recipe, tokenizer, processes=state.num_processes)
    model = build_model(recipe, device_map=base_device_map(state.local_process_index))
    progress = RichProgress(console, state.is_main_process)
    trainer = make_trainer(recipe, model, tokenizer, dataset, [*callbacks, progress])
    trainer.train(resume_from_checkpoint=checkpoint)
    metrics = summarise(trainer, report)
    adapter = gathered_adapter(trainer)  # a collective under FSDP: every process takes part
    if trainer.is_world_process_zero():
        write_output(recipe, trainer, tokenizer, metrics, force=force, adapter=adapter)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output_dir=recipe.output_dir, metrics=metrics, main_process=state.is_main_process)


# ---- processes and devices ------------------------------------------------------------------------------------


def distributed_state():
    """accelerate's process state; under `accelerate launch` / torchrun this creates the process group.

    Created before TrainingArguments, so it must already say "CPU" on a machine without CUDA (else a two-process
    CPU launch would run as two independent jobs) and must carry the timeout: TrainingArguments builds its own
    PartialState with `timeout=ddp_timeout` (training_args.py, `_setup_devices`), but accelerate only passes it to
    `init_process_group` when no group exists yet (state.py, `PartialState.__init__`), so without it here NCCL
    would keep torch's 10-minute default.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=DDP_TIMEOUT_S))


def check_gpu_launch(visible_gpus: int, processes: int) -> None:
    """Refuse, before any loading, a single process that sees several GPUs.

    transformers then sets `n_gpu` to the device count (training_args.py, `_setup_devices`) and would wrap the model
    in `nn.DataParallel`, which TRL's SFTTrainer refuses only after the base is loaded (sft_trainer.py, "does not
    support `nn.DataParallel`").
    """
    if visible_gpus > 1 and processes == 1:
        raise TuluError(
            f"{visible_gpus} GPUs are visible to one process (transformers would use nn.DataParallel, which TRL "
            f"refuses): train on one with CUDA_VISIBLE_DEVICES=0 tulu-lite train RECIPE, or on all of them with "
            f"accelerate launch --multi_gpu --num_processes {visible_gpus} -m tulu_lite train RECIPE"
        )


def base_device_map(local_process_index: int) -> dict | None:
    """Where `from_pretrained` puts the base: this process's GPU; under FSDP nowhere in particular (FSDP places the
    shards; a device_map would load the whole model on every GPU first); on CPU the default."""
    if not torch.cuda.is_available() or fsdp_launch():
        return None
    return {"": local_process_index}


def encode_in_turn(recipe: Recipe, tokenizer, *, processes: int):
    """Encode the training data while no collective is waiting: the processes of a machine take turns on a lock.

    The first process to get the lock encodes and fills the Arrow cache (for a cold TÜLU mixture that can take
    longer than any process-group timeout); the others wait on the lock, which has no timeout, and then read the
    cache. Waiting in a barrier instead (`main_process_first`) would hit the group's timeout.
    """
    if processes == 1:
        return encode_training_data(recipe, tokenizer)
    from filelock import FileLock

    with FileLock(str(encode_lock_path(recipe))):
        return encode_training_data(recipe, tokenizer)


def encode_lock_path(recipe: Recipe) -> Path:
    """A lock per run and machine (the Arrow cache is per machine too), in the system's temporary directory."""
    digest = hashlib.sha256(str(recipe.checkpoint_dir.resolve()).encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tulu-lite-encode-{user}-{digest}.lock"


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


def training_files(recipe: Recipe) -> list:
    """The conversation inputs to train on: data.train_files (files, folders, hub datasets), or the file a mixture
    is written to."""
    if recipe.data.mixture is not None:
        return _mixture_files(recipe)
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
        mix(recipe.data.mixture, out, force=True)
    return [out]


def encode_training_data(recipe: Recipe, tokenizer):
    """Encode the training files once (Arrow-cached by data + tokenizer + template + max length)."""
    from tulu_lite.data.encode import encode_dataset

    files = training_files(recipe)
    dataset, report = encode_dataset(
        files,
        tokenizer,
        recipe.model.chat_template,
        recipe.data.max_seq_length,
        num_proc=recipe.data.num_proc,
        key="data.mixture" if recipe.data.mixture is not None else "data.train_files",
    )
    if len(dataset) == 0:
        names = ", ".join(getattr(item, "label", str(item)) for item in files)
        raise TuluError(f"data: no trainable example in {names} (dropped: {report.dropped})")
    return dataset, report


def build_model(recipe: Recipe, *, device_map=None):
    """The frozen base (4-bit when the recipe quantizes) wrapped with trainable LoRA adapters."""
    from transformers import set_seed

    resolve_attention(recipe.model, recipe.quantization)  # a kernel the recipe names explicitly must run here
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
        ddp_timeout=DDP_TIMEOUT_S,  # what the process group got in distributed_state()
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
        callbacks = [*callbacks, SamplerEpoch(batch_sampler)]
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


def gathered_adapter(trainer) -> dict | None:
    """The trained LoRA weights, whole, on process 0, when FSDP holds them in shards (else None: the model has them).

    Gathering is a collective, so every process calls this. FSDP2 keeps each parameter as a DTensor; only the
    trainable (LoRA) ones are gathered, one `full_tensor()` each, in the same order on every process. FSDP1 flattens
    parameters, so its full state dict comes from accelerate (`Accelerator.get_state_dict`, gathered on process 0).
    """
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    from torch.distributed.tensor import DTensor

    trainable = [(name, param) for name, param in trainer.model.named_parameters() if param.requires_grad]
    if any(isinstance(param, DTensor) for _, param in trainable):
        full = {name: (param.full_tensor() if isinstance(param, DTensor) else param).detach().cpu()
                for name, param in trainable}
    else:
        names = {name for name, _ in trainable}
        full = {name: value for name, value in trainer.accelerator.get_state_dict(trainer.model_wrapped).items()
                if name in names}
    return full if trainer.is_world_process_zero() else None


def write_output(
    recipe: Recipe, trainer, tokenizer, metrics: dict, *, force: bool, adapter: dict | None = None
) -> None:
    """Adapter, tokenizer, resolved recipe, base record, metrics and loss curve, all at once or not at all.

    `adapter` is the LoRA state gathered from FSDP shards (`gathered_adapter`); None means the model holds it.
    """
    with atomic_dir(recipe.output_dir, force=force) as tmp:
        trainer.model.save_pretrained(tmp, state_dict=adapter)
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


def device_summary(recipe: Recipe | None = None) -> str:
    """One line for the CLI: where training runs and, for a recipe, in which dtype with which attention kernel."""
    if torch.cuda.is_available():
        where = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
    else:
        where = f"cpu ({os.cpu_count()} cores)"
    if recipe is None:
        return where
    dtype = str(compute_dtype(recipe.model, recipe.quantization)).removeprefix("torch.")
    sharding = ", FSDP" if fsdp_launch() else ""
    return f"{where}{sharding}, {dtype}, attention {resolve_attention(recipe.model, recipe.quantization)}"
