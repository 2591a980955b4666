"""Two processes on CPU (gloo) stand in for two GPUs: data parallel and FSDP, through `accelerate launch`.

Both launches run tests/distributed_checks.py (several trainings per launch: starting processes is the slow part);
the tests below read what each process recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
CHECKS = Path(__file__).with_name("distributed_checks.py")
FSDP_CONFIG = ROOT / "recipes" / "accelerate" / "fsdp.yaml"
GROUP_TIMEOUT_S = 15  # the ddp launch's process-group timeout; its first encoding takes 5 s longer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TULU_LITE_CACHE": str(workdir / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--dynamo_backend", "no"]
    ddp = launch + ["--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
                    str(CHECKS), "ddp", str(workdir), str(GROUP_TIMEOUT_S)]
    fsdp = launch + ["--config_file", str(FSDP_CONFIG), "--num_processes", "2", str(CHECKS), "fsdp", str(workdir)]
    for name, command in (("ddp", ddp), ("fsdp", fsdp)):  # one after the other: 2 processes already fill 2 cores
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name} launch failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return workdir


def seen(workdir: Path, check: str) -> list[dict]:
    return [json.loads((workdir / f"{check}.rank{rank}.json").read_text()) for rank in (0, 1)]


def adapter(workdir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(workdir / name / "adapter_model.safetensors")


def assert_same_adapter(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys() and len(a) == 28  # 2 layers x 7 modules x (A, B)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol)


def test_a_slow_first_encoding_outlasts_the_process_group_timeout(runs):
    # The group has the timeout train() gives it (not gloo's or NCCL's default), and the first process to encode
    # took 5 s longer than it: the others waited on a file lock, not in a collective, so the run finished.
    for record in seen(runs, "slow_encode"):
        assert record["group_timeout_s"] == GROUP_TIMEOUT_S
    metrics = json.loads((runs / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 9


def test_resume_in_a_later_epoch_trains_the_uninterrupted_runs_batches(runs):
    # 10 token-budget batches an epoch, 5 per process: step 7 is in epoch 1, the crash came at step 8.
    for straight, resumed in zip(seen(runs, "straight"), seen(runs, "resume")):
        assert sorted(resumed["steps"]) == ["8", "9"]
        assert resumed["steps"]["8"] == straight["steps"]["8"] and resumed["steps"]["9"] == straight["steps"]["9"]
        # epoch 1 is shuffled differently from epoch 0 (what the broken resume replayed)
        assert [straight["steps"][s] for s in "89"] != [straight["steps"][s] for s in "34"]
    assert_same_adapter(adapter(runs, "crashed"), adapter(runs, "ddp"), atol=1e-6)


@pytest.mark.parametrize("name", ["fsdp", "fsdp-qlora"])
def test_fsdp_shards_everything_and_trains_like_data_parallel(runs, name):
    for record in seen(runs, name):
        assert record["world_size"] == 2
        assert record["sharded"] == record["params"] == 49  # the 4-bit weights too
        assert record["local_share"] == 0.5
        assert record["dtypes"] == ["torch.float32"]  # 4-bit weights stored in the model dtype, not uint8
    reference = "ddp-qlora" if name == "fsdp-qlora" else "ddp"
    assert_same_adapter(adapter(runs, name), adapter(runs, reference), atol=1e-6)


def test_fsdp_resume_from_a_sharded_checkpoint(runs):
    checkpoint = runs / "fsdp-crashed.checkpoints" / "checkpoint-7"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir()  # one shard per process, not a full state dict
    assert_same_adapter(adapter(runs, "fsdp-crashed"), adapter(runs, "fsdp"), atol=1e-6)


def test_dpo_trains_alike_under_data_parallel_and_fsdp(runs):
    # ddp-dpo read its reference from the precomputed cache, fsdp-dpo ran it live (the adapter disabled inside the
    # sharded model): the same losses, so the same adapter. Both evaluated held-out pairs whose batches don't
    # split evenly over the processes (a process short of batches repeats one that doesn't count: FSDP would
    # otherwise wait for ever in the longer process's next forward).
    assert seen(runs, "ddp-dpo")[0] == {"world_size": 2, "steps": 4}
    for record in seen(runs, "fsdp-dpo"):
        assert record["world_size"] == 2 and record["sharded"] == record["params"] == 49
    assert_same_adapter(adapter(runs, "fsdp-dpo"), adapter(runs, "ddp-dpo"), atol=1e-5)
    ddp, fsdp = (json.loads((runs / name / "metrics.json").read_text())["heldout"] for name in ("ddp-dpo", "fsdp-dpo"))
    assert [entry["step"] for entry in ddp["history"]] == [0, 2, 4]
    assert ddp["history"][0]["reward_accuracy"] == 0.5  # policy = reference: every pair ties
    for before, after in zip(ddp["history"], fsdp["history"]):
        assert after.keys() == before.keys()
        for key, value in before.items():
            assert after[key] == pytest.approx(value, abs=1e-5), key
