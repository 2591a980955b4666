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


def test_eval_runs_tasks_in_the_chat_format_and_prints_a_summary(evaluated, tiny_model_dir):
    out, output = evaluated
    assert "tulu-lite eval" in output and "GSM EM" in output and "TruthfulQA" in output
    for task in ("gsm", "mmlu", "truthfulqa"):
        saved = json.loads((out / task / "settings.json").read_text())
        assert saved["settings"]["chat_format"] == "tulu"
        assert saved["settings"]["model_dir"] == str(Path(tiny_model_dir).resolve())
    gsm = json.loads((out / "gsm" / "settings.json").read_text())["task_settings"]
    assert gsm["stop"] == [] and gsm["max_new_tokens"] == 4  # a chat model ends its own turn
    mmlu = json.loads((out / "mmlu" / "settings.json").read_text())["task_settings"]
    assert mmlu["answer_start"] == "The answer is:" and mmlu["shots"] == [0]
    assert list(json.loads((out / "mmlu" / "metrics.json").read_text())) == ["0-shot"]


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
    assert rows == [ModelRow("model-a", {"mmlu": 40.0, "gsm": 20.0, "toxigen": 10.0, "codex_humaneval": 15.0}),
                    ModelRow("model-b", {"mmlu": 50.0, "gsm": 30.0})]
    assert common_tasks(rows) == ["mmlu", "gsm"]
    assert [row.average(common_tasks(rows)) for row in rows] == [30.0, 40.0]
    assert ModelRow("x", {"mmlu": 40.0, "toxigen": 10.0}).average(["mmlu", "toxigen"]) == 65.0  # 100 - % toxic
    table = compare_table(rows)
    assert [c.header for c in table.columns][:3] == ["Model", "MMLU\n0-shot", "GSM\n8-shot CoT"]
    assert list(table.columns[1].cells) == ["40.0", "50.0"] and list(table.columns[-1].cells) == ["30.0", "40.0"]


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["tulu-lite", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_user_errors_are_one_red_line(monkeypatch, capsys, tmp_path, tiny_model_dir):
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--tasks", "gsm,mmlx", "-o", str(tmp_path))
    assert code == 2 and err.strip().splitlines() == [
        "error: --tasks: unknown task mmlx (expected some of: mmlu, gsm, bbh, tydiqa, codex_humaneval, truthfulqa, "
        "toxigen, alpaca_eval, or all)"]
    code, err = run_main(monkeypatch, capsys, "eval", "compare", str(tmp_path))
    assert code == 2 and "no task results" in err and len(err.strip().splitlines()) == 1
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--predictions", "p.jsonl", "--tasks",
                         "gsm", "-o", str(tmp_path))
    assert code == 2 and "not both" in err
    code, err = run_main(monkeypatch, capsys, "eval", str(tiny_model_dir), "--tasks", "gsm", "-o", str(tmp_path),
                         "--chat-format", "chatml", "--data-dir", str(DATA))
    assert code == 2 and "chat_format" in err and "'tulu', 'native' or 'none'" in err
