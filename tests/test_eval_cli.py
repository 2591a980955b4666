"""`tulu-lite eval` (run, re-score) and `tulu-lite eval compare` through the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tulu_lite.cli import app, main
from tulu_lite.eval.compare import ModelRow, common_tasks, compare, compare_table

DATA = Path(__file__).parent / "fixtures" / "eval"
runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    result = runner.invoke(app, ["eval", str(tiny_model_dir), "--tasks", "gsm,mmlu,truthfulqa", "--data-dir", str(DATA),
                                 "-o", str(out), "--chat-format", "tulu", "--limit", "1", "--mmlu-shots", "0",
                                 "--max-new-tokens", "4", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_eval_runs_tasks_as_the_paper_did_by_default_and_prints_a_summary(evaluated, tiny_model_dir):
    out, output = evaluated
    assert "tulu-lite eval (protocol tulu-v1)" in output and "GSM EM" in output and "TruthfulQA" in output
    for task in ("gsm", "mmlu", "truthfulqa"):
        saved = json.loads((out / task / "settings.json").read_text())
        assert saved["settings"]["chat_format"] == "tulu" and saved["settings"]["protocol"] == "tulu-v1"
        assert saved["settings"]["model_dir"] == str(Path(tiny_model_dir).resolve())
    gsm = json.loads((out / "gsm" / "settings.json").read_text())["task_settings"]
    assert gsm["stop"] == ["\n"] and gsm["max_new_tokens"] == 4 and gsm["chat_format"] == "tulu"  # stops at "\n"
    mmlu = json.loads((out / "mmlu" / "settings.json").read_text())["task_settings"]
    assert mmlu["answer_start"] == "The answer is:" and mmlu["shots"] == [0]
    assert json.loads((out / "truthfulqa" / "settings.json").read_text())["task_settings"]["chat_format"] == "none"
    metrics = json.loads((out / "mmlu" / "metrics.json").read_text())
    assert list(metrics) == ["protocol", "0-shot", "open_instruct"] and list(metrics["open_instruct"]) == ["0-shot"]


def test_eval_help_shows_the_run_options():
    result = runner.invoke(app, ["eval", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--tasks", "--output-dir", "--protocol", "--limit", "--predictions", "--truthfulqa-judge",
                   "--toxigen-classifier", "--force", "eval compare"):
        assert option in result.output, option
    assert "Usage:" in result.output and " eval [OPTIONS]" in result.output


def test_a_rerun_skips_finished_tasks_unless_forced(evaluated, tiny_model_dir):
    out, _ = evaluated
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ["eval", str(tiny_model_dir), "--tasks", "gsm,mmlu,truthfulqa", "--data-dir", str(DATA), "-o", str(out),
            "--chat-format", "tulu", "--limit", "1", "--mmlu-shots", "0", "--max-new-tokens", "4", "--batch-size", "4"]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    for task in ("gsm", "mmlu", "truthfulqa"):
        assert f"{task}: already finished in {out / task} (same model and settings); skipped (--force runs it " \
               f"again)" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    different = runner.invoke(app, [*args[:-4], "--max-new-tokens", "5", "--batch-size", "4"], terminal_width=200)
    assert different.exit_code != 0 and "already exists and holds other results" in str(different.exception)


def test_predictions_are_rescored_without_a_model(evaluated, tmp_path):
    out, _ = evaluated
    result = runner.invoke(app, ["eval", "--predictions", str(out / "truthfulqa" / "predictions.jsonl"),
                                 "--tasks", "truthfulqa", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "truthfulqa" / "metrics.json").read_text()) \
        == json.loads((out / "truthfulqa" / "metrics.json").read_text())


def test_compare_prints_one_table_and_writes_a_bar_chart(evaluated, tmp_path, tiny_model_dir):
    out, _ = evaluated
    other = tmp_path / "other"
    (other / "gsm").mkdir(parents=True)
    (other / "gsm" / "metrics.json").write_text(json.dumps({"exact_match": 12.5, "n": 8}))
    (other / "gsm" / "settings.json").write_text(json.dumps({"settings": {"model_dir": "/models/llama-7b-tulu"}}))
    plot = tmp_path / "chart.png"
    result = runner.invoke(app, ["eval", "compare", str(out), str(other), "--plot", str(plot)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "llama-7b-tulu" in result.output and "12.5" in result.output
    assert Path(tiny_model_dir).name in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_result(folder: Path, task: str, metrics: dict, model: str) -> None:
    (folder / task).mkdir(parents=True, exist_ok=True)
    (folder / task / "metrics.json").write_text(json.dumps(metrics))
    (folder / task / "settings.json").write_text(json.dumps({"settings": {"model_dir": f"/m/{model}"}}))


def test_compare_reads_headlines_and_averages_common_benchmarks(tmp_path):
    write_result(tmp_path / "a", "mmlu", {"0-shot": {"accuracy": 40.0}, "5-shot": {"accuracy": 45.0}}, "model-a")
    write_result(tmp_path / "a", "gsm", {"exact_match": 20.0}, "model-a")
    write_result(tmp_path / "a", "toxigen", {"scored": True, "percent_toxic": 10.0}, "model-a")
    write_result(tmp_path / "a", "codex_humaneval", {"pass@1": 5.0, "pass@10": 15.0}, "model-a")
    write_result(tmp_path / "b", "mmlu", {"0-shot": {"accuracy": 50.0}}, "model-b")
    write_result(tmp_path / "b", "gsm", {"exact_match": 30.0}, "model-b")
    write_result(tmp_path / "b", "toxigen", {"scored": False, "reason": "no classifier"}, "model-b")
    rows = compare([tmp_path / "a", tmp_path / "b"])
    assert [(row.name, row.scores) for row in rows] == [
        ("model-a", {"mmlu": 40.0, "gsm": 20.0, "toxigen": 10.0, "codex_humaneval": 15.0}),
        ("model-b", {"mmlu": 50.0, "gsm": 30.0})]
    assert rows[0].protocols == {"tulu-lite"}  # results written before protocols existed are tulu-lite's
    assert common_tasks(rows) == ["mmlu", "gsm"]
    assert [row.average(common_tasks(rows)) for row in rows] == [30.0, 40.0]
    assert ModelRow("x", {"mmlu": 40.0, "toxigen": 10.0}).average(["mmlu", "toxigen"]) == 65.0  # 100 - % toxic
    table = compare_table(rows)
    assert [c.header for c in table.columns][:3] == ["Model", "MMLU\n0-shot", "GSM\n8-shot CoT"]
    assert list(table.columns[1].cells) == ["40.0", "50.0"] and list(table.columns[-1].cells) == ["30.0", "40.0"]
    assert "NOT comparable" not in table.caption


def test_compare_says_when_numbers_are_not_comparable(tmp_path):
    write_result(tmp_path / "a", "gsm", {"protocol": "tulu-v1", "exact_match": 20.0}, "model-a")
    write_result(tmp_path / "a", "truthfulqa", {"protocol": "tulu-v1", "mc2": 40.0, "truth_info": 30.0}, "model-a")
    write_result(tmp_path / "b", "gsm", {"protocol": "tulu-lite", "exact_match": 25.0}, "model-b")
    write_result(tmp_path / "b", "truthfulqa", {"protocol": "tulu-lite", "mc2": 45.0}, "model-b")
    rows = compare([tmp_path / "a", tmp_path / "b"])
    assert [row.scores["truthfulqa"] for row in rows] == [30.0, 45.0]
    table = compare_table(rows)
    assert "NOT comparable: the results come from different protocols (tulu-lite, tulu-v1)" in table.caption
    assert "NOT comparable: truthfulqa reports different metrics" in table.caption
    assert [c.header for c in table.columns][2] == "TruthfulQA\nMC2"
    judged = compare([tmp_path / "a"])
    assert [c.header for c in compare_table(judged).columns][2] == "TruthfulQA\n% true×info"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["tulu-lite", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_user_errors_are_one_red_line(monkeypatch, capsys, tmp_path, tiny_model_dir):
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--tasks", "gsm,mmlx", "-o", str(tmp_path))
    assert code == 2 and err.strip().splitlines() == [
        "error: --tasks: unknown task mmlx (expected some of: mmlu, gsm, bbh, tydiqa, codex_humaneval, truthfulqa, "
        "toxigen, alpaca_eval, gsm_direct, bbh_direct; or all: the paper's eight)"]
    code, err = run_main(monkeypatch, capsys, "eval", "compare", str(tmp_path))
    assert code == 2 and "no task results" in err and len(err.strip().splitlines()) == 1
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--predictions", "p.jsonl", "--tasks",
                         "gsm", "-o", str(tmp_path))
    assert code == 2 and "not both" in err
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--tasks", "gsm", "-o", str(tmp_path),
                         "--chat-format", "chatml", "--data-dir", str(DATA))
    assert code == 2 and "chat_format" in err and "'tulu', 'native' or 'none'" in err
