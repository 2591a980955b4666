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
    OUTPUT_DIR.checkpoints/      checkpoints every training.save_steps (see tulu_lite.checkpoints); resume with
                                 --resume; the run's lock

Checkpoints live beside the output rather than inside it so the output directory itself is all-or-nothing.
The first Ctrl-C finishes the current optimizer step, saves a checkpoint and stops (`TrainingStopped`); a second
one aborts at once. Under `accelerate launch` every process trains its shard of each batch (data parallel) and
process 0 writes; with an FSDP config (recipes/accelerate/fsdp.yaml) the weights, LoRA state and optimizer are
sharded across the processes too, and the adapter is gathered onto process 0 to be written.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
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
from transformers.trainer_callback import PrinterCallback

from tulu_lite import checkpoints as ckpt
from tulu_lite.checkpoints import CHECKPOINT_PREFIX
from tulu_lite.collate import AssistantOnlyCollator, TokenBudgetBatchSampler
from tulu_lite.errors import TuluError, first_line
from tulu_lite.heldout import EVAL_LOSS, BestAdapter
from tulu_lite.json_files import write_json
from tulu_lite.model.loading import add_lora, compute_dtype, fsdp_launch, load_base_model, load_recipe_tokenizer, resolve_attention, resolve_dtype
from tulu_lite.model.tiny import weights_sha256
from tulu_lite.outputs import atomic_dir, ensure_writable, write_errors
from tulu_lite.recipe import Recipe, save_recipe

