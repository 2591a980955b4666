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
    assert results["DDP and FSDP on 2 GPUs"] is None  # skipped: no GPUs
    layouts = next(c for c in report["checks"] if c["name"] == "padded == padding-free (sdpa)")["figures"]
    assert layouts["no_boundaries_grad_rel"] > 100 * max(layouts["grad_rel"], 1e-9)  # the negative control bites
    assert "padding-free" in done.stdout and "report written to" in done.stdout
