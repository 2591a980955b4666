"""Ctrl-C: the first one stops after the current step with a checkpoint that merges; a second one aborts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli_cases import run_cli
from tiny_runs import tiny_cache, write_recipe  # noqa: F401

from tulu_lite.train import checkpoints as ckpt
from tulu_lite.train.callbacks import StopOnInterrupt


def test_first_ctrl_c_asks_to_stop_and_the_second_aborts():
    stop = StopOnInterrupt()
    before = signal.getsignal(signal.SIGINT)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # let the handler run
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def wait_for(lines: list[str], pattern: str, process: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next((line for line in lines if re.search(pattern, line)), None)
        if found is not None:
            return found
        assert process.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in time:\n{''.join(lines)[-3000:]}")


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_merges_and_a_second_run_is_refused_meanwhile(tmp_path):
    recipe = write_recipe(tmp_path, max_steps=2000, logging_steps=1, save_steps=1000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tulu_lite", "train", str(recipe)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lines, r"step +2/2000", process)
        # One run per output: a second one is refused at once, in one line, while the first keeps training.
        second = run_cli(["train", str(recipe)], cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"another tulu-lite run (pid {process.pid})" in errors[0], second.stderr
        assert "Traceback" not in second.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130, "".join(lines)[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert "Traceback" not in output, output[-3000:]
    resume = [line for line in output.splitlines() if "continue with:" in line]
    assert len(resume) == 1, output[-3000:]
    match = re.search(r"stopped at step (\d+)/2000; checkpoint saved in (\S+); continue with: tulu-lite train "
                      r"\S*recipe.yaml --resume$", resume[0])
    assert match, resume[0]
    step, checkpoint = int(match.group(1)), match.group(2)
    assert step >= 2 and checkpoint == str(tmp_path / "out.checkpoints" / f"checkpoint-{step}")
    assert ckpt.incomplete_reason(tmp_path / "out.checkpoints" / f"checkpoint-{step}") is None
    assert not (tmp_path / "out").exists()  # the run did not finish: no output that looks finished

    merged = run_cli(["merge", checkpoint, "-o", str(tmp_path / "merged")], cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    card = (tmp_path / "merged" / "README.md").read_text()
    assert f"# out, checkpoint at step {step} of 2000 (merged)" in card
    assert (tmp_path / "merged" / "config.json").is_file()


@pytest.mark.slow
def test_sigterm_between_checkpoints_saves_one_and_resume_gives_the_uninterrupted_adapter(tmp_path):
    """Preemption (SLURM, `docker stop`, Kubernetes) sends SIGTERM: the step finishes, a checkpoint is saved, the
    command exits 143 with the resume command, and `--resume` ends where an uninterrupted run ends."""
    import torch
    from safetensors.torch import load_file

    common = {"max_steps": 8, "save_steps": 4, "logging_steps": 1, "learning_rate": 1e-3}
    straight_dir, stopped_dir = tmp_path / "straight", tmp_path / "stopped"
    straight_dir.mkdir()
    stopped_dir.mkdir()
    straight = run_cli(["train", str(write_recipe(straight_dir, **common)), "--set", "lora.dropout=0.1"],
                       cwd=straight_dir, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    recipe = write_recipe(stopped_dir, **common)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tulu_lite", "train", str(recipe), "--set", "lora.dropout=0.1"],
                               cwd=stopped_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lines, r"step +5/8", process, timeout=600)  # past the checkpoint at step 4, before the one at 8
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=300) == 143, "".join(lines)[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert "Traceback" not in output and "SIGTERM: stopping after this optimizer step" in output, output[-3000:]
    match = re.search(r"stopped at step (\d+)/8; checkpoint saved in \S+; continue with: ", output)
    assert match and 5 <= int(match.group(1)) < 8, output[-3000:]
    assert ckpt.incomplete_reason(stopped_dir / "out.checkpoints" / f"checkpoint-{match.group(1)}") is None
    assert not (stopped_dir / "out").exists()

    resumed = run_cli(["train", str(recipe), "--set", "lora.dropout=0.1", "--resume"], cwd=stopped_dir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_file(straight_dir / "out" / "adapter_model.safetensors")
    got = load_file(stopped_dir / "out" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)


def test_sigterm_and_sighup_ask_to_stop_like_ctrl_c():
    for number in (signal.SIGTERM, signal.SIGHUP):
        stop = StopOnInterrupt()
        before = signal.getsignal(number)
        with stop.installed():
            os.kill(os.getpid(), number)
            time.sleep(0.01)
            assert stop.requested and stop.signal_number == number
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), number)
                time.sleep(1)
        assert signal.getsignal(number) is before
