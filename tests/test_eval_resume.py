"""Interrupted evaluations: a run killed while HumanEval's programs execute keeps its generations, a run stopped
with Ctrl-C keeps its finished tasks, and rerunning the same command continues instead of starting over."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tulu_lite.eval import gsm
from tulu_lite.eval.runner import evaluate
from tulu_lite.eval.settings import make_settings

DATA = Path(__file__).parent / "fixtures" / "eval"


def slow_problem(path: Path, seconds: float) -> Path:
    """A one-problem HumanEval file whose program takes `seconds` whatever the completion: long enough to kill the
    run while it executes. The completion (one token: `eval_command` allows no more) lands in a comment, so the
    candidate program is valid Python whatever the model says."""
    problem = {"task_id": "Slow/0", "prompt": f"import time\ntime.sleep({seconds})\n\n\ndef f():\n    pass\n# ",
               "entry_point": "f", "test": "\n\ndef check(candidate):\n    pass\n"}
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(problem) + "\n")
    return path


def eval_command(model: Path, out: Path, problems: Path, timeout: float) -> list[str]:
    return [sys.executable, "-m", "tulu_lite", "eval", str(model), "--tasks", "gsm,codex_humaneval", "--data-dir",
            str(DATA), "-o", str(out), "--limit", "1", "--max-new-tokens", "1", "--humaneval-samples", "1",
            "--humaneval-file", str(problems), "--humaneval-timeout", str(timeout)]


def wait_for(paths: list[Path], process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in paths):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached HumanEval's execution"
        time.sleep(0.02)


def test_sigkill_during_humaneval_execution_keeps_the_generations(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out, problems = tmp_path / "out", slow_problem(tmp_path / "slow.jsonl.gz", 6)
    (tmp_path / "tmp").mkdir()  # a killed run cannot remove its programs' temporary folder: keep it in here
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp_path / "tmp")}
    first = subprocess.Popen(eval_command(model, out, problems, 60), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    saved = out / ".codex_humaneval.generations.jsonl"
    try:
        wait_for([out / "gsm" / "metrics.json", saved, out / ".codex_humaneval.generations.json"], first)
        os.killpg(first.pid, signal.SIGKILL)  # the programs are running: nothing of HumanEval is scored yet
    finally:
        first.kill()
        first.communicate()
    assert not (out / "codex_humaneval").exists()
    generations = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [(g["task_id"], g["temperature"]) for g in generations] == [("Slow/0", 0.1), ("Slow/0", 0.8)]

    model.rename(tmp_path / "elsewhere")  # the rerun must not need the model: everything it scores was generated
    done = subprocess.run(eval_command(model, out, problems, 1), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"gsm: already finished in {out / 'gsm'} (same model and settings); skipped (--force runs it again)" \
        in done.stderr
    assert f"codex_humaneval: continuing from 2 generations saved by an interrupted run ({saved})" in done.stderr
    scored = [json.loads(line) for line in (out / "codex_humaneval" / "predictions.jsonl").read_text().splitlines()]
    assert [r["output"] for r in scored] == [g["output"] for g in generations]
    assert [r["result"] for r in scored] == ["timed out", "timed out"]
    assert not saved.exists() and not (out / ".codex_humaneval.generations.json").exists()


def test_ctrl_c_keeps_finished_tasks_and_a_rerun_skips_them(tmp_path, tiny_model_dir, monkeypatch, capsys):
    settings = make_settings(tasks=["gsm", "bbh"], output_dir=tmp_path / "out", model_dir=tiny_model_dir,
                             data_dir=DATA, limit=1, max_new_tokens=3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from tulu_lite.eval import bbh

    with monkeypatch.context() as patch:
        patch.setattr(bbh, "predict", interrupted)
        with pytest.raises(KeyboardInterrupt):
            evaluate(settings)
    assert (tmp_path / "out" / "gsm" / "metrics.json").is_file() and not (tmp_path / "out" / "bbh").exists()
    gsm_files = {p.name: p.read_bytes() for p in (tmp_path / "out" / "gsm").iterdir()}
    capsys.readouterr()

    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(gsm, "predict", lambda *a: calls.append(a) or [])
        results = evaluate(settings)
    assert calls == [] and [r.task for r in results] == ["gsm", "bbh"] and results[0].skipped
    assert f"gsm: already finished in {tmp_path / 'out' / 'gsm'}" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "gsm").iterdir()} == gsm_files
    assert (tmp_path / "out" / "bbh" / "metrics.json").is_file()

    forced = evaluate(settings.model_copy(update={"force": True, "tasks": ["gsm"]}))
    assert not forced[0].skipped and "already finished" not in capsys.readouterr().err


def test_new_weights_in_the_same_model_folder_are_evaluated_again(tmp_path, tiny_model_dir, llama_tokenizer):
    """A model re-merged or retrained into the same folder (`merge --force`) is another model: the results of the
    old weights are stale, and `eval` runs the task again instead of reporting them."""
    from tulu_lite.model.tiny import build_tiny_llama

    model, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(tiny_model_dir, model)
    command = [sys.executable, "-m", "tulu_lite", "eval", str(model), "--tasks", "gsm", "--data-dir", str(DATA),
               "-o", str(out), "--limit", "2", "--max-new-tokens", "3"]
    env = {**os.environ, "COLUMNS": "300"}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    recorded = json.loads((out / "gsm" / "settings.json").read_text())["model_weights"]
    assert recorded["files"].keys() == {"model.safetensors"}

    size = (model / "model.safetensors").stat().st_size
    build_tiny_llama(llama_tokenizer, seed=1).save_pretrained(model)  # other weights, same layout and size
    assert (model / "model.safetensors").stat().st_size == size
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" not in again.stderr
    assert f"gsm: {out / 'gsm'} holds results not made from the weights now in {model} (merged or trained again " \
           f"since?); running it again to replace them" in again.stderr
    assert json.loads((out / "gsm" / "settings.json").read_text())["model_weights"] not in (None, recorded)


def test_the_same_weights_touched_keep_their_results(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    settings = make_settings(tasks=["gsm"], output_dir=tmp_path / "out", model_dir=model, data_dir=DATA, limit=1,
                             max_new_tokens=2)
    assert not evaluate(settings)[0].skipped
    os.utime(model / "model.safetensors", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, or copied
    capsys.readouterr()
    assert evaluate(settings)[0].skipped and "already finished" in capsys.readouterr().err


def test_generations_of_other_weights_are_not_scored(tmp_path, tiny_model_dir, llama_tokenizer):
    from tulu_lite.eval import resume
    from tulu_lite.model.tiny import build_tiny_llama

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    settings = make_settings(tasks=["gsm"], output_dir=tmp_path / "out", model_dir=model, data_dir=DATA, limit=1,
                             max_new_tokens=2)
    records = [{"protocol": "tulu-v1", "answer": "1", "output": " 1"}]
    resume.save_generations(settings, "gsm", gsm, records, resume.model_weights(model))
    assert resume.saved_generations(settings, "gsm", gsm, resume.model_weights(model)) == records
    build_tiny_llama(llama_tokenizer, seed=1).save_pretrained(model)
    assert resume.saved_generations(settings, "gsm", gsm, resume.model_weights(model)) is None
    assert resume.saved_generations(settings, "gsm", gsm, None) == records  # the model gone: nothing contradicts
