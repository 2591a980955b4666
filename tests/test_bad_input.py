"""Bad input for every command, run as a user would (a subprocess): one error line, exit 2, nothing lost or left.

Each row is a `cli_cases.BadInput`: YAML that would exhaust memory or the stack, ``--set`` mistakes, model and
adapter directories that are not ones or are truncated, merge arguments, and outputs that cannot be written (under
a path that is a file, in a read-only directory, on a full disk) for every command that writes. `check_bad_input`
asserts the promise: exit code 2, exactly one ``error:`` line matching the row, no traceback, every file that
existed before byte-identical, no temporary left behind.

Read-only and full file systems are real ones, not permission bits (root ignores those): a read-only bind mount or
a full tmpfs inside ``unshare --user --mount``, where the command runs as the user it is. Where that is not possible
a non-root user gets a chmod'ed directory and root skips with the reason. A full disk is not imitated with
RLIMIT_FSIZE: that gives EFBIG ("file too large") and a SIGXFSZ, not the ENOSPC a full disk gives, so without
namespaces those rows skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cli_cases
import pytest
from cli_cases import BadInput, Interrupted, check_bad_input, check_interrupted

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tulu_lite" / "assets" / "demo" / "train.jsonl"
DOLLY = REPO / "tests" / "fixtures" / "raw" / "dolly" / "databricks-dolly-15k.jsonl"
EVAL_DATA = REPO / "tests" / "fixtures" / "eval"

# Built once per module by the `assets` fixture: a tiny base model, a LoRA adapter on it (recipe.yaml and a base
# fingerprint as `tulu-lite train` writes them) and the tiny-llama cache. Setups copy what they change into tmp.
ASSETS: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def assets(tmp_path_factory, llama_tokenizer):
    from tulu_lite.model.files import base_fingerprint
    from tulu_lite.model.loading import add_lora
    from tulu_lite.model.tiny import build_tiny_llama
    from tulu_lite.recipe import LoraSettings, load_recipe, save_recipe

    root = tmp_path_factory.mktemp("bad-input-assets")
    base = root / "base"
    model = build_tiny_llama(llama_tokenizer, hidden_size=16, num_layers=1)
    model.save_pretrained(base)
    llama_tokenizer.save_pretrained(base)
    adapter = root / "adapter"
    add_lora(model, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps({"model": {"name_or_path": str(base), "dtype": "float32"},
                                  "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                                  "data": {"train_files": [str(DEMO)]}, "output_dir": str(adapter)}))
    save_recipe(load_recipe(recipe), adapter / "recipe.yaml")
    (adapter / "base_model.json").write_text(json.dumps(
        {"name_or_path": str(base), "loaded_from": str(base), "fingerprint": base_fingerprint(base)}))
    other = root / "other-base"  # same architecture, other weights
    build_tiny_llama(llama_tokenizer, hidden_size=16, num_layers=1, seed=1).save_pretrained(other)
    llama_tokenizer.save_pretrained(other)
    wider = root / "wider-base"  # another architecture: the adapter does not fit
    build_tiny_llama(llama_tokenizer, hidden_size=32, num_layers=1).save_pretrained(wider)
    llama_tokenizer.save_pretrained(wider)
    ASSETS.update(base=base, adapter=adapter, other=other, wider=wider, cache=root / "cache")
    yield


ENV = {"TULU_LITE_CACHE": "{cache}"}  # the tiny-llama cache stays out of tmp (filled in by _env)


# ---- setups ---------------------------------------------------------------------------------------------------


def _base(tmp: Path, name: str = "base") -> Path:
    return Path(shutil.copytree(ASSETS["base"], tmp / name))


def _adapter(tmp: Path, base: Path | None = None) -> Path:
    """A copy of the adapter in tmp whose recipe and base record point at `base` (a copy of the base in tmp)."""
    base = base or _base(tmp)
    adapter = Path(shutil.copytree(ASSETS["adapter"], tmp / "adapter"))
    recipe = (adapter / "recipe.yaml").read_text().replace(str(ASSETS["base"]), str(base))
    (adapter / "recipe.yaml").write_text(recipe)
    record = json.loads((adapter / "base_model.json").read_text())
    record.update(name_or_path=str(base), loaded_from=str(base))
    (adapter / "base_model.json").write_text(json.dumps(record))
    return adapter


def _truncate(file: Path, keep: int | None = None) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: keep if keep is not None else len(data) // 2])


def _recipe(tmp: Path, name_or_path: str = "tiny-llama", output_dir: str = "out", extra: str = "") -> None:
    data = tmp / "data.jsonl"
    if not data.exists():
        data.write_text("".join(DEMO.read_text(encoding="utf-8").splitlines(keepends=True)[:8]), encoding="utf-8")
    (tmp / "recipe.yaml").write_text(f"""\
