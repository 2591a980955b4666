"""Checks that need two processes, run by tests/test_distributed.py under `accelerate launch` (gloo on CPU).

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_checks.py ddp WORKDIR
    accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2 \
        tests/distributed_checks.py fsdp WORKDIR

One launch runs several trainings (process start-up is the expensive part). Every rank writes what it saw to
WORKDIR/<check>.rank<R>.json; the test module asserts on those files.

ddp:  1. `slow_encode`: the first process to encode takes longer than the process group's timeout (a cold cache on a
         real mixture), which must not kill the others (they wait on a file lock, not in a collective);
      2. `resume`: token-budget batches, a crash in epoch 1 and `--resume` train on the very batches of the
         uninterrupted run (before the fix, the resumed epoch replayed epoch 0's order on every rank);
      both train the recipe `recipe(...)` below; the uninterrupted run's adapter is the reference for fsdp.
      3. `ddp-dpo`: DPO (`dpo_recipe`) with the reference precomputed and held-out pairs, whose batches don't
         split evenly over the processes.
fsdp: the same recipe with FSDP2 (the shipped recipes/accelerate/fsdp.yaml), plain LoRA and 4-bit QLoRA (with gradient
      checkpointing, like its data-parallel reference), and a crash
      + `--resume` from a sharded checkpoint; the adapters must equal the data-parallel ones. `fsdp-dpo`: the DPO
      recipe with the live reference (the adapter disabled inside the sharded model); its adapter must equal
      ddp-dpo's.
      accelerate only turns FSDP on for GPU process groups (accelerate/state.py, AcceleratorState.__init__: the
      FSDP branch lists the GPU distributed types, not MULTI_CPU), so this script lets a CPU group through; torch's
      FSDP2 `fully_shard` itself runs on CPU with gloo.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import yaml
from tiny_runs import DEMO, StopAfter
from transformers import TrainerCallback

PAIRS = DEMO.with_name("preferences.jsonl")
# 4-bit nf4 with gradient checkpointing, as the TÜLU recipes train
QLORA = ["quantization.quant_type=nf4", "training.gradient_checkpointing=true"]


def recipe(workdir: Path, name: str, **overrides) -> Path:
    """Tiny LLaMA, 114 demo chats in token-budget batches: 10 batches an epoch, so 5 steps an epoch per process."""
    body = {
        "model": {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 32}},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train_files": [str(DEMO)], "max_seq_length": 128},
        "training": {"learning_rate": 1e-2, "max_tokens_per_batch": 512, "gradient_checkpointing": False,
                     "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 7, "max_steps": 9, "seed": 1},
        "output_dir": str(workdir / name),
    }
    for key, value in overrides.items():
        section, field = key.split(".")
        body.setdefault(section, {})[field] = value
    path = workdir / f"{name}.yaml"
    if int(os.environ.get("RANK", "0")) == 0:
        path.write_text(yaml.safe_dump(body))
    return path


def dpo_recipe(workdir: Path, name: str, *, precompute: bool) -> Path:
    """Sigmoid DPO on the demo pairs, 10% of each of the 3 sources held out (3 batches of 4 per source: one
    process runs 2, the other 1 plus a repeat that doesn't count), 4 steps of 4 pairs per process."""
    body = {
        "stage": "dpo",
        "model": {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 32}},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train_files": [str(PAIRS)], "max_seq_length": 128, "eval_fraction": 0.1, "padding_free": False},
        "training": {"learning_rate": 1e-2, "per_device_batch_size": 4, "gradient_checkpointing": False,
                     "warmup_ratio": 0.0, "logging_steps": 1, "eval_steps": 2, "save_steps": 100, "max_steps": 4,
                     "seed": 1},
        "dpo": {"beta": 0.1, "loss_type": "sigmoid", "reference": "base", "precompute_reference": precompute},
        "output_dir": str(workdir / name),
    }
    path = workdir / f"{name}.yaml"
    if int(os.environ.get("RANK", "0")) == 0:
        path.write_text(yaml.safe_dump(body))
    return path


class RecordBatches(TrainerCallback):
    """A fingerprint of every micro-batch the model sees, by the optimizer step it belongs to."""

    def __init__(self) -> None:
        self.steps: dict[int, list[str]] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def hook(module, positional, named):
            ids = named["input_ids"].flatten().tolist()
            self.steps.setdefault(state.global_step + 1, []).append(hashlib.sha1(str(ids).encode()).hexdigest()[:12])

        self.handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.remove()


