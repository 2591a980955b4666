"""Atomic outputs honour the umask, clean up after dead writers and refuse unwritable targets early."""

from __future__ import annotations

import os
import subprocess

import pytest

from tulu_lite.errors import TuluError
from tulu_lite.outputs import atomic_dir, atomic_file, ensure_writable, remove_stale_temporaries


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
