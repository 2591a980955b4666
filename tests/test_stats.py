"""Table-1 statistics with a real tokenizer: literal token counts, rounds, batching, JSON and PNG outputs."""

from __future__ import annotations

import json
import sys

import pytest

from tulu_lite.data.stats import count_rounds, file_stats, plot_lengths, stats_json

# LLaMA token counts (add_special_tokens=False), checked by hand against the bundled tokenizer:
#   "Hello world" -> [15043, 3186]; "Hi" -> [6324]; "What is 2+2?" -> 7 tokens; "2+2 equals 4." -> 8 tokens;
#   "You are terse." -> 5 tokens.
EXAMPLES = [
    {"dataset": "demo", "messages": [{"role": "user", "content": "Hello world"},
                                     {"role": "assistant", "content": "Hi"}]},
    {"dataset": "demo", "messages": [{"role": "system", "content": "You are terse."},
                                     {"role": "user", "content": "What is 2+2?"},
                                     {"role": "assistant", "content": "2+2 equals 4."},
                                     {"role": "user", "content": "  Hello world\n"},  # stripped before counting
                                     {"role": "assistant", "content": "Hi"}]},
    {"dataset": "other", "messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi"},
                                      {"role": "assistant", "content": "Hello world"}]},
]


@pytest.fixture
def demo_file(tmp_path):
    path = tmp_path / "demo.jsonl"
    path.write_text("".join(json.dumps(example) + "\n" for example in EXAMPLES))
    return path


def test_lengths_and_rounds_match_literal_token_counts(demo_file, llama_tokenizer):
    stats = file_stats(demo_file, llama_tokenizer)
    assert stats.instances == 3
    assert list(stats.prompt_lengths) == [2, 5 + 7 + 2, 1 + 1]
    assert list(stats.completion_lengths) == [1, 8 + 1, 2]
    assert list(stats.rounds) == [1, 2, 1]
    summary = stats_json([stats], "llama")["files"][0]
    assert summary["instances"] == 3 and summary["avg_rounds"] == pytest.approx(4 / 3, abs=1e-3)
    assert summary["avg_prompt_tokens"] == pytest.approx(18 / 3) and summary["avg_completion_tokens"] == 4.0
    assert summary["datasets"] == {"demo": 2, "other": 1}
    assert summary["completion_tokens"]["max"] == 9


def test_batched_tokenization_equals_one_message_at_a_time(tmp_path, llama_tokenizer):
    path = tmp_path / "many.jsonl"
    with path.open("w") as handle:
        for i in range(300):
            turns = [{"role": "user" if t % 2 == 0 else "assistant", "content": f"Turn {t} of {i}: " + "ok " * (i % 13)}
                     for t in range(2 + 2 * (i % 3))]
            handle.write(json.dumps({"messages": turns}) + "\n")
    batched = file_stats(path, llama_tokenizer, batch_size=64)
    single = file_stats(path, llama_tokenizer, batch_size=1)
    assert batched.prompt_lengths == single.prompt_lengths and batched.completion_lengths == single.completion_lengths
    first = json.loads(path.read_text().splitlines()[5])["messages"]
    expected = sum(len(llama_tokenizer(m["content"].strip(), add_special_tokens=False)["input_ids"])
                   for m in first if m["role"] == "assistant")
    assert batched.completion_lengths[5] == expected


def test_count_rounds_counts_user_assistant_exchanges():
    assert count_rounds(EXAMPLES[1]["messages"]) == 2
    assert count_rounds([{"role": "assistant", "content": ""}, {"role": "user", "content": ""}]) == 0


def test_plot_is_a_png(demo_file, tmp_path, llama_tokenizer):
    target = tmp_path / "plots" / "lengths.png"
    plot_lengths([file_stats(demo_file, llama_tokenizer)], target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000


def test_cli_stats_prints_table_and_writes_json_and_plot(demo_file, tmp_path, monkeypatch, capsys):
    from tulu_lite.cli import main

    json_out, plot = tmp_path / "stats.json", tmp_path / "stats.png"
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "stats", str(demo_file), str(demo_file),
                                      "--json", str(json_out), "--plot", str(plot)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "instances" in printed and "demo.jsonl" in printed and "4.0" in printed
    result = json.loads(json_out.read_text())
    assert result["tokenizer"] == "llama" and len(result["files"]) == 2
    assert result["files"][0]["avg_completion_tokens"] == 4.0 and "prompt_tokens" in result["definitions"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_stats_on_a_bad_file_is_one_red_line(tmp_path, monkeypatch, capsys):
    from tulu_lite.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "stats", str(bad)])
    with pytest.raises(SystemExit) as failed:
        main()
    assert failed.value.code == 2
    assert "bad.jsonl:1: no assistant message" in capsys.readouterr().err


def test_cli_stats_warns_about_an_empty_file_and_reads_parquet(tmp_path, monkeypatch, capsys):
    import datasets

    from tulu_lite.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    datasets.Dataset.from_list(EXAMPLES).to_parquet(tmp_path / "demo.parquet")
    monkeypatch.setattr(sys, "argv", ["tulu-lite", "data", "stats", str(empty), str(tmp_path / "demo.parquet")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    captured = capsys.readouterr()
    assert f"warning: {empty}: holds no conversation (the file is empty)" in " ".join(captured.err.split())
    assert "demo.parquet" in captured.out and "3" in captured.out