def write(workdir: Path, check: str, data: dict) -> None:
    (workdir / f"{check}.rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(data))


def load(path: Path, overrides: list[str] = ()):
    from tulu_lite.recipe import load_recipe
    from tulu_lite.train.devices import distributed_state

    distributed_state().wait_for_everyone()  # rank 0 wrote the recipe file
    return load_recipe(path, overrides)


def group_timeout_s() -> float:
    """The default process group's timeout, read back from its gloo backend (private torch API, test only)."""
    import torch
    import torch.distributed as dist

    backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
    return backend.options._timeout.total_seconds()


def slow_first_encoding(workdir: Path, seconds: float) -> None:
    """The first process to encode takes `seconds` (a cold cache); the ones after it find the cache filled."""
    import tulu_lite.data.encode as encode

    original = encode.encode_dataset
    marker = workdir / "encoded-once"

    def encode_dataset(*args, **kwargs):
        if not marker.exists():
            time.sleep(seconds)
            marker.touch()
        return original(*args, **kwargs)

    encode.encode_dataset = encode_dataset


def ddp_checks(workdir: Path, timeout: float) -> None:
    import tulu_lite.train.devices
    from tulu_lite.train import train
    from tulu_lite.train.devices import distributed_state

    tulu_lite.train.devices.DDP_TIMEOUT_S = timeout  # must be set before the process group exists
    distributed_state()
    slow_first_encoding(workdir, timeout + 5)
    straight = RecordBatches()
    started = time.perf_counter()
    train(load(recipe(workdir, "ddp")), callbacks=[straight])
    write(workdir, "slow_encode", {"group_timeout_s": group_timeout_s(), "seconds": time.perf_counter() - started})
    write(workdir, "straight", {"steps": straight.steps})

    crashed = recipe(workdir, "crashed")
    try:
        train(load(crashed), callbacks=[StopAfter(8)])
    except KeyboardInterrupt:
        pass
    resumed = RecordBatches()
    train(load(crashed), resume=True, callbacks=[resumed])
    write(workdir, "resume", {"steps": resumed.steps})

    train(load(recipe(workdir, "ddp-qlora"), QLORA))

    result = train(load(dpo_recipe(workdir, "ddp-dpo", precompute=True)))
    write(workdir, "ddp-dpo", {"world_size": result.metrics["world_size"], "steps": result.metrics["steps"]})


class Sharding(TrainerCallback):
    """What FSDP did to the model: parameters held as DTensors, and the share of their elements on this process."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from torch.distributed.tensor import DTensor

        params = list(model.named_parameters())
        sharded = [(name, p) for name, p in params if isinstance(p, DTensor)]
        local = sum(p.to_local().numel() for _, p in sharded)
        self.seen = {
            "params": len(params),
            "sharded": len(sharded),
            "local_share": local / max(1, sum(p.numel() for _, p in sharded)),
            "sharded_4bit": sum("base_layer" in name for name, _ in sharded),
            "dtypes": sorted({str(p.dtype) for _, p in params}),
        }


def allow_fsdp_on_cpu() -> None:
    """Let accelerate build its FSDP state on a CPU (gloo) process group, as it does on a GPU one."""
    import accelerate.state
    from accelerate.utils import DistributedType

    original = accelerate.state.AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    accelerate.state.AcceleratorState.__init__ = init


def fsdp_checks(workdir: Path) -> None:
    from tulu_lite.train import train

    allow_fsdp_on_cpu()
    for name, overrides in (("fsdp", []), ("fsdp-qlora", QLORA)):
        sharding = Sharding()
        result = train(load(recipe(workdir, name), overrides), callbacks=[sharding])
        write(workdir, name, {**sharding.seen, "world_size": result.metrics["world_size"]})

    crashed = recipe(workdir, "fsdp-crashed")  # sharded checkpoint at step 7, crash at 8, resume
    try:
        train(load(crashed), callbacks=[StopAfter(8)])
    except KeyboardInterrupt:
        pass
    train(load(crashed), resume=True)

    result = train(load(dpo_recipe(workdir, "fsdp-dpo", precompute=False)), callbacks=[sharding := Sharding()])
    write(workdir, "fsdp-dpo", {**sharding.seen, "world_size": result.metrics["world_size"]})


def main() -> None:
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    started = time.perf_counter()
    if mode == "ddp":
        ddp_checks(workdir, timeout=float(sys.argv[3]))
    elif mode == "fsdp":
        fsdp_checks(workdir)
    else:
        raise SystemExit(f"unknown mode {mode}")
    write(workdir, f"{mode}-done", {"seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main()
