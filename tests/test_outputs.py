"""Atomic outputs honour the umask, clean up after dead writers and interrupted ones, refuse unwritable targets
early, follow symlinks and never replace a FIFO or a device."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cli_cases import (
    TEMPORARY,
    BadInput,
    Interrupted,
    check_bad_input,
    check_interrupted,
    run_cli,
)

from tulu_lite.errors import TuluError
from tulu_lite.outputs import (
    atomic_dir,
    atomic_file,
    ensure_writable,
    interrupted_outputs,
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


@pytest.mark.parametrize("made", [".probe-", ".partial-"])
def test_a_signal_right_after_a_temporary_is_made_still_removes_it(tmp_path, monkeypatch, made):
    """Ctrl-C (or SIGTERM through tulu_lite.signals) between creating a temporary (or the writability probe) and
    the code that removes it would leave it behind: signals are held back until it is taken care of."""
    import tulu_lite.outputs as outputs

    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def interrupted(real):
        def make(*args, **kwargs):
            path = real(*args, **kwargs)
            if made in kwargs["prefix"]:
                os.kill(os.getpid(), signal.SIGINT)  # arrives before the caller has even seen the name
            return path
        return make

    monkeypatch.setattr(outputs.tempfile, "mkstemp", interrupted(real_mkstemp))
    monkeypatch.setattr(outputs.tempfile, "mkdtemp", interrupted(real_mkdtemp))
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "a.jsonl") as handle:
        handle.write("never")
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w").write_text("never")
    assert list(tmp_path.iterdir()) == []
    if made == ".partial-":  # (interrupted at the probe, the writing had not started)
        assert interrupted_outputs()[1][-2:] == [tmp_path / "a.jsonl", tmp_path / "model"]


# ---- one rule for every output path: links followed, special files refused --------------------------------------


def _char_device(path: Path) -> Path:
    """A character device at `path` (a copy of /dev/null's device number; mknod needs root), else skip."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"can't create a character device here ({exc})")
    return path


def test_a_link_to_a_file_stays_a_link_and_its_target_is_replaced_beside_it(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "data.jsonl").write_text("old\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "data.jsonl").symlink_to(tmp_path / "store" / "data.jsonl")
    with atomic_file(tmp_path / "work" / "data.jsonl") as handle:
        handle.write("new\n")
        assert [p.name for p in (tmp_path / "store").iterdir() if ".partial-" in p.name]  # beside the target
        assert not [p for p in (tmp_path / "work").iterdir() if ".partial-" in p.name]
    assert (tmp_path / "work" / "data.jsonl").is_symlink()
    assert (tmp_path / "store" / "data.jsonl").read_text() == "new\n"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["data.jsonl"]


def test_a_link_to_a_directory_stays_a_link_and_leaves_no_stray_backup(tmp_path):
    (tmp_path / "disk" / "model").mkdir(parents=True)
    (tmp_path / "disk" / "model" / "old").write_text("old")
    (tmp_path / "model").symlink_to(tmp_path / "disk" / "model")
    with atomic_dir(tmp_path / "model", force=True) as tmp:
        assert tmp.parent == tmp_path / "disk"
        (tmp / "new").write_text("new")
    assert (tmp_path / "model").is_symlink()
    assert sorted(p.name for p in (tmp_path / "disk" / "model").iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "model"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["model"]


def test_a_dangling_link_is_written_where_it_points(tmp_path):
    (tmp_path / "out.json").symlink_to(tmp_path / "real.json")
    with atomic_file(tmp_path / "out.json") as handle:
        handle.write("{}")
    assert (tmp_path / "out.json").is_symlink() and (tmp_path / "real.json").read_text() == "{}"


@pytest.mark.parametrize("kind", ["fifo", "device", "link to a fifo", "socket"])
def test_special_files_are_refused_never_replaced(tmp_path, kind):
    import socket

    target = tmp_path / "out"
    if kind == "device":
        _char_device(target)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    else:
        os.mkfifo(tmp_path / "fifo" if kind.startswith("link") else target)
        if kind.startswith("link"):
            target.symlink_to(tmp_path / "fifo")
    expect = {"device": "character device", "socket": "socket"}.get(kind, r"FIFO \(named pipe\)")
    for write in (lambda: atomic_file(target), lambda: atomic_dir(target, force=True)):
        with pytest.raises(TuluError, match=rf"out: is a {expect}, not a regular file or directory"), write():
            pass
    with pytest.raises(TuluError, match=rf"--json .*out: is a {expect}"):
        ensure_writable(target, "--json")
    real = (tmp_path / "fifo") if kind.startswith("link") else target
    assert not stat.S_ISREG(real.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"out", real.name})


def test_a_directory_where_a_file_is_expected_names_the_users_path(tmp_path):
    (tmp_path / "plots").mkdir()
    with pytest.raises(TuluError, match=r"^\S*plots: is a directory \(expected a file path\)$"), \
            atomic_file(tmp_path / "plots", "wb"):
        pass
    with pytest.raises(TuluError, match=r"^--plot \S*plots: is a directory \(expected a file path\)$"):
        ensure_writable(tmp_path / "plots", "--plot", expect="file")


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_owner_only_files_inside_an_output_directory_get_the_umask(tmp_path, mask, file_mode, dir_mode):
    # safetensors writes its files 0600 whatever the umask; the finished output follows the umask like the rest.
    import torch
    from safetensors.torch import save_file

    old = os.umask(mask)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, tmp / "model.safetensors")
            (tmp / "sub").mkdir(mode=0o700)
            fd = os.open(tmp / "sub" / "private.bin", os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            (tmp / "run.sh").chmod(0o700)
    finally:
        os.umask(old)
    model = tmp_path / "model"
    assert (model / "model.safetensors").stat().st_mode & 0o777 == file_mode
    assert (model / "sub" / "private.bin").stat().st_mode & 0o777 == file_mode
    assert (model / "sub").stat().st_mode & 0o777 == dir_mode
    assert model.stat().st_mode & 0o777 == dir_mode
    assert (model / "run.sh").stat().st_mode & 0o777 == dir_mode  # an executable stays executable


# ---- the same rule through the data commands (merge, train, eval: tests/test_bad_input.py) ---------------------

GOOD_LINE = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})


