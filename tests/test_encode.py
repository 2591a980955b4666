"""Masking is exact: tulu-lite's one-pass encoder against the original prefix re-tokenization method."""

from __future__ import annotations

import json
import random

import pytest
from conftest import tokenizer_dir
from prefix_reference import prefix_reference

from tulu_lite import encode
from tulu_lite.data.chat_format import (
    TULU_CHAT_TEMPLATE,
    generation_prompt,
    render_tulu,
)
from tulu_lite.data.encode import IGNORE_INDEX, encode_dataset
from tulu_lite.errors import TuluError
from tulu_lite.tokenizer import load_tokenizer

PIECES = [
    "hello", "world", "The", "quick", "fox", "42", "3.14", "über", "naïve", "中文", "日本語", "🙂", "🚀🚀", "مرحبا",
    "  ", "\t", "\n", "\n\n", " \n ", "<|user|>", "<|assistant|>", "<|system|>", "</s>", "<s>", "<unk>",
    "<|eot_id|>", "```python\nprint(1)\n```", "a-b", "(x)", ":", "?", "!", "'", '"', "\\n", "▁",
]


def random_content(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return rng.choice(["", "   ", "\n\n", " \t\n"])  # empty after strip
    words = [rng.choice(PIECES) for _ in range(rng.randint(1, 25))]
    return "".join(w + rng.choice(["", " ", " ", "  ", "\n"]) for w in words)


def random_conversation(rng: random.Random) -> list[dict]:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": random_content(rng)})
    for _ in range(rng.randint(1, 8)):
        messages.append({"role": "user", "content": random_content(rng)})
        messages.append({"role": "assistant", "content": random_content(rng)})
    if rng.random() < 0.1:  # irregular orders the reference also handles
        rng.shuffle(messages)
    if rng.random() < 0.1:
        messages.append({"role": "user", "content": random_content(rng)})
    return messages


@pytest.mark.parametrize("name", ["llama", "mistral", "llama3"])
def test_tulu_matches_prefix_method_on_generated_conversations(name):
    tokenizer = load_tokenizer(tokenizer_dir(name))
    rng = random.Random(1234)
    checked = truncated = 0
    for _ in range(400):
        messages = random_conversation(rng)
        max_len = rng.choice([8, 16, 24, 48, 96, 2048])
        ours = encode(messages, tokenizer, "tulu", max_seq_length=max_len)
        ref = prefix_reference(messages, tokenizer, max_len)
        assert ours == ref, json.dumps({"messages": messages, "max_seq_length": max_len})
        checked += 1
        truncated += len(ours["input_ids"]) == max_len
    assert checked == 400 and truncated > 100  # the truncation path was really exercised


def test_tulu_mask_on_literal_tokens(llama_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": " Hello! "},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye"},
    ]
    out = encode(messages, llama_tokenizer)
    tokens = llama_tokenizer.convert_ids_to_tokens(out["input_ids"])
    trained = [t for t, label in zip(tokens, out["labels"]) if label != IGNORE_INDEX]
    header = ["<", "|", "ass", "istant", "|", ">", "<0x0A>"]
    assert tokens[:11] == ["<s>", "▁<", "|", "system", "|", ">", "<0x0A>", "Be", "▁brief", ".", "<0x0A>"]
    assert tokens[11:26] == ["<", "|", "user", "|", ">", "<0x0A>", "Hi", "<0x0A>"] + header
    assert all(label == IGNORE_INDEX for label in out["labels"][:26])
    # Trained: each answer, its eos, and the newline after a non-final eos (written "▁" + <0x0A> after </s>).
    assert trained == ["Hello", "!", "</s>", "▁", "<0x0A>", "By", "e", "</s>"]
    assert out["labels"][0] == IGNORE_INDEX  # BOS never trained when the conversation opens with a user
    assert [label for label in out["labels"] if label != IGNORE_INDEX] == llama_tokenizer.convert_tokens_to_ids(trained)


def test_tulu_truncation_drops_labels_past_the_end(llama_tokenizer):
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "answer"}]
    out = encode(messages, llama_tokenizer, max_seq_length=20)
    assert len(out["input_ids"]) == 20
    assert set(out["labels"]) == {IGNORE_INDEX}


def test_tulu_chat_template_renders_the_training_text(llama_tokenizer):
    rng = random.Random(7)
    tokenizer = load_tokenizer(tokenizer_dir("llama"))
    tokenizer.chat_template = TULU_CHAT_TEMPLATE
    for _ in range(100):
        messages = random_conversation(rng)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        assert text == tokenizer.bos_token + render_tulu(messages, tokenizer.eos_token)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        assert ids == encode(messages, tokenizer, max_seq_length=100_000)["input_ids"]
    prompt = [{"role": "user", "content": " What is 2+2? "}]
    assert tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) == (
        "<s>" + generation_prompt(prompt, tokenizer, "tulu")
    )
    assert generation_prompt(prompt, tokenizer, "tulu") == "<|user|>\nWhat is 2+2?\n<|assistant|>\n"


