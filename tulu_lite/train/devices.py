"""Processes and devices: the process group of a launch, which device a process loads the base onto, and the LoRA
weights gathered back from FSDP shards to be written.

Under `accelerate launch` (or torchrun) every process trains its shard of each batch (data parallel) and process
0 writes; with an FSDP config (recipes/accelerate/fsdp.yaml) the weights, LoRA state and optimizer are sharded
across the processes too.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from tulu_lite.errors import TuluError
from tulu_lite.model.loading import fsdp_launch

# Seconds a collective may wait for the slowest process before the job is killed: transformers' default
# `ddp_timeout`, given to the process group when `train` creates it (see `distributed_state`).
DDP_TIMEOUT_S = 1800


def global_rank() -> int:
    """This process's rank in the launch (0 when alone), read from the environment before any group exists."""
    return int(os.environ.get("RANK", "0"))


def start_processes():
    """This process's place in the launch (accelerate's `PartialState`), after refusing a launch that can't train."""
    state = distributed_state()
    check_gpu_launch(torch.cuda.device_count() if torch.cuda.is_available() else 0, state.num_processes)
    return state


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