def _data_inputs(tmp: Path) -> None:
    shutil.copyfile(DOLLY, tmp / "dolly.jsonl")
    (tmp / "data.jsonl").write_text(GOOD_LINE + "\n")
    (tmp / "mix.yaml").write_text("seed: 1\nsources:\n  - {path: data.jsonl}\n")


def _special(kind: str, name: str):
    def setup(tmp: Path) -> None:
        _data_inputs(tmp)
        if kind == "fifo":
            os.mkfifo(tmp / name)
        elif kind == "device":
            _char_device(tmp / name)
        else:
            (tmp / name).mkdir()
    return setup


SPECIAL_CASES = [
    BadInput("convert -o FIFO --force", ["data", "convert", "dolly", "dolly.jsonl", "-o", "out.jsonl", "--force"],
             r"out\.jsonl: is a FIFO \(named pipe\), not a regular file or directory", _special("fifo", "out.jsonl")),
    BadInput("convert -o DEVICE --force", ["data", "convert", "dolly", "dolly.jsonl", "-o", "dev", "--force"],
             r"dev: is a character device", _special("device", "dev")),
    BadInput("mix -o FIFO --force", ["data", "mix", "mix.yaml", "-o", "out.jsonl", "--force"],
             r"out\.jsonl: is a FIFO", _special("fifo", "out.jsonl")),
    BadInput("stats --json FIFO", ["data", "stats", "data.jsonl", "--json", "s.json"],
             r"--json s\.json: is a FIFO", _special("fifo", "s.json")),
    BadInput("stats --plot DEVICE", ["data", "stats", "data.jsonl", "--plot", "p.png"],
             r"--plot p\.png: is a character device", _special("device", "p.png")),
    # stdout of the command is a pipe here; as root, /dev/stdout on a terminal is a device: both are refused
    BadInput("stats --json /dev/stdout", ["data", "stats", "data.jsonl", "--json", "/dev/stdout"],
             r"--json /dev/stdout: is a (FIFO|character device)", _data_inputs),
    # the user's path in the message, not the name of a temporary
    BadInput("stats --json DIR", ["data", "stats", "data.jsonl", "--json", "results"],
             r"^error: --json results: is a directory \(expected a file path\)$", _special("dir", "results")),
    BadInput("stats --plot DIR", ["data", "stats", "data.jsonl", "--plot", "results"],
             r"^error: --plot results: is a directory \(expected a file path\)$", _special("dir", "results")),
    BadInput("convert -o DIR", ["data", "convert", "dolly", "dolly.jsonl", "-o", "results", "--force"],
             r"^error: results: is a directory \(expected a file path\)$", _special("dir", "results")),
]


@pytest.mark.parametrize("case", SPECIAL_CASES, ids=str)
def test_special_outputs_are_refused(case, tmp_path):
    check_bad_input(case, tmp_path)


def _linked(tmp: Path, name: str, *, directory: bool = False) -> Path:
    """tmp/NAME, a symlink into tmp/store/ (holding an old file or folder); returns the link's target."""
    store = tmp / "store"
    store.mkdir(exist_ok=True)
    target = store / f"real-{name}"
    if directory:
        target.mkdir()
        (target / "old.txt").write_text("old")
    else:
        target.write_text("old\n")
    (tmp / name).symlink_to(target)
    return target


def test_data_commands_write_through_links_and_leave_them_links(tmp_path):
    _data_inputs(tmp_path)
    converted, mixed = _linked(tmp_path, "c.jsonl"), _linked(tmp_path, "m.jsonl")
    stats, plot = _linked(tmp_path, "s.json"), _linked(tmp_path, "p.png")
    for args in (["data", "convert", "dolly", "dolly.jsonl", "-o", "c.jsonl", "--force"],
                 ["data", "mix", "mix.yaml", "-o", "m.jsonl", "--force"],
                 ["data", "stats", "data.jsonl", "--json", "s.json", "--plot", "p.png"]):
        done = run_cli(args, tmp_path)
        assert done.returncode == 0, done.stderr
    for link, target in (("c.jsonl", converted), ("m.jsonl", mixed), ("s.json", stats), ("p.png", plot)):
        assert (tmp_path / link).is_symlink() and os.path.realpath(tmp_path / link) == str(target), link
    assert converted.read_text().count("\n") == len(DOLLY.read_text().splitlines())
    assert mixed.read_text() == GOOD_LINE + "\n"
    assert json.loads(stats.read_text())["files"][0]["instances"] == 1
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in tmp_path.rglob("*") if TEMPORARY.search(p.name)]