# Seconds a collective may wait for the slowest process before the job is killed: transformers' default
# `ddp_timeout`, given to the process group when `train` creates it (see `distributed_state`).
DDP_TIMEOUT_S = 1800


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    main_process: bool = True  # False on the other ranks of a data-parallel launch (they write nothing)


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C stopped the run after an optimizer step; `checkpoint` holds everything needed to resume or merge."""

    def __init__(self, step: int, max_steps: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}/{max_steps}; checkpoint saved in {checkpoint}")
        self.step, self.max_steps, self.checkpoint = step, max_steps, checkpoint


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
    console = console or Console()
    check_logger(recipe)  # before anything is loaded or created
    _check_output(recipe, force=force)
    with ckpt.run_lock(recipe, enabled=int(os.environ.get("RANK", "0")) == 0):
        return _train_locked(recipe, resume=resume, force=force, callbacks=callbacks, console=console)


def _train_locked(recipe: Recipe, *, resume: bool, force: bool, callbacks: Sequence[TrainerCallback],
                  console: Console) -> TrainResult:
    state = distributed_state()
    check_gpu_launch(torch.cuda.device_count() if torch.cuda.is_available() else 0, state.num_processes)
    start = _prepare_locations(recipe, resume=resume, force=force, main=state.is_main_process, console=console)
    state.wait_for_everyone()  # process 0 may have removed old checkpoints: nobody writes beside them before that
    tokenizer = load_recipe_tokenizer(recipe.model)
    data = encode_in_turn(recipe, tokenizer, processes=state.num_processes)
    model = build_model(recipe, device_map=base_device_map(state.local_process_index))
    if state.is_main_process:
        describe_data(recipe, data, console)
    progress = RichProgress(console, state.is_main_process)
    stop = StopOnInterrupt()
    trainer = make_trainer(recipe, model, tokenizer, data, [*callbacks, progress, stop], start=start)
    with stop.installed():
        trainer.train(resume_from_checkpoint=start.checkpoint)
    if stop.requested and trainer.state.global_step < trainer.state.max_steps:
        step = trainer.state.global_step
        raise TrainingStopped(step, trainer.state.max_steps, recipe.checkpoint_dir / f"{CHECKPOINT_PREFIX}{step}")
    trainer.best.restore_into(trainer.model)  # with held-out data the output is the best evaluation's adapter
    metrics = summarise(trainer)
    adapter = gathered_adapter(trainer)  # a collective under FSDP: every process takes part
    if trainer.is_world_process_zero():
        write_output(recipe, trainer, tokenizer, metrics, force=force, adapter=adapter)
        report_run(metrics, console)
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


def encode_in_turn(recipe: Recipe, tokenizer, *, processes: int) -> TrainingData:
    """Encode the training data while no collective is waiting: the processes of a machine take turns on a lock.

    The first process to get the lock encodes and fills the Arrow cache (for a cold TÜLU mixture that can take
    longer than any process-group timeout); the others wait on the lock, which has no timeout, and then read the
    cache. Waiting in a barrier instead (`main_process_first`) would hit the group's timeout.
    """
    if processes == 1:
        return encode_data(recipe, tokenizer)
    from filelock import FileLock

    with FileLock(str(encode_lock_path(recipe))):
        return encode_data(recipe, tokenizer)


def encode_lock_path(recipe: Recipe) -> Path:
    """A lock per run and machine (the Arrow cache is per machine too), in the system's temporary directory."""
    digest = hashlib.sha256(str(recipe.checkpoint_dir.resolve()).encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tulu-lite-encode-{user}-{digest}.lock"


# ---- stages ---------------------------------------------------------------------------------------------------

# What `report_to` needs importable, in the order transformers' callbacks try them.
_LOGGER_MODULES = {"tensorboard": ("torch.utils.tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_logger(recipe: Recipe) -> None:
    """Refuse a `training.report_to` whose package is missing (or broken) before anything is loaded."""
    name = recipe.training.report_to
    if name == "none":
        return
    reasons = []
    for module in _LOGGER_MODULES[name]:
        try:
            importlib.import_module(module)
            return
        except Exception as exc:  # a half-installed package fails in many ways; any of them means "not usable"
            reasons.append(first_line(exc))
    raise TuluError(f"{recipe.where('training', 'report_to')}: {name} is not installed ({reasons[0]}); "
                    f'install it with: pip install "tulu-lite[{name}]"')


def _check_output(recipe: Recipe, *, force: bool) -> None:
    """Fail before any loading if the output exists or its location can't be written."""
    out = recipe.output_dir
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise TuluError(f"output_dir: {out} already exists (pass --force to overwrite, or choose another output_dir)")
    ensure_writable(out, "output_dir")


@dataclass(frozen=True)
class Start:
    """Where training starts: a checkpoint to resume (or None) and the recipe changes accepted for it."""

    checkpoint: str | None = None
    changes: dict = field(default_factory=dict)
    resumed: list = field(default_factory=list)  # the run's earlier resumes (metrics.json "resumed")


def _prepare_locations(recipe: Recipe, *, resume: bool, force: bool, main: bool, console: Console) -> Start:
    """Decide where training starts: from scratch (clearing old checkpoints with --force), or a checkpoint."""
    earlier = ckpt.checkpoint_folders(recipe.checkpoint_dir)
    if not resume:
        if earlier and not force:
            raise TuluError(f"{recipe.checkpoint_dir}: holds checkpoints of an earlier run "
                            f"(pass --resume to continue it, or --force to start over)")
        if force and main:
            ckpt.clear_checkpoints(recipe.checkpoint_dir)
        return Start()
    latest = ckpt.latest_checkpoint(recipe.checkpoint_dir)
    for folder, reason in latest.incomplete:
        if main:
            aside = ckpt.set_aside(folder)
            console.print(f"[yellow]{folder.name} is incomplete ({reason}): set aside as {aside.name}[/]")
    if latest.checkpoint is None:
        if main:
            console.print(f"[yellow]no complete checkpoint in {recipe.checkpoint_dir}: starting from step 0[/]")
        return Start()
    changes = ckpt.check_resume(latest.checkpoint, recipe)
    _check_mixture_unchanged(recipe)
    if main:
        note = f" with {ckpt.describe_changes(changes)}" if changes else ""
        console.print(f"resuming from [bold]{latest.checkpoint}[/]{note}", highlight=False)
    earlier_resumes = json.loads((latest.checkpoint / "metrics.json").read_text()).get("resumed", [])
    return Start(str(latest.checkpoint), changes, earlier_resumes)


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint (see `tulu_lite.checkpoints.incomplete_reason`), or None."""
    latest = ckpt.latest_checkpoint(checkpoint_dir).checkpoint
    return str(latest) if latest is not None else None


# ---- data ---------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The encoded examples to train on, and the held-out ones per source (empty without held-out data)."""

    train: object  # datasets.Dataset of input_ids / labels
    report: object  # EncodeReport of the training data (kept, dropped)
    heldout: dict = field(default_factory=dict)  # source name -> datasets.Dataset
    heldout_report: object | None = None  # EncodeReport of data.eval_files


def resolve_files(recipe: Recipe, key: str) -> list:
    """The inputs listed in ``data.<key>``: train_files and eval_files take the same kinds of input (files, folders,
    hub datasets; `tulu_lite.recipe.DataSource`). A missing local one is named with its recipe line here; the
    loader checks the rest."""
    items = list(getattr(recipe.data, key))
    for index, item in enumerate(items):
        if item.path is not None and not item.path.exists():
            raise TuluError(f"{recipe.where('data', key, index)}: {item.path}: file not found")
    return items


def training_files(recipe: Recipe) -> list:
    """The conversation inputs to train on: data.train_files (files, folders, hub datasets), or the file a mixture
    is written to."""
    if recipe.data.mixture is not None:
        return [path for _, path in _mixture_sources(recipe)]
    return resolve_files(recipe, "train_files")


_MIXTURE_RECORD = "mixture.json"


def _mixture_folder(recipe: Recipe) -> Path:
    return recipe.checkpoint_dir / "data"


def _mixture_sources(recipe: Recipe) -> list[tuple[str, Path]]:
    """Write each mixture source's selection once into OUT.checkpoints/data/ (seeded, so a rerun or --resume reuses
    it) and return (source name, file) pairs: held-out losses are reported per mixture source.

    The files are reused while the recorded resolved mixture equals the current one; edit a source file in place
    without touching the YAML and you must delete OUT.checkpoints/data/ to re-mix.
    """
    from tulu_lite.data.mix import iter_mixture, load_mixture, plan_mixture
    from tulu_lite.json_files import write_jsonl

    mixture = load_mixture(recipe.data.mixture)
    folder = _mixture_folder(recipe)
    labels = [source.label for source in mixture.sources]
    files = [folder / f"{index:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.jsonl"
             for index, label in enumerate(labels)]
    wanted = {"resolved": json.loads(mixture.model_dump_json()), "files": [path.name for path in files]}
    record = folder / _MIXTURE_RECORD
    if not (record.is_file() and json.loads(record.read_text()) == wanted and all(p.is_file() for p in files)):
        folder.mkdir(parents=True, exist_ok=True)
        # inputs other than tulu-lite JSON Lines (Parquet, hub, ...) are spooled as JSON Lines while selecting
        with tempfile.TemporaryDirectory(prefix=".spool-", dir=folder) as spool:
            for plan, path in zip(plan_mixture(mixture, lambda: Path(spool)), files):
                write_jsonl(iter_mixture([plan], mixture.seed), path)
        write_json(record, wanted)
    return list(zip(labels, files))


def _check_mixture_unchanged(recipe: Recipe) -> None:
    """--resume with a mixture: the mixture the checkpoints were trained on must still be the recipe's."""
    from tulu_lite.data.mix import load_mixture

    record = _mixture_folder(recipe) / _MIXTURE_RECORD
    if recipe.data.mixture is None or not record.is_file():
        return
    if json.loads(record.read_text())["resolved"] != json.loads(load_mixture(recipe.data.mixture).model_dump_json()):
        raise TuluError(f"--resume: {recipe.data.mixture} changed since the checkpoints were trained on it; undo "
                        f"the change, or start a new run (another output_dir, or --force)")


def _encode(recipe: Recipe, tokenizer, items: list, key: str):
    from tulu_lite.data.encode import encode_dataset

    return encode_dataset(items, tokenizer, recipe.model.chat_template, recipe.data.max_seq_length,
                          num_proc=recipe.data.num_proc, key=key, with_source=True)


def _encode_training_files(recipe: Recipe, tokenizer):
    """Encode the training data; a mixture's examples are labelled with their mixture source's name."""
    from datasets import concatenate_datasets

    from tulu_lite.data.encode import SOURCE_COLUMN, EncodeReport

    if recipe.data.mixture is None:
        return _encode(recipe, tokenizer, training_files(recipe), "data.train_files")
    parts, total = [], EncodeReport()
    for label, path in _mixture_sources(recipe):
        encoded, report = _encode(recipe, tokenizer, [path], "data.mixture")
        parts.append(encoded.remove_columns(SOURCE_COLUMN).add_column(SOURCE_COLUMN, [label] * len(encoded)))
        total.kept += report.kept
        total.tokens += report.tokens
        total.trained_tokens += report.trained_tokens
        for reason, count in report.dropped.items():
            total.dropped[reason] = total.dropped.get(reason, 0) + count
    return concatenate_datasets(parts), total


def encode_data(recipe: Recipe, tokenizer) -> TrainingData:
    """Encode the training files once (Arrow-cached by data + tokenizer + template + max length) and set the
    held-out examples apart: data.eval_files, or a seeded data.eval_fraction of every source."""
    from tulu_lite.data.encode import SOURCE_COLUMN
    from tulu_lite.heldout import by_source, split_heldout

    train, report = _encode_training_files(recipe, tokenizer)
    heldout, heldout_report = {}, None
    if recipe.data.eval_fraction is not None:
        train, heldout = split_heldout(train, recipe.data.eval_fraction, recipe.training.seed)
    elif recipe.data.eval_files:
        encoded, heldout_report = _encode(recipe, tokenizer, resolve_files(recipe, "eval_files"), "data.eval_files")
        heldout = by_source(encoded)
        if not heldout:
            raise TuluError(f"{recipe.where('data', 'eval_files')}: no example with a trained token within "
                            f"max_seq_length {recipe.data.max_seq_length}")
    if len(train) == 0:
        files = ", ".join(getattr(item, "label", str(item)) for item in training_files(recipe))
        raise TuluError(f"data: no trainable example in {files} (dropped: {report.dropped})")
    heldout = {name: dataset.remove_columns(SOURCE_COLUMN) for name, dataset in heldout.items()}
    return TrainingData(train.remove_columns(SOURCE_COLUMN), report, heldout, heldout_report)


def encode_training_data(recipe: Recipe, tokenizer):
    """The examples trained on (held-out ones removed) and the encoding report, e.g. for `tulu-lite plan`."""
    data = encode_data(recipe, tokenizer)
    return data.train, data.report


def describe_data(recipe: Recipe, data: TrainingData, console: Console) -> None:
    """One line on the held-out data and the evaluation cadence (nothing without held-out data)."""
    if not data.heldout:
        return
    t = recipe.training
    examples = sum(len(dataset) for dataset in data.heldout.values())
    where = "data.eval_files" if recipe.data.eval_files else f"{recipe.data.eval_fraction:g} of each source"
    stopping = (f"; early stopping after {t.early_stopping_patience} evaluations without improvement"
                if t.early_stopping_patience else "")
    sources = f"{len(data.heldout)} source{'s' if len(data.heldout) > 1 else ''}"
    console.print(f"held out: {examples:,} examples from {sources} ({where}), evaluated every "
                  f"{t.eval_steps or t.save_steps} steps{stopping}", highlight=False)


def build_model(recipe: Recipe, *, device_map=None):
    """The frozen base (4-bit when the recipe quantizes) wrapped with trainable LoRA adapters."""
    from transformers import set_seed

    resolve_attention(recipe.model, recipe.quantization)  # a kernel the recipe names explicitly must run here
    base = load_base_model(recipe.model, recipe.quantization, device_map=device_map)
    set_seed(recipe.training.seed)  # LoRA A is initialised randomly: the same recipe must start from the same adapter
    return add_lora(base, recipe.lora)


def sft_config(recipe: Recipe, *, evaluate: bool = False, eval_on_start: bool = False):
    """Map the recipe onto TRL's SFTConfig: our data is pre-tokenized with labels, and our collator lays it out.

    `evaluate`: held-out losses every eval_steps (default: save_steps) and at the last step (`TuluTrainer.evaluate`
    computes them); `eval_on_start` adds one before the first step, the curves' starting point.
    """
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
        ddp_timeout=DDP_TIMEOUT_S,  # what the process group got in distributed_state()
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )


def make_trainer(recipe: Recipe, model, tokenizer, data: TrainingData, callbacks: Sequence[TrainerCallback], *,
                 start: Start | None = None):
    """An SFTTrainer with our collator (and token-budget batches when training.max_tokens_per_batch is set), our
    held-out evaluation, best-adapter tracking and self-contained checkpoints."""
    start = start or Start()
    dataset = data.train
    collator = AssistantOnlyCollator(pad_token_id=tokenizer.pad_token_id, padding_free=recipe.data.padding_free)
    batch_sampler = None
    if recipe.training.max_tokens_per_batch is not None:
        lengths = [len(ids) for ids in dataset["input_ids"]]
        budget = recipe.training.max_tokens_per_batch
        batch_sampler = TokenBudgetBatchSampler(lengths, budget, seed=recipe.training.seed)
        callbacks = [*callbacks, SamplerEpoch(batch_sampler)]
    if recipe.training.report_to == "wandb":  # the run's folder and a project name, unless the user chose others
        os.environ.setdefault("WANDB_DIR", str(recipe.checkpoint_dir))
        os.environ.setdefault("WANDB_PROJECT", "tulu-lite")
    evaluate = bool(data.heldout)
    trainer = _trainer_class()(
        model=model,
        args=sft_config(recipe, evaluate=evaluate, eval_on_start=start.checkpoint is None),
        data_collator=collator,
        train_dataset=dataset,
        eval_dataset=dict(data.heldout) if evaluate else None,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.batch_sampler = batch_sampler
    trainer.run = RunContext(recipe, data, start)
    trainer.remove_callback(PrinterCallback)  # without tqdm, Trainer prints every log dict; RichProgress replaces it
    trainer.add_callback(ResumeState(trainer))
    if start.checkpoint is not None:
        _quiet_cadence_warning()
    _keep_adapters_fp32(trainer.model)
    _use_training_matmul(trainer.model)
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


class _DropCadenceWarning(logging.Filter):
    # transformers warns on resume that logging/eval/save steps differ from the checkpoint's; `check_resume`
    # accepted those changes and `ResumeState` applies them, so the warning would only mislead.
    def filter(self, record: logging.LogRecord) -> bool:
        return "do not match the ones in the `trainer_state.json`" not in record.getMessage()


def _quiet_cadence_warning() -> None:
    log = logging.getLogger("transformers.trainer_utils")
    if not any(isinstance(existing, _DropCadenceWarning) for existing in log.filters):
        log.addFilter(_DropCadenceWarning())


@dataclass
class RunContext:
    """What the trainer needs beyond TRL's arguments: the recipe, the data and how this run started."""

    recipe: Recipe
    data: TrainingData
    start: Start
    base: dict | None = None  # base_model.json, computed once


def _keep_adapters_fp32(model) -> None:
    # SFTTrainer casts the LoRA weights of a quantized base to bf16 (trl sft_trainer.py, "QLoRA ... converted to
    # bf16", pending peft#2889). On CPU that is ~4x slower, and everywhere small AdamW updates vanish in bf16, so we
    # keep fp32 master weights (compute still runs in the bnb compute dtype / autocast). Remove when TRL makes
    # the cast optional.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def _use_training_matmul(model) -> None:
    # bitsandbytes 0.50 repacks a Linear4bit's weights in place for a fused bf16 CPU kernel on its first eval-mode
    # forward (the held-out evaluation), and that kernel has no autograd: the training steps after it would lose
    # the gradient through every 4-bit layer (torch warns "an autograd kernel was not registered"). Same switch as
    # tulu_lite.merge._use_training_matmul; needed for as long as bitsandbytes enables the fast path by default.
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _trainer_class():
    """SFTTrainer plus token counting and optional token-budget batches (built lazily: importing trl is slow)."""
    from torch.utils.data import DataLoader
    from transformers import Trainer
    from trl import SFTTrainer

    class TuluTrainer(SFTTrainer):
        batch_sampler = None
        run: RunContext | None = None
        stopped_early_at: int | None = None

        @property
        def best(self) -> BestAdapter:
            if "_best" not in self.__dict__:
                self._best = BestAdapter()
            return self._best

        @best.setter
        def best(self, value: BestAdapter) -> None:
            self._best = value

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

        def _save_checkpoint(self, model, trial):
            folder = Path(self.args.output_dir) / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
            # A disk filling up mid-run is one line; the half-written checkpoint has no manifest, so --resume
            # skips it (tulu_lite.checkpoints).
            with write_errors(folder, "a checkpoint"):
                super()._save_checkpoint(model, trial)
                if self.args.should_save:
                    write_checkpoint_extras(self, folder)

    return TuluTrainer


def heldout_metrics(trainer) -> dict[str, float]:
    """The held-out losses of the model as it is now, every process evaluating its share of the batches."""
    from tulu_lite.heldout import heldout_sums, losses_from_sums

    sets, training = trainer.run.data.heldout, trainer.run.recipe.training
    model, accelerator = trainer.model, trainer.accelerator
    was_training = model.training
    model.eval()
    try:
        with accelerator.autocast():
            sums = heldout_sums(model, sets, trainer.data_collator, batch_size=training.per_device_batch_size,
                                max_tokens=training.max_tokens_per_batch, rank=accelerator.process_index,
                                world_size=accelerator.num_processes)
    finally:
        model.train(was_training)
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    return losses_from_sums(sets.keys(), sums)


class ResumeState(TrainerCallback):
    """On --resume, apply the recipe's (possibly changed) cadence and bring back the best adapter so far."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from tulu_lite.heldout import load_weights, trainable_weights

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
        self.trainer.best = BestAdapter.from_history(state.log_history, state.best_global_step, weights)


def write_checkpoint_extras(trainer, folder: Path) -> None:
    """What makes a checkpoint usable on its own (merge, eval, resume checks), then the manifest, last."""
    from tulu_lite.heldout import save_weights

    run = trainer.run
    save_recipe(run.recipe, folder / "recipe.yaml")
    if run.base is None:
        run.base = base_record(run.recipe, trainer.model)
    write_json(folder / "base_model.json", run.base)
    metrics = summarise(trainer)
    write_json(folder / "metrics.json", metrics)
    plot_loss(metrics, folder / "loss.png", title=f"{run.recipe.output_dir.name} at step {trainer.state.global_step}")
    best = trainer.best
    if best.weights is not None and best.step != trainer.state.global_step:
        save_weights(best.weights, folder / ckpt.BEST_ADAPTER)
    ckpt.write_manifest(folder, {"step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
                                 "best_step": best.step})


# ---- Ctrl-C ---------------------------------------------------------------------------------------------------


class StopOnInterrupt(TrainerCallback):
    """The first Ctrl-C (SIGINT) asks the run to stop after the current optimizer step, with a checkpoint; the
    second aborts at once (KeyboardInterrupt). Installed only while training, from the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self.sync = None  # set under a multi-process launch: every process must stop at the same step

    def _on_signal(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: a signal handler may interrupt a print to the same stream.
        os.write(2, b"\nCtrl-C: stopping after this optimizer step and saving a checkpoint (Ctrl-C again aborts)\n")

    def installed(self):
        from contextlib import contextmanager

        @contextmanager
        def scope():
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(signal.SIGINT, self._on_signal)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)

        return scope()

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


def _eval_line(state, logs: dict) -> str:
    """``held-out step 60/240  loss 3.2104 best  ·  dolly 2.9100  oasst1 3.4800``"""
    from rich.markup import escape

    prefix = f"{EVAL_LOSS}/"
    sources = "  ".join(f"{escape(key[len(prefix):])} {value:.4f}" for key, value in logs.items()
                        if key.startswith(prefix))
    best = "  [green]best[/]" if state.global_step > 0 and state.best_global_step == state.global_step else ""
    return (f"[cyan]held-out[/] {state.global_step:>4}/{state.max_steps}  loss {logs[EVAL_LOSS]:.4f}{best}"
            f"  ·  {sources}")


def _human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{int(count)}"


# ---- outputs --------------------------------------------------------------------------------------------------


def summarise(trainer) -> dict:
    """metrics.json: the per-step log, first/final loss, held-out losses, the best step, totals, what was dropped."""
    run = trainer.run
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = next((entry for entry in reversed(trainer.state.log_history) if "train_runtime" in entry), {})
    last = history[-1] if history else {}
    heldout = _heldout_summary(trainer)
    return {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        "train_loss": final.get("train_loss"),
        "train_runtime_s": final.get("train_runtime"),
        "tokens": last.get("tokens"),
        "trained_tokens": last.get("trained_tokens"),
        "world_size": trainer.accelerator.num_processes,
        "examples": len(run.data.train),
        "dropped": run.data.report.dropped,
        # Which step's adapter the output holds: the best evaluation's with held-out data, else the last step's.
        "output_step": trainer.best.step if trainer.best.step is not None else trainer.state.global_step,
        "best_step": trainer.best.step,
        "best_eval_loss": trainer.best.loss if trainer.best.step is not None else None,
        "stopped_early_at": trainer.stopped_early_at,
        "resumed": _resume_history(trainer),
        "heldout": heldout,
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


def _heldout_summary(trainer) -> dict | None:
    """Sizes of the held-out sets, every evaluation, and the sizes dropped by truncation."""
    from dataclasses import asdict

    from tulu_lite.heldout import eval_history, source_sizes

    data = trainer.run.data
    if not data.heldout:
        return None
    return {
        "source": "data.eval_files" if trainer.run.recipe.data.eval_files else "data.eval_fraction",
        "sources": {name: asdict(size) for name, size in source_sizes(data.heldout).items()},
        "dropped": data.heldout_report.dropped if data.heldout_report is not None else {},
        "history": [asdict(record) for record in eval_history(trainer.state.log_history, data.heldout)],
    }


def _resume_history(trainer) -> list[dict]:
    """Every resume of this run so far, with the recipe changes it accepted (carried from checkpoint to checkpoint)."""
    start = trainer.run.start
    if start.checkpoint is None:
        return []
    changes = {key: {"before": old, "after": new} for key, (old, new) in start.changes.items()}
    return [*start.resumed, {"from": Path(start.checkpoint).name, "changes": changes}]


def write_output(
    recipe: Recipe, trainer, tokenizer, metrics: dict, *, force: bool, adapter: dict | None = None
) -> None:
    """Adapter, tokenizer, resolved recipe, base record, metrics and loss curve, all at once or not at all.

    `adapter` is the LoRA state gathered from FSDP shards (`gathered_adapter`); None means the model holds it.
    """
    with atomic_dir(recipe.output_dir, force=force) as tmp, write_errors(recipe.output_dir, "the adapter"):
        trainer.model.save_pretrained(tmp, state_dict=adapter)
        tokenizer.save_pretrained(tmp)
        save_recipe(recipe, tmp / "recipe.yaml")
        write_json(tmp / "base_model.json", trainer.run.base or base_record(recipe, trainer.model))
        write_json(tmp / "metrics.json", metrics)
        plot_loss(metrics, tmp / "loss.png", title=recipe.output_dir.name)


def report_run(metrics: dict, console: Console) -> None:
    """After training: the held-out table, early stopping, and what encoding dropped (one line each)."""
    heldout = metrics["heldout"]
    if heldout is not None:
        console.print(heldout_table(metrics))
        if metrics["stopped_early_at"] is not None:
            console.print(f"early stopping at step {metrics['stopped_early_at']}: no lower held-out loss since step "
                          f"{metrics['best_step']}", highlight=False)
        if metrics["best_step"] is not None:
            console.print(f"output: the adapter of step {metrics['output_step']} (lowest held-out loss "
                          f"{metrics['best_eval_loss']:.4f})", highlight=False)
    _report_dropped("training", metrics["examples"], metrics["dropped"], console)
    if heldout is not None:
        kept = sum(size["examples"] for size in heldout["sources"].values())
        _report_dropped("held-out", kept, heldout["dropped"], console)


def _report_dropped(what: str, kept: int, dropped: dict[str, int], console: Console) -> None:
    for reason, count in dropped.items():
        console.print(f"[yellow]dropped {count:,} of {kept + count:,} {what} examples: {reason}[/]", highlight=False)


def heldout_table(metrics: dict):
    """Held-out loss per source: before training, at the best evaluation, at the last one."""
    from rich.markup import escape
    from rich.table import Table

    heldout = metrics["heldout"]
    history = heldout["history"]
    best = next((entry for entry in history if entry["step"] == metrics["best_step"]), None)
    columns = [("step 0", next((entry for entry in history if entry["step"] == 0), None)),
               (f"best: {metrics['best_step']}", best), (f"last: {history[-1]['step']}", history[-1])]
    columns = [(title, entry) for title, entry in columns if entry is not None]
    table = Table(title="held-out loss by step (nats per trained token)")
    for title in ("source", "examples", "tokens", *(title for title, _ in columns)):
        table.add_column(title, justify="left" if title == "source" else "right")
    for name, size in heldout["sources"].items():
        table.add_row(escape(name), f"{size['examples']:,}", f"{size['trained_tokens']:,}",
                      *(_fmt(entry["sources"].get(name)) for _, entry in columns))
    table.add_section()
    examples = sum(size["examples"] for size in heldout["sources"].values())
    tokens = sum(size["trained_tokens"] for size in heldout["sources"].values())
    table.add_row("overall", f"{examples:,}", f"{tokens:,}", *(_fmt(entry["loss"]) for _, entry in columns))
    return table


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def base_record(recipe: Recipe, model) -> dict:
    """Where the base weights came from, and a fingerprint `merge` checks the base against.

    Any other base: `tulu_lite.model.base_fingerprint` (safetensors headers and samples of every tensor, cheap
    even for 65B; a hub base is fingerprinted in its cache snapshot). The tiny LLaMA, which merge rebuilds from
    its seed: the full weights hash.
    """
    from tulu_lite.model.files import base_fingerprint, model_files_dir

    loaded_from = model.peft_config["default"].base_model_name_or_path
    record = {"name_or_path": recipe.model.name_or_path, "loaded_from": loaded_from}
    if recipe.model.is_tiny:
        record["weights_sha256"] = weights_sha256(loaded_from)
    else:
        directory = model_files_dir(loaded_from)
        record["fingerprint"] = base_fingerprint(directory) if directory is not None else None
    return record


def plot_loss(metrics: dict, target: Path, *, title: str) -> None:
    """Training loss, and with held-out data the overall held-out loss and one curve per source."""
    # A bare Figure, not pyplot: switching pyplot's backend here would stop a notebook from showing its figures.
    from matplotlib.figure import Figure

    history = metrics["log_history"]
    steps = [entry["step"] for entry in history]
    losses = [entry["loss"] for entry in history]
    figure = Figure(figsize=(7, 4) if metrics["heldout"] else (6, 3.5), dpi=120)
    axis = figure.subplots()
    axis.plot(steps, losses, marker="o" if len(steps) < 30 else None, linewidth=1.5, label="training")
    values = list(losses)
    if metrics["heldout"]:
        values += _plot_heldout(axis, metrics)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (assistant tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if metrics["heldout"]:
        axis.legend(fontsize=7, loc="best")
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(target)


def _plot_heldout(axis, metrics: dict) -> list[float]:
    history = metrics["heldout"]["history"]
    steps = [entry["step"] for entry in history]
    overall = [entry["loss"] for entry in history]
    names = list(metrics["heldout"]["sources"])
    label = "held-out, all sources" if len(names) > 1 else f"held-out ({names[0]})"
    axis.plot(steps, overall, color="black", linestyle="--", linewidth=2, marker="s", markersize=3, label=label)
    values = list(overall)
    for name in names if len(names) > 1 else []:
        curve = [entry["sources"].get(name) for entry in history]
        axis.plot(steps, curve, linewidth=1, marker=".", alpha=0.8, label=f"held-out {name}")
        values += curve
    if metrics["best_step"] is not None:
        axis.axvline(metrics["best_step"], color="grey", linestyle=":", linewidth=1, label="best held-out step")
    return values


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
