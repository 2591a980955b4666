"""Tokenizer loading: offline, pad without growing the vocabulary, saved copies tokenize like the original."""

from __future__ import annotations

import pytest
from conftest import tokenizer_dir

from tulu_lite.errors import TuluError
from tulu_lite.tokenizer import load_tokenizer

MULTI_TURN = "<|user|>\nHi\n<|assistant|>\nHello!</s>\n<|user|>\nThanks\n<|assistant|>\nBye</s>"


@pytest.mark.parametrize("name", ["llama", "mistral", "llama3", "qwen3"])
def test_saved_tokenizer_round_trips(tmp_path, name):
    original = load_tokenizer(tokenizer_dir(name))
    original.save_pretrained(tmp_path)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded(MULTI_TURN)["input_ids"] == original(MULTI_TURN)["input_ids"]
    assert reloaded.pad_token == original.pad_token and len(reloaded) == len(original)


def test_pad_is_an_existing_token(llama_tokenizer):
    assert llama_tokenizer.pad_token == "<unk>" and len(llama_tokenizer) == 32000
    llama3 = load_tokenizer(tokenizer_dir("llama3"))
    assert llama3.pad_token == llama3.eos_token and llama3.pad_token_id < len(llama3)


def test_after_eos_the_llama_newline_keeps_its_space_piece(llama_tokenizer):
    ids = llama_tokenizer("Hello!</s>\n<|user|>", add_special_tokens=False)["input_ids"]
    assert ids[:5] == [15043, 29991, 2, 29871, 13]  # "Hello", "!", "</s>", "▁", "<0x0A>" as LLaMA-1/2 training saw it


def test_not_a_tokenizer_dir(tmp_path):
    with pytest.raises(TuluError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TuluError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path)