def test_eval_writes_through_a_linked_output_folder(tmp_path):
    (tmp_path / "preds.jsonl").write_text(json.dumps(GSM_PREDICTION) + "\n")
    results = _linked(tmp_path, "res", directory=True)
    done = run_cli(["eval", "--predictions", "preds.jsonl", "--tasks", "gsm", "-o", "res"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "res").is_symlink() and (results / "gsm" / "metrics.json").is_file()
    gsm = _linked(tmp_path, "gsm-link", directory=True)  # a task folder that is itself a link
    (tmp_path / "res2").mkdir()
    (tmp_path / "res2" / "gsm").symlink_to(gsm)
    done = run_cli(["eval", "--predictions", "preds.jsonl", "--tasks", "gsm", "-o", "res2", "--force"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "res2" / "gsm").is_symlink() and (gsm / "metrics.json").is_file()
    assert not [p for p in tmp_path.rglob("*") if TEMPORARY.search(p.name)]


def test_eval_refuses_a_task_folder_that_is_a_fifo(tmp_path):
    def setup(tmp: Path) -> None:
        (tmp / "preds.jsonl").write_text(json.dumps(GSM_PREDICTION) + "\n")
        (tmp / "res").mkdir()
        os.mkfifo(tmp / "res" / "gsm")

    check_bad_input(BadInput("eval: task folder is a FIFO", ["eval", "--predictions", "preds.jsonl", "--tasks",
                                                              "gsm", "-o", "res", "--force"],
                             r"res/gsm: is a FIFO", setup), tmp_path)


# ---- interrupted while writing: Ctrl-C, SIGTERM, SIGHUP ---------------------------------------------------------

INTERRUPT_CASES = [
    Interrupted("convert: SIGTERM", ["data", "convert", "dolly", "dolly.jsonl", "-o", "out/c.jsonl"], "c.jsonl",
                signal.SIGTERM, r"^interrupted \(SIGTERM\): tulu-lite data convert stopped while writing out/c\.jsonl"
                r", which was not written \(nothing half-written is left\)$", _data_inputs),
    Interrupted("convert: SIGHUP", ["data", "convert", "dolly", "dolly.jsonl", "-o", "c.jsonl"], "c.jsonl",
                signal.SIGHUP, r"^interrupted \(SIGHUP\): tulu-lite data convert stopped while writing c\.jsonl",
                _data_inputs),
    Interrupted("convert: Ctrl-C", ["data", "convert", "dolly", "dolly.jsonl", "-o", "c.jsonl"], "c.jsonl",
                signal.SIGINT, r"^interrupted \(Ctrl-C\): tulu-lite data convert stopped while writing c\.jsonl",
                _data_inputs),
    Interrupted("convert --force over an old output: SIGTERM",
                ["data", "convert", "dolly", "dolly.jsonl", "-o", "c.jsonl", "--force"], "c.jsonl", signal.SIGTERM,
                r"stopped while writing c\.jsonl",
                lambda tmp: (_data_inputs(tmp), (tmp / "c.jsonl").write_text("old"))),
    Interrupted("mix: SIGTERM", ["data", "mix", "mix.yaml", "-o", "m.jsonl"], "m.jsonl", signal.SIGTERM,
                r"^interrupted \(SIGTERM\): tulu-lite data mix stopped while writing m\.jsonl", _data_inputs),
    Interrupted("mix: Ctrl-C while writing the meta file", ["data", "mix", "mix.yaml", "-o", "m.jsonl"],
                "m.meta.json", signal.SIGINT, r"stopped while writing m\.meta\.json, which was not written "
                r"\(nothing half-written is left\); it had written m\.jsonl$", _data_inputs, allow_new=("m.jsonl",)),
    Interrupted("stats --json: SIGTERM", ["data", "stats", "data.jsonl", "--json", "s.json"], "s.json",
                signal.SIGTERM, r"tulu-lite data stats stopped while writing s\.json", _data_inputs),
    Interrupted("eval: SIGTERM", ["eval", "--predictions", "preds.jsonl", "--tasks", "gsm", "-o", "res"], "gsm",
                signal.SIGTERM, r"^interrupted \(SIGTERM\): tulu-lite eval stopped while writing \S*res/gsm,",
                lambda tmp: (tmp / "preds.jsonl").write_text(json.dumps(GSM_PREDICTION) + "\n"), allow_new=("res",)),
]


@pytest.mark.parametrize("case", INTERRUPT_CASES, ids=str)
def test_an_interrupted_command_leaves_nothing_half_written(case, tmp_path):
    check_interrupted(case, tmp_path)
