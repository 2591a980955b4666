"""`tulu-lite inspect` on the bundled samples and on bad input."""

from __future__ import annotations

import subprocess
import sys

from tulu_lite.cli import SAMPLE_CONVERSATIONS
from tulu_lite.data.conversations import read_conversations
from tulu_lite.data.encode import encode
from tulu_lite.data.inspect import TRAINED_STYLE, inspect_file


def test_inspect_counts_and_highlights(llama_tokenizer):
    totals = inspect_file(SAMPLE_CONVERSATIONS, llama_tokenizer, "tulu", max_seq_length=2048, show=2)
    records = list(read_conversations(SAMPLE_CONVERSATIONS))
    encoded = [encode(r["messages"], llama_tokenizer) for r in records]
    assert totals.examples == len(records) and totals.dropped == 0
    assert totals.tokens == sum(len(e["input_ids"]) for e in encoded)
    assert totals.trained_tokens == sum(sum(x != -100 for x in e["labels"]) for e in encoded)
    first = totals.shown[0]
    trained_text = "".join(first.plain[span.start:span.end] for span in first.spans if span.style == TRAINED_STYLE)
    assert trained_text == "Canberra.</s>↵\n·Wellington.</s>"


def test_inspect_truncation_drops(llama_tokenizer):
    totals = inspect_file(SAMPLE_CONVERSATIONS, llama_tokenizer, "tulu", max_seq_length=12, show=0)
    assert totals.dropped == totals.examples == 8 and totals.tokens == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tulu_lite", *args], capture_output=True, text=True, timeout=120)


def test_cli_inspect_prints_table_and_clear_errors(tmp_path):
    ok = run_cli("inspect", "-n", "1")
    assert ok.returncode == 0, ok.stderr
    assert "trained tokens" in ok.stdout and "Canberra" in ok.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = run_cli("inspect", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}:1: no assistant message (nothing to train on)"
    assert "Traceback" not in result.stderr


def test_cli_inspect_warns_about_an_empty_file(tmp_path, monkeypatch, capsys):
    import pytest

    from tulu_lite.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "inspect", str(empty)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert f"warning: {empty}: holds no conversation" in " ".join(capsys.readouterr().err.split())
