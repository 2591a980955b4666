"""`tulu-lite export`: GGUF files read back through transformers match the model they came from, and a wrong file
is caught.

The tiny LLaMA of conftest (real 32k LLaMA vocabulary) is exported to f16 and q8_0; each file is loaded back by
transformers' own GGUF reader and compared. Deliberate corruptions (q/k not permuted, two tensors swapped, two
tokens swapped) must fail the export and leave nothing behind. The LLaMA, Mistral and Llama-3 tokenizers
round-trip through the GGUF metadata on generated texts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cli_cases import TEMPORARY, BadInput, check_bad_input
from conftest import tokenizer_dir

from tulu_lite.errors import TuluError

gguf = pytest.importorskip("gguf")


def _read(path: Path):
    return gguf.GGUFReader(str(path))


def _field(reader, key: str):
    field = reader.fields[key]
    return field.contents()


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if TEMPORARY.search(p.name)]


# ---- export, read back, compare -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny LLaMA exported once per type (the export verifies itself; the tests check the figures and file)."""
    from tulu_lite.export import export

    out = tmp_path_factory.mktemp("gguf")
    return {kind: export(tiny_model_dir, out / f"tiny-{kind}.gguf", kind) for kind in ("f16", "q8_0")}


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_export_reads_back_like_the_model(exported, kind):
    result = exported[kind]
    v = result.verification
    assert v.passed, v.failures()
    # same weights, same float32 arithmetic: the file read back by transformers is the model as written
    assert v.as_written.max_abs <= 1e-4 * v.reference_scale
    assert v.as_written.top1_agreement == 1.0
    assert v.original.max_abs <= v.original_bound and v.original.top1_agreement >= v.top1_minimum
    if kind == "f16":  # f16 rounding of the weights only: well inside 1% of the largest logit
        assert v.original.max_abs < 0.01 * v.reference_scale
    assert v.tokenizer.differing == 0 and not v.tokenizer.special_mismatches
    assert result.report.is_file() and result.report.name == f"tiny-{kind}.verification.json"
    assert _leftovers(result.out.parent) == []


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_written_file_is_what_llama_cpp_reads(exported, kind):
    from tulu_lite.json_files import read_json_object

    reader = _read(exported[kind].out)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2
    assert _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.rope.dimension_count") == 16
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert [_field(reader, f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos", "unknown")] == [1, 2, 0]
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 32000 and tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[13] == "<0x0A>"
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    weight = "F16" if kind == "f16" else "Q8_0"
    assert types["blk.0.attn_q.weight"] == types["output.weight"] == types["token_embd.weight"] == weight
    assert types["blk.1.ffn_norm.weight"] == types["output_norm.weight"] == "F32"
    assert len(types) == 2 * 9 + 3
    record = read_json_object(exported[kind].report)
    assert record["verification"]["passed"] is True and record["type"] == kind
    assert record["tensor_types"] == {weight: 2 * 7 + 2, "F32": 2 * 2 + 1}


def test_q_and_k_are_permuted_for_llama_cpp(exported, tiny_model_dir):
    """The file holds q/k in llama.cpp's rotary layout: rows of each head interleaved, not as Hugging Face has them."""
    import numpy as np
    from safetensors.numpy import load_file

    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    reader = _read(exported["f16"].out)
    stored = {tensor.name: np.asarray(tensor.data) for tensor in reader.tensors}
    hf_q = weights["model.layers.0.self_attn.q_proj.weight"].astype(np.float16)
    file_q = stored["blk.0.attn_q.weight"].reshape(hf_q.shape)
    head = hf_q.shape[0] // 4
    assert np.array_equal(file_q[:head:2], hf_q[:head // 2])  # even rows of head 0: its first half
    assert np.array_equal(file_q[1:head:2], hf_q[head // 2:head])  # odd rows: its second half
    v = weights["model.layers.0.self_attn.v_proj.weight"].astype(np.float16)
    assert np.array_equal(stored["blk.0.attn_v.weight"].reshape(v.shape), v)  # v is stored as is


def _swap_two_tensors(original):
    def gguf_name(hf_name, hp, name_map):
        swap = {"model.layers.1.mlp.gate_proj.weight": "model.layers.1.mlp.up_proj.weight",
                "model.layers.1.mlp.up_proj.weight": "model.layers.1.mlp.gate_proj.weight"}
        return original(swap.get(hf_name, hf_name), hp, name_map)
    return gguf_name


def _swap_two_tokens(original):
    def read_vocabulary(*args, **kwargs):
        vocab = original(*args, **kwargs)
        tokens = list(vocab.tokens)
        the, a = tokens.index("▁the"), tokens.index("▁a")
        tokens[the], tokens[a] = tokens[a], tokens[the]
        return type(vocab)(**{**vocab.__dict__, "tokens": tokens})
    return read_vocabulary


@pytest.mark.parametrize("corruption", ["q/k not permuted", "two tensors swapped", "two tokens swapped"])
def test_a_wrong_file_fails_and_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch, corruption):
    """Corrupt the writer on purpose: the check that reads the file back must catch it and keep no file."""
    from tulu_lite.export import ExportFailed, export, gguf_file, vocab

    if corruption == "q/k not permuted":
        monkeypatch.setattr(gguf_file, "llama_cpp_layout", lambda hf_name, weights, hp: weights)
    elif corruption == "two tensors swapped":
        monkeypatch.setattr(gguf_file, "gguf_name", _swap_two_tensors(gguf_file.gguf_name))
    else:
        monkeypatch.setattr(vocab, "read_vocabulary", _swap_two_tokens(vocab.read_vocabulary))
    out = tmp_path / "model.gguf"
    with pytest.raises(ExportFailed) as failed:
        export(tiny_model_dir, out, "q8_0")
    v = failed.value.verification
    if corruption == "two tokens swapped":
        assert v.tokenizer.differing > 0 and "tokenizer ids differ" in str(failed.value)
        assert v.as_written.max_abs <= v.as_written_tolerance  # the weights are right: only the tokenizer is wrong
    else:
        assert v.as_written.max_abs > 100 * v.as_written_tolerance, v.as_written
        assert "not written as llama.cpp reads it" in str(failed.value)
    assert "nothing was written" in str(failed.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_qwen3_with_tied_embeddings_and_its_own_template(tmp_path):
    """Qwen3 (byte-level BPE, no BOS, ChatML template, grouped kv heads, q/k norms, tied embeddings) round-trips."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tulu_lite.export import export
    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir("qwen3"))
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=128, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen3ForCausalLM(config).save_pretrained(tmp_path / "qwen3")
    tokenizer.save_pretrained(tmp_path / "qwen3")
    result = export(tmp_path / "qwen3", tmp_path / "qwen3.gguf", "q8_0")
    assert result.verification.passed and result.verification.as_written.max_abs == 0
    reader = _read(result.out)
    assert _field(reader, "general.architecture") == "qwen3"
    assert _field(reader, "tokenizer.ggml.pre") == "qwen2"
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")
    assert "output.weight" not in {tensor.name for tensor in reader.tensors}  # tied: llama.cpp reuses token_embd


# ---- tokenizers through GGUF metadata -------------------------------------------------------------------------

MARKERS = ["<|user|>\n", "<|assistant|>\n", "<|system|>\n", "</s>", "</s>\n"]
PIECES = ["hello", "world", "The", " quick", "brown", "fox", "naïve", "café", "Straße", "日本語", "中文", "Ελληνικά",
          "русский", "🦙", "🚀", "✅", "😶‍🌫️", "3", "42", "3.14", "1,000", "x^2", "(a)", "[b]", "{c}", "'s", "n't",
          "--", "==", "!!", "...", "\\n", "http://example.com", "e-mail", "snake_case", "CamelCase", "ALLCAPS"]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", " \n ", "\r\n", "    "]


def generated_texts(seed: int, count: int = 60, extra: list[str] = ()) -> list[str]:
    """Random mixes of words, unicode, whitespace runs and the tulu markers (fixed seed)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 14)):
            roll = rng.random()
            pool = MARKERS + list(extra) if roll < 0.15 else WHITESPACE if roll < 0.45 else PIECES
            parts.append(rng.choice(pool))
        texts.append("".join(parts))
    return texts


def _tokenizer_via_gguf(tokenizer, path: Path):
    """Write only the tokenizer metadata (plus a tiny architecture) and rebuild the tokenizer from the file."""
    from transformers import LlamaConfig

    from tulu_lite.export.gguf_file import (
        add_hyperparameters,
        new_writer,
        read_hyperparameters,
        write_file,
    )
    from tulu_lite.export.verify import load_gguf_tokenizer, readable_alone
    from tulu_lite.export.vocab import add_vocabulary, read_vocabulary

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4)
    hp = read_hyperparameters(config, path)
    with path.open("wb") as handle:
        writer = new_writer(handle, hp.architecture)
        add_hyperparameters(writer, hp, "f16")
        add_vocabulary(writer, read_vocabulary(tokenizer, hp.vocab_size, tokenizer.chat_template, path))
        write_file(writer)
    with readable_alone(path) as (directory, name):
        return load_gguf_tokenizer(directory, name)


@pytest.mark.parametrize("name", ["llama", "mistral", "llama3"])
def test_tokenizers_round_trip_through_gguf_metadata(name, tmp_path):
    from tulu_lite.export.verify import compare_tokenizers
    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir(name))
    extra = ["<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\n"] if name == "llama3" else []
    rebuilt = _tokenizer_via_gguf(tokenizer, tmp_path / f"{name}.gguf")
    texts = generated_texts(seed=len(name), extra=extra)
    check = compare_tokenizers(tokenizer, rebuilt, texts)
    assert check.differing == 0, check.first_difference
    assert not check.special_mismatches, check.special_ids
    # and without special tokens, and decoding back
    for text in texts[:20]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert rebuilt(text, add_special_tokens=False).input_ids == ids, repr(text)
        assert rebuilt.decode(ids) == tokenizer.decode(ids), repr(text)


def test_llama3_is_written_as_byte_level_bpe(tmp_path):
    from tulu_lite.export.vocab import read_vocabulary
    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir("llama3"))
    vocab = read_vocabulary(tokenizer, len(tokenizer), tokenizer.chat_template, tmp_path)
    assert (vocab.model, vocab.pre) == ("gpt2", "llama-bpe")
    assert vocab.merges and vocab.scores is None and vocab.add_bos
    assert vocab.tokens[vocab.bos_id] == "<|begin_of_text|>" and vocab.chat_template


def test_scores_follow_the_merge_order():
    from tulu_lite.export.vocab import merge_scores

    tokens = ["<unk>", "a", "b", "c", "ab", "abc", "bc", "[PAD7]"]
    scores = merge_scores(tokens, ["a b", "ab c", "b c"])
    assert scores == [0.0, 0.0, 0.0, 0.0, -0.0, -1.0, -2.0, -4.0]


# ---- bad input: one line, exit 2, nothing written ------------------------------------------------------------


def _gpt2_dir(tmp: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64, n_positions=16)).save_pretrained(
        tmp / "gpt2")