model:
  name_or_path: {name_or_path}
lora: {{r: 2, alpha: 4, target_modules: [q_proj]}}
data:
  train_files: [data.jsonl]
  max_seq_length: 64
training:
  epochs: 2
  max_steps: 1
  per_device_batch_size: 2
  logging_steps: 1
output_dir: {output_dir}
{extra}""")


def _alias_bomb(key: str) -> str:
    lines = [f'{key}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{key}{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _inputs(tmp: Path) -> None:
    """What the data commands read: a conversation file, a mixture of it, a raw dolly release."""
    _recipe(tmp)  # writes data.jsonl
    (tmp / "mix.yaml").write_text("seed: 1\nsources:\n  - {path: data.jsonl}\n")
    shutil.copyfile(DOLLY, tmp / "dolly.jsonl")


def _model_dir(kind: str):
    """A setup writing ``tmp/model``: a base broken in one way."""

    def setup(tmp: Path) -> None:
        _recipe(tmp, name_or_path="model")
        if kind == "not-a-model":
            (tmp / "model").mkdir()
            (tmp / "model" / "notes.txt").write_text("not a model")
            return
        if kind == "adapter":
            shutil.copytree(ASSETS["adapter"], tmp / "model")
            return
        model = _base(tmp, "model")
        if kind == "truncated":
            _truncate(model / "model.safetensors")
        elif kind == "bad-config":
            (model / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": 16,,\n')
        elif kind == "bad-tokenizer":
            _truncate(model / "tokenizer.json", keep=1000)
        elif kind == "not-safetensors":
            (model / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip file, not safetensors")

    return setup


# ---- YAML and --set ---------------------------------------------------------------------------------------------

YAML_CASES = [
    BadInput("recipe alias bomb", ["train", "bomb.yaml"], r"bomb\.yaml:\d+: YAML aliases expand .* alias bomb",
             setup=lambda tmp: (tmp / "bomb.yaml").write_text(_alias_bomb(""))),
    BadInput("plan alias bomb", ["plan", "bomb.yaml"], r"bomb\.yaml:\d+: YAML aliases expand",
             setup=lambda tmp: (tmp / "bomb.yaml").write_text("model:\n  name_or_path: tiny-llama\n"
                                                            "x:\n" + _alias_bomb("  "))),
    BadInput("mixture alias bomb", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"mix\.yaml:\d+: YAML aliases expand .* alias bomb",
             setup=lambda tmp: (tmp / "mix.yaml").write_text("seed: 1\nsources: []\n" + _alias_bomb(""))),
    BadInput("recursive alias", ["train", "loop.yaml"], r"loop\.yaml:2: a YAML alias refers to the anchor",
             setup=lambda tmp: (tmp / "loop.yaml").write_text("model: {name_or_path: tiny-llama}\nlora: &l {r: *l}\n")),
    BadInput("nesting too deep", ["train", "deep.yaml"], r"deep\.yaml:\d+: not valid YAML \(nested too deeply\)",
             setup=lambda tmp: (tmp / "deep.yaml").write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")),
    BadInput("--set alias bomb", ["train", "recipe.yaml", "--set",
                                  "lora.target_modules=[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],"
                                  " &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c],"
                                  " &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"],
             r"^error: --set lora\.target_modules: YAML aliases expand", setup=_recipe),
    BadInput("--set blames --set, not the file's line", ["train", "recipe.yaml", "--set", "training.epochs=lots"],
             r"^error: --set training\.epochs: input should be a valid number", setup=_recipe),
    BadInput("--set on a key the file lacks", ["train", "recipe.yaml", "--set", "training.seed=x"],
             r"^error: --set training\.seed: input should be a valid integer", setup=_recipe),
]

# ---- model and adapter directories ----------------------------------------------------------------------------

MODEL_CASES = [
    BadInput("train: base not a model dir", ["train", "recipe.yaml"],
             r"model\.name_or_path: .*/model: not a model directory \(no config\.json\)",
             setup=_model_dir("not-a-model")),
    BadInput("train: truncated base weights", ["train", "recipe.yaml"],
             r"model/model\.safetensors: truncated: [\d,]+ bytes, its header describes [\d,]+",
             setup=_model_dir("truncated")),
    BadInput("train: corrupt config.json", ["train", "recipe.yaml"], r"model/config\.json:2: not valid JSON",
             setup=_model_dir("bad-config")),
    BadInput("train: truncated tokenizer.json", ["train", "recipe.yaml"], r"model/tokenizer\.json:\d+: not valid JSON",
             setup=_model_dir("bad-tokenizer")),
    BadInput("train: missing local path", ["train", "recipe.yaml"],
             r"^(?!.*(hub|[Hh]ugging)).*/models/missing/model: directory not found",
             setup=lambda tmp: _recipe(tmp, name_or_path="models/missing/model")),
    BadInput("train: output_dir is a file, even with --force", ["train", "recipe.yaml", "--force"],
             r"^error: output_dir: .*/out is a file, not a folder",
             setup=lambda tmp: (_recipe(tmp), (tmp / "out").write_text("a file the user keeps\n"))),
    BadInput("merge: -o is a file, even with --force", ["merge", "adapter", "-o", "merged", "--force"],
             r"^error: .*merged: is a file, not a folder",
             setup=lambda tmp: (_adapter(tmp), (tmp / "merged").write_text("a file the user keeps\n"))),
    BadInput("plan: missing local path", ["plan", "recipe.yaml", "--skip-data"],
             r"^(?!.*([Hh]ub|[Rr]epo)).*/models/missing/model: directory not found",
             setup=lambda tmp: _recipe(tmp, name_or_path="models/missing/model")),
    BadInput("eval: truncated weights", ["eval", "model", "--tasks", "gsm", "--data-dir", str(EVAL_DATA), "-o", "res"],
             r"model/model\.safetensors: truncated", setup=_model_dir("truncated")),
    BadInput("eval: corrupt config.json", ["eval", "model", "--tasks", "gsm", "--data-dir", str(EVAL_DATA),
                                           "-o", "res"], r"model/config\.json:2: not valid JSON",
             setup=_model_dir("bad-config")),
    BadInput("merge: corrupt adapter_config.json", ["merge", "adapter", "-o", "out"],
             r"adapter/adapter_config\.json:1: not valid JSON",
             setup=lambda tmp: (_adapter(tmp) / "adapter_config.json").write_text('{"r": 2, ')),
    BadInput("merge: base record not UTF-8", ["merge", "adapter", "-o", "out"],
             r"adapter/base_model\.json:1: not UTF-8 text \(invalid start byte at byte 3\)$",
             setup=lambda tmp: (_adapter(tmp) / "base_model.json").write_bytes(b'{"\xff": 1}')),
    BadInput("merge: truncated adapter weights", ["merge", "adapter", "-o", "out"],
             r"adapter/adapter_model\.safetensors: (truncated|not a complete safetensors file)",
             setup=lambda tmp: _truncate(_adapter(tmp) / "adapter_model.safetensors")),
    BadInput("merge: truncated base weights", ["merge", "adapter", "-o", "out"], r"base/model\.safetensors: truncated",
             setup=lambda tmp: _truncate(_adapter(tmp).parent / "base" / "model.safetensors")),
    BadInput("merge: base weights changed since training", ["merge", "adapter", "-o", "out"],
             r"the base .*/base changed since training \(model\.safetensors holds other weights\); pass --base",
             setup=lambda tmp: shutil.copyfile(ASSETS["other"] / "model.safetensors",
                                               _adapter(tmp).parent / "base" / "model.safetensors")),
    BadInput("merge: --base of another architecture", ["merge", "adapter", "-o", "out", "--base", str("{wider}")],
             r"adapter: the adapter does not fit this base", setup=lambda tmp: _adapter(tmp)),
    BadInput("merge: --max-shard-size before any work", ["merge", "no-such-adapter", "-o", "out",
                                                         "--max-shard-size", "lots"],
             r"--max-shard-size: expected a size such as 5GB, 500MB or 2GiB, got 'lots'"),
]

# ---- outputs that cannot be written ------------------------------------------------------------------------------

# command -> (args with OUT for the output, setup of its inputs)
WRITERS = {
    "data convert": (["data", "convert", "dolly", "dolly.jsonl", "-o", "OUT/converted.jsonl"], _inputs),
    "data mix": (["data", "mix", "mix.yaml", "-o", "OUT/mixed.jsonl"], _inputs),
    "data stats --json": (["data", "stats", "data.jsonl", "--json", "OUT/stats.json"], _inputs),
    "data stats --plot": (["data", "stats", "data.jsonl", "--plot", "OUT/lengths.png"], _inputs),
    "train": (["train", "recipe.yaml", "--set", "output_dir=OUT/run"], _recipe),
    "merge": (["merge", "adapter", "-o", "OUT/merged"], lambda tmp: _adapter(tmp)),
    "eval": (["eval", "model", "--tasks", "gsm", "--data-dir", str(EVAL_DATA), "-o", "OUT/results", "--limit", "1",
              "--max-new-tokens", "2"], lambda tmp: _base(tmp, "model")),
}
# Failures that belong to code another engineer owns; kept here (strict xfail) so the lead sees them close.
OWNED_ELSEWHERE: dict[str, str] = {}


def _output_cases(kind: str) -> list[BadInput]:
    expect = {"file": r"afile.*(is a file, not a directory|[Nn]ot a directory)",
              "read-only": r"(read-only file system|permission denied|can't write)",
              "full": r"full/\S*: .*no space left on device",
              # eval checks its output folder itself ("is a file"): refused all the same, nothing replaced
              "fifo": r"special/\S*: (is a FIFO \(named pipe\), not a regular file or directory|is a file, not a "
                      r"dir)"}[kind]
    cases = []
    for command, (args, setup) in WRITERS.items():
        out = {"file": "afile/sub", "read-only": "locked", "full": "full", "fifo": "special"}[kind]
        args = [a.replace("OUT", out) for a in args]
        if kind == "fifo" and command not in ("data stats --json", "data stats --plot"):
            args.append("--force")  # a FIFO is never replaced, --force or not

        def prepare(tmp, setup=setup, kind=kind, output=next(a for a in args if out in a)):
            setup(tmp)
            if kind == "file":
                (tmp / "afile").write_text("a file where a directory is expected")
            elif kind == "fifo":  # the output path itself is a FIFO
                (tmp / "special").mkdir()
                os.mkfifo(tmp / output.removeprefix("output_dir="))
            else:
                (tmp / ("locked" if kind == "read-only" else "full")).mkdir()

        cases.append(BadInput(f"{command}: output {kind}", args, expect, setup=prepare, allow_new=("listing.txt",),
                              timeout=300))
    return cases


def _env(case: BadInput) -> BadInput:
    case.env = {**{key: value.format(cache=ASSETS["cache"]) for key, value in ENV.items()}, **case.env}
    case.args = [arg.replace("{wider}", str(ASSETS.get("wider", ""))) for arg in case.args]
    return case


def _xfail_owned(cases: list[BadInput]) -> list:
    return [pytest.param(case, id=case.name, marks=pytest.mark.xfail(reason=OWNED_ELSEWHERE[case.name], strict=True))
            if case.name in OWNED_ELSEWHERE else pytest.param(case, id=case.name) for case in cases]


@pytest.mark.parametrize("case", _xfail_owned(YAML_CASES + MODEL_CASES + _output_cases("file") + _output_cases("fifo")))
def test_bad_input(case, tmp_path):
    check_bad_input(_env(case), tmp_path)


# ---- read-only and full file systems: real mounts in a user + mount namespace -----------------------------------


def _namespace_mounts_work() -> str | None:
    """None when `unshare --user --map-root-user --mount` can mount here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -r -m cannot mount: {done.stderr.strip()[:200]}"


