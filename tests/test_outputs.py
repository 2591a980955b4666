"""Atomic outputs honour the umask, clean up after dead writers and refuse unwritable targets early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tulu_lite.errors import TuluError
from tulu_lite.outputs import (
    atomic_dir,
    atomic_file,
    ensure_writable,
    remove_stale_temporaries,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_outputs_get_the_permissions_of_the_umask_not_owner_only(tmp_path, umask_027):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("w")
    with atomic_file(tmp_path / "data.jsonl") as handle:
        handle.write("{}\n")
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "model" / "weights").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "data.jsonl").stat().st_mode & 0o777 == 0o640


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_next_writer_removes_temporaries_of_dead_writers_only(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f".model.partial-{dead}-x1", tmp_path / f".model.old-{dead}"]
    for path in stale:
        path.mkdir()
        (path / "big.safetensors").write_bytes(b"0" * 100)
    live = tmp_path / f".model.partial-{alive}-x2"
    live.mkdir()
    other = tmp_path / f".other.partial-{dead}-x3"
    other.mkdir()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("a")
    assert not any(path.exists() for path in stale)
    assert live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "model") == []


def test_a_failed_write_leaves_nothing_and_keeps_the_old_output(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old").write_text("keep")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model", force=True) as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (tmp_path / "model" / "old").read_text() == "keep"


def test_a_file_in_the_path_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(TuluError, match=r"afile is a file, not a directory"):
        ensure_writable(tmp_path / "afile" / "sub" / "out")
    with pytest.raises(TuluError, match=r"afile is a file, not a directory"), atomic_dir(tmp_path / "afile" / "o"):
        pass


# ---- the same through the commands ------------------------------------------------------------------------------

DOLLY = Path(__file__).parent / "fixtures" / "raw" / "dolly" / "databricks-dolly-15k.jsonl"
GSM_PREDICTION = {"protocol": "tulu-v1", "prompt": "Q", "answer": "10", "output": " 10\nmore"}


def run_with_umask(args: list[str], cwd: Path, mask: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tulu_lite", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(mask))


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o027, 0o640, 0o750), (0o002, 0o664, 0o775)])
def test_commands_write_files_and_folders_with_the_umasks_permissions(tmp_path, mask, file_mode, dir_mode):
    # A converted file (and its .meta.json) and an eval task folder, each as a colleague on the machine would see it.
    stale = tmp_path / "out" / f".dolly.jsonl.partial-{_dead_pid()}-abc"
    stale.parent.mkdir()
    stale.write_text("half a file from a killed run")
    done = run_with_umask(["data", "convert", "dolly", str(DOLLY), "-o", "out/dolly.jsonl"], tmp_path, mask)
    assert done.returncode == 0, done.stderr
    assert not stale.exists()  # the killed writer's temporary went with the next write of the same target
    for name in ("dolly.jsonl", "dolly.meta.json"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == file_mode, name
    (tmp_path / "preds.jsonl").write_text(json.dumps(GSM_PREDICTION) + "\n")
    done = run_with_umask(["eval", "--predictions", "preds.jsonl", "--tasks", "gsm", "-o", "res"], tmp_path, mask)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "res" / "gsm").stat().st_mode & 0o777 == dir_mode
    for name in ("metrics.json", "predictions.jsonl", "settings.json"):
        assert (tmp_path / "res" / "gsm" / name).stat().st_mode & 0o777 == file_mode, name


def test_a_tiny_base_build_killed_half_way_is_cleared_by_the_next_build(tmp_path, monkeypatch):
    from tulu_lite.model.tiny import tiny_llama_dir
    from tulu_lite.recipe import ModelSettings

    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    config = ModelSettings(name_or_path="tiny-llama", tiny={"hidden_size": 32})
    built = Path(tiny_llama_dir(config))
    shutil.rmtree(built)
    stale = tmp_path / f".{built.name}.partial-{_dead_pid()}-x1"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"0" * 1000)
    assert Path(tiny_llama_dir(config)) == built and (built / "config.json").is_file()
    assert not stale.exists()