def _model_and_dir(tmp: Path) -> None:
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text('{"model_type": "llama"}')
    (tmp / "taken").mkdir()


EXPORT_CASES = [
    BadInput("not a directory", ["export", "{tmp}/missing", "-o", "{tmp}/m.gguf"], r"model directory not found"),
    BadInput("not a model dir", ["export", "{tmp}", "-o", "{tmp}/m.gguf"], r"not a model directory \(no config.json\)"),
    BadInput("unsupported architecture", ["export", "{tmp}/gpt2", "-o", "{tmp}/m.gguf"],
             r"architecture 'gpt2' \(GPT2LMHeadModel\) is not supported by export", setup=_gpt2_dir),
    BadInput("output is a directory", ["export", "{tmp}/model", "-o", "{tmp}/taken"], r"taken: is a directory",
             setup=_model_and_dir),
    BadInput("unknown type", ["export", "{tmp}/model", "-o", "{tmp}/m.gguf", "--type", "q5_k"],
             r"--type: expected one of f16, bf16, q8_0, q4_0, got 'q5_k'", setup=_model_and_dir),
    BadInput("merge --gguf unknown type", ["merge", "{tmp}/adapter", "-o", "{tmp}/merged", "--gguf", "q3"],
             r"--gguf: expected one of f16, bf16, q8_0, q4_0, got 'q3'"),
]


@pytest.mark.parametrize("case", EXPORT_CASES, ids=str)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_export_command_prints_the_figures(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from tulu_lite import cli
    from tulu_lite.cli import app

    cli.console.width = 200  # a wide terminal, so the table's first column ("logits as written") is not wrapped
    done = CliRunner().invoke(app, ["export", str(tiny_model_dir), "-o", str(tmp_path / "m.gguf"), "--type", "f16"])
    assert done.exit_code == 0, done.output
    assert "logits as written" in done.output and "tokenizer ids" in done.output and "wrote" in done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "m.verification.json"]


def test_existing_output_needs_force(tiny_model_dir, tmp_path):
    from tulu_lite.export import export

    out = tmp_path / "model.gguf"
    out.write_bytes(b"not yours")
    with pytest.raises(TuluError, match="already exists \\(pass --force to overwrite\\)"):
        export(tiny_model_dir, out, "f16")
    assert out.read_bytes() == b"not yours"