# ---- native chat templates ---------------------------------------------------------------------------------------


def trained_runs(out):
    """Maximal runs of trained token ids."""
    runs, current = [], []
    for token, label in zip(out["input_ids"], out["labels"]):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("name,end_of_turn", [("llama3", "<|eot_id|>"), ("qwen3", "<|im_end|>")])
def test_native_trains_exactly_assistant_content_and_end_of_turn(name, end_of_turn):
    tokenizer = load_tokenizer(tokenizer_dir(name))
    rng = random.Random(99)
    for _ in range(150):
        messages = [{"role": "system", "content": "You are terse."}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 5)):
            messages.append({"role": "user", "content": random_content(rng).replace("<|eot_id|>", "")})
            messages.append({"role": "assistant", "content": rng.choice(["", "Sure.", "x = 1\n\ny = 2", "Voilà 🙂 !"])})
        out = encode(messages, tokenizer, "native", max_seq_length=100_000)
        expected = []
        for m in messages:
            if m["role"] == "assistant":
                content = m["content"].strip() if name == "llama3" else m["content"]
                expected.append(content + end_of_turn)
        decoded = [tokenizer.decode(run) for run in trained_runs(out)]
        # Consecutive runs can only merge if a turn had nothing between them, which never happens here.
        assert decoded == expected, (messages, decoded)
        text = tokenizer.decode(out["input_ids"])
        assert text == tokenizer.apply_chat_template(messages, tokenize=False)


def test_native_qwen3_think_block_is_never_trained():
    tokenizer = load_tokenizer(tokenizer_dir("qwen3"))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    out = encode(messages, tokenizer, "native")
    text = tokenizer.decode(out["input_ids"])
    assert "<think>\n\n</think>\n\n" in text  # the template inserts it in the last assistant turn
    assert [tokenizer.decode(run) for run in trained_runs(out)] == ["Hello<|im_end|>"]


def test_native_without_template_or_unalignable_is_a_clear_error(llama_tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(TuluError, match="has no chat_template"):
        encode(messages, llama_tokenizer, "native")
    tokenizer = load_tokenizer(tokenizer_dir("llama"))
    # A template that rewrites the assistant's words cannot be aligned with the messages.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}{{ m['content'] | upper }}"
        "{% else %}{{ m['content'] }}{% endif %}</s>{% endfor %}"
    )
    with pytest.raises(TuluError, match=r"native chat_template of .*llama: cannot align messages\[1\] \(assistant"):
        encode(messages, tokenizer, "native")


# ---- the dataset-level path --------------------------------------------------------------------------------------


def write_jsonl(path, conversations):
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations), encoding="utf-8")
    return path


def test_encode_dataset_matches_encode_and_reports_drops(tmp_path, llama_tokenizer):
    rng = random.Random(5)
    conversations = [random_conversation(rng) for _ in range(60)]
    conversations.append([{"role": "user", "content": "long " * 200}, {"role": "assistant", "content": "cut"}])
    path = write_jsonl(tmp_path / "train.jsonl", conversations)
    dataset, report = encode_dataset([path], llama_tokenizer, "tulu", 64, cache_dir=str(tmp_path / "cache"))
    expected = [encode(m, llama_tokenizer, "tulu", 64) for m in conversations]
    kept = [e for e in expected if any(label != IGNORE_INDEX for label in e["labels"])]
    assert report.kept == len(kept) == len(dataset) and report.total_dropped == len(expected) - len(kept) >= 1
    assert list(report.dropped) == ["no trained token within max_seq_length (64)"]
    assert dataset.column_names == ["input_ids", "labels"]
    assert [dict(row) for row in dataset] == kept
    assert report.tokens == sum(len(e["input_ids"]) for e in kept)
    assert report.trained_tokens == sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in kept)
    parallel, parallel_report = encode_dataset([path], llama_tokenizer, "tulu", 64, num_proc=2,
                                               cache_dir=str(tmp_path / "cache2"))
    assert [dict(row) for row in parallel] == kept and parallel_report == report


def test_encode_dataset_rereads_an_edited_file(tmp_path, llama_tokenizer):
    path = write_jsonl(tmp_path / "a.jsonl", [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]])
    first, _ = encode_dataset([path], llama_tokenizer, cache_dir=str(tmp_path / "cache"))
    write_jsonl(path, [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "c d e"}]] * 2)
    second, _ = encode_dataset([path], llama_tokenizer, cache_dir=str(tmp_path / "cache"))
    assert len(first) == 1 and len(second) == 2


def test_encode_dataset_names_the_bad_line(tmp_path, llama_tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
                    '{"messages": [{"role": "bot", "content": "a"}]}\n', encoding="utf-8")
    with pytest.raises(TuluError, match=r"bad.jsonl:2: messages\[0\].role is 'bot'"):
        encode_dataset([path], llama_tokenizer, cache_dir=str(tmp_path / "cache"))
