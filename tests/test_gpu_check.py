"""benchmarks/gpu_check.py: one line and exit 2 without CUDA; its checks run end to end on a tiny CPU model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200",
           "TULU_LITE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(SCRIPT.parents[1])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    done = run(["--json", str(tmp_path / "report.json")], tmp_path)
    assert done.returncode == 2
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith("gpu_check: no CUDA GPU visible") and not done.stderr.strip()
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_the_checks_run_on_a_tiny_cpu_model(tmp_path):
    done = run(["--cpu-dry-run", "--json", str(tmp_path / "report.json")], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["failed"] == []
    results = {check["name"]: check["ok"] for check in report["checks"]}
    assert results["padded == padding-free (sdpa)"] is True
    assert results["train sdpa, padding-free, checkpointing on"] is True
    assert results["train sdpa, padding-free, checkpointing off"] is True
    assert results["merge, verified"] is True and results["eval: batched generation + log-likelihoods"] is True
    assert results["DPO (QLoRA) steps, live reference"] is True
    assert results["DPO (QLoRA) steps, precomputed reference"] is True
    assert {run["precompute_reference"] for run in report["dpo_runs"]} == {False, True}
    assert results["DDP and FSDP on 2 GPUs"] is None  # skipped: no GPUs
    layouts = next(c for c in report["checks"] if c["name"] == "padded == padding-free (sdpa)")["figures"]
    assert layouts["no_boundaries_grad_rel"] > 100 * max(layouts["grad_rel"], 1e-9)  # the negative control bites
    assert "padding-free" in done.stdout and "report written to" in done.stdout


def _script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("listed, expected_self, expected_all", [
    (None, "0", ["0", "1"]), ("3,5,7", "3", ["3", "5", "7"]), ("2, 6", "2", ["2", "6"])])
def test_with_several_gpus_the_script_itself_sees_one_and_launches_get_them_all(monkeypatch, listed, expected_self,
                                                                                 expected_all):
    # Plain `tulu-lite train` refuses several visible GPUs in one process; the single-process checks must not
    # trip over that, and the DDP/FSDP launches must still get every GPU.
    module = _script_module()
    monkeypatch.setattr(module.torch.cuda, "device_count", lambda: len(expected_all))
    if listed is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert module.pin_one_gpu() == expected_all
    assert os.environ["CUDA_VISIBLE_DEVICES"] == expected_self


def test_one_or_no_gpu_leaves_the_visible_list_alone(monkeypatch):
    module = _script_module()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    monkeypatch.setattr(module.torch.cuda, "device_count", lambda: 1)
    assert module.pin_one_gpu() == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "4"


def test_a_stage_that_raises_is_a_failed_check_not_a_lost_report():
    module = _script_module()

    def out_of_memory():
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    check = module.guarded("train sdpa-pf", out_of_memory)
    assert check.ok is False and check.detail == "raised RuntimeError: Tried to allocate 2.00 GiB"
    assert module.guarded("fine", lambda: 7) == 7