NO_MOUNTS = _namespace_mounts_work()


def _run_with_mount(kind: str, directory: str):
    """A `cli_cases.run_cli` that first makes tmp/`directory` read-only or a full tmpfs, in a namespace."""
    mount = {
        # a read-only bind mount of the directory onto itself
        "read-only": 'mount --bind "$D" "$D" && mount -o remount,bind,ro "$D"',
        # a 64 KiB tmpfs, filled up before the command runs: creating a file works, writing data does not
        "full": 'mount -t tmpfs -o size=64k tmpfs "$D" && (cat /dev/zero > "$D/.filler" 2>/dev/null; true)',
        # 512 KiB free: enough to start a run, not enough for a checkpoint (its tokenizer alone is 1.8 MB)
        "small": 'mount -t tmpfs -o size=512k tmpfs "$D"',
    }[kind]

    def run_cli(args, cwd, env=None, timeout=180):
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200", **(env or {}),
                    "D": str(cwd / directory)}
        script = f'{mount} || exit 99; "$@"; rc=$?; ls -A "$D" | grep -v "^.filler$" > listing.txt; exit $rc'
        return subprocess.run(["unshare", "-r", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "tulu_lite",
                               *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    return run_cli


@pytest.mark.parametrize("case", _xfail_owned(_output_cases("read-only")))
def test_read_only_output(case, tmp_path, monkeypatch):
    if NO_MOUNTS is None:
        monkeypatch.setattr(cli_cases, "run_cli", _run_with_mount("read-only", "locked"))
    elif os.geteuid() != 0:  # without a namespace, permission bits do the job for a non-root user

        def prepare(tmp, setup=case.setup):
            setup(tmp)
            (tmp / "locked").chmod(0o555)

        case.setup = prepare
    else:
        pytest.skip(f"root ignores permission bits and {NO_MOUNTS}")
    check_bad_input(_env(case), tmp_path)
    listing = tmp_path / "listing.txt"
    assert not listing.exists() or listing.read_text() == "", "the read-only directory changed"


@pytest.mark.skipif(NO_MOUNTS is not None, reason=f"a full disk needs a tmpfs in a namespace: {NO_MOUNTS}")
@pytest.mark.parametrize("case", _xfail_owned(_output_cases("full")))
def test_full_disk(case, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_cases, "run_cli", _run_with_mount("full", "full"))
    check_bad_input(_env(case), tmp_path)
    assert (tmp_path / "listing.txt").read_text() == "", "something was left on the full disk"


@pytest.mark.skipif(NO_MOUNTS is not None, reason=f"a full disk needs a tmpfs in a namespace: {NO_MOUNTS}")
def test_a_disk_that_fills_up_during_training_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_cases, "run_cli", _run_with_mount("small", "small"))
    case = BadInput("train: disk fills up at the first checkpoint",
                    ["train", "recipe.yaml", "--set", "output_dir=small/run", "--set", "training.save_steps=1"],
                    r"small/run\.checkpoints/checkpoint-1: could not write a checkpoint \(.*(No space left|no space left)",
                    setup=lambda tmp: (_recipe(tmp), (tmp / "small").mkdir()), allow_new=("listing.txt",),
                    timeout=300)
    check_bad_input(_env(case), tmp_path)


# ---- what still works -------------------------------------------------------------------------------------------


def test_merge_into_an_explicit_base_says_what_differs(tmp_path):
    """The refused base of `merge: base weights changed since training` is accepted with --base, with a note."""
    adapter = _adapter(tmp_path)
    done = cli_cases.run_cli(["merge", str(adapter), "-o", str(tmp_path / "out"), "--base", str(ASSETS["other"]),
                              "--no-verify"], cwd=tmp_path, env={"COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert "is not the base this adapter was trained on (model.safetensors holds other weights)" in done.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


# ---- merge and train: links followed, umask kept, interruptions clean up ----------------------------------------


def _linked_folder(tmp: Path, name: str) -> Path:
    """tmp/NAME: a symlink to tmp/disk/NAME, a folder holding an old file; returns the folder."""
    folder = tmp / "disk" / name
    folder.mkdir(parents=True)
    (folder / "old.txt").write_text("an earlier output")
    (tmp / name).symlink_to(folder)
    return folder


def test_merge_and_train_write_into_a_linked_folder_and_keep_the_link(tmp_path):
    adapter = _adapter(tmp_path)
    merged = _linked_folder(tmp_path, "merged")
    done = cli_cases.run_cli(["merge", str(adapter), "-o", "merged", "--force", "--no-verify"], cwd=tmp_path,
                             env={"TULU_LITE_CACHE": str(ASSETS["cache"])})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "merged").is_symlink() and (merged / "model.safetensors").is_file()
    assert not (merged / "old.txt").exists()
    _recipe(tmp_path, output_dir="run")
    run = _linked_folder(tmp_path, "run")
    done = cli_cases.run_cli(["train", "recipe.yaml", "--force"], cwd=tmp_path,
                             env={"TULU_LITE_CACHE": str(ASSETS["cache"])}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run").is_symlink() and (run / "adapter_model.safetensors").is_file()
    assert not (run / "old.txt").exists()
    leftovers = [p for p in tmp_path.rglob("*") if cli_cases.TEMPORARY.search(p.name)]
    assert not leftovers, leftovers


def _with_umask(mask: int):
    def run_cli(args, cwd, env=None, timeout=300):
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "tulu_lite", *args], cwd=cwd, env=full_env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(mask))
    return run_cli


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask 022", "umask 002"])
def test_adapter_and_merged_weights_keep_the_umask(tmp_path, mask):
    """safetensors writes 0600 whatever the umask; the adapter and the merged model follow it like every output."""
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    run = _with_umask(mask)
    env = {"TULU_LITE_CACHE": str(ASSETS["cache"])}
    _recipe(tmp_path, output_dir="run")
    done = run(["train", "recipe.yaml"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    done = run(["merge", "run", "-o", "merged", "--no-verify"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    for folder in (tmp_path / "run", tmp_path / "merged"):
        assert folder.stat().st_mode & 0o777 == dir_mode, folder
        for path in folder.rglob("*"):
            expected = dir_mode if path.is_dir() else file_mode
            assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "merged" / "model.safetensors").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_an_interrupted_merge_leaves_no_folder_behind(tmp_path, signum):
    case = Interrupted(f"merge: {signal.Signals(signum).name}", ["merge", "adapter", "-o", "merged", "--no-verify"],
                       "merged", signum, r"tulu-lite merge stopped while writing merged, which was not written",
                       setup=lambda tmp: _adapter(tmp), env={"TULU_LITE_CACHE": str(ASSETS["cache"])})
    check_interrupted(case, tmp_path)
