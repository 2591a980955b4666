"""Batched, left-padded generation and log-likelihood scoring agree with one-prompt-at-a-time references."""

from __future__ import annotations

import json

import pytest
import torch

from tulu_lite.errors import TuluError
from tulu_lite.eval.generate import LanguageModel, load_model
from tulu_lite.eval.prompts import Prompt, build_prompt
from tulu_lite.eval.scoring import truncate_at_stop

TEXTS = ["Hello there", "The quick brown fox jumps over the lazy dog and then", "def f(x):\n", "1 2 3 4 5 6"]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir)


def make_lm(loaded, batch_size):
    model, tokenizer = loaded
    return LanguageModel(model, tokenizer, batch_size=batch_size)


def test_batched_greedy_generation_equals_one_at_a_time(loaded):
    prompts = [Prompt(t, True) for t in TEXTS]
    batched = make_lm(loaded, 4).generate(prompts, max_new_tokens=10)
    single = make_lm(loaded, 1).generate(prompts, max_new_tokens=10)
    assert batched == single
    assert all(batched)


def test_generation_respects_max_new_tokens(loaded):
    model, tokenizer = loaded
    prompt = Prompt(TEXTS[0], True)
    output = make_lm(loaded, 2).generate([prompt], max_new_tokens=5)[0]
    prompt_ids = tokenizer(prompt.text).input_ids
    full_ids = tokenizer(prompt.text + output).input_ids
    assert 1 <= len(full_ids) - len(prompt_ids) <= 6  # re-tokenising may merge or split one token at the seam


def test_stop_sequence_ends_a_row_early_and_the_stop_rule_cuts_where_the_free_run_would(loaded):
    lm = make_lm(loaded, 4)
    prompts = [Prompt(t, True) for t in TEXTS]
    free = lm.generate(prompts, max_new_tokens=12)
    stop = free[1][4:7]  # a piece of the second row's own output, so that row must stop there
    stopped = lm.generate(prompts, max_new_tokens=12, stop=[stop])
    for free_text, stopped_text in zip(free, stopped):
        assert free_text.startswith(stopped_text)  # generation is the same up to where a row stopped
        assert truncate_at_stop(stopped_text, [stop]) == truncate_at_stop(free_text, [stop])
    assert stop in stopped[1] and len(stopped[1]) < len(free[1])  # raw text: the stop is kept, the rest not made
    assert truncate_at_stop(stopped[1], [stop]) == free[1][: free[1].find(stop)]


def test_top_k_reaches_sampling(loaded):
    """Sampling restricted to the single most likely token is greedy decoding."""
    prompts = [Prompt(t, True) for t in TEXTS]
    greedy = make_lm(loaded, 4).generate(prompts, max_new_tokens=8)
    assert make_lm(loaded, 4).generate(prompts, max_new_tokens=8, temperature=0.8, top_p=0.95, top_k=1) == greedy
    assert make_lm(loaded, 4).generate(prompts, max_new_tokens=8, temperature=5.0, top_k=0) != greedy


def test_truncate_at_stop_takes_the_earliest():
    assert truncate_at_stop("abc\ndef\n#x", ["\n#", "\nd"]) == "abc"
    assert truncate_at_stop("no stop here", ["\n"]) == "no stop here"
    assert truncate_at_stop("x", []) == "x"


def test_continuation_keeps_leading_whitespace(loaded):
    """Decoding new tokens alone drops the leading space of a sentencepiece piece; code needs it."""
    model, tokenizer = loaded
    lm = make_lm(loaded, 1)
    prompt_ids = tokenizer("def f():\n").input_ids
    all_ids = tokenizer("def f():\n    return 1").input_ids
    assert all_ids[: len(prompt_ids)] == prompt_ids
    assert tokenizer.decode(all_ids[len(prompt_ids):]) != "    return 1"  # the trap
    assert lm._continuation(prompt_ids, all_ids[len(prompt_ids):]) == "    return 1"


def test_sampling_is_seeded_and_varies(loaded):
    prompts = [Prompt(TEXTS[0], True)] * 6
    first = make_lm(loaded, 3).generate(prompts, max_new_tokens=6, temperature=0.8, top_p=0.95)
    again = make_lm(loaded, 3).generate(prompts, max_new_tokens=6, temperature=0.8, top_p=0.95)
    assert first == again
    assert len(set(first)) > 1


def reference_continuation_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    ids = tokenizer(prompt + continuation).input_ids
    start = len(tokenizer(prompt).input_ids)
    assert ids[:start] == tokenizer(prompt).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids)))


def test_batched_continuation_logprobs_match_unpadded_reference(loaded):
    model, tokenizer = loaded
    pairs = [("Q: Where is Oslo?\nA:", " In Norway."), ("Hello there", " friend"),
             ("The quick brown fox jumps over the lazy dog and then", " sleeps."), ("1 2 3", " 4 5")]
    scores = make_lm(loaded, 3).continuation_logprobs([(Prompt(p, True), c) for p, c in pairs])
    for (prompt, continuation), score in zip(pairs, scores):
        assert score == pytest.approx(reference_continuation_logprob(model, tokenizer, prompt, continuation), abs=1e-3)


def test_prefix_logprobs_score_tokens_after_the_prefix_as_open_instruct_does(loaded):
    """Each text tokenized on its own (with BOS); the tokens from len(prefix tokens) + skip on are scored."""
    model, tokenizer = loaded
    items = [("Q: Where is Oslo?", "Q: Where is Oslo?\nA: In Norway.", 3), ("Hello there", "Hello there friend", 0),
             ("Q: x", "Q: x\nA:", 3)]
    scores = make_lm(loaded, 2).prefix_logprobs(items)
    for (prefix, full, skip), score in zip(items, scores):
        ids = tokenizer(full).input_ids
        start = len(tokenizer(prefix).input_ids) + skip
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids)))
        assert score == pytest.approx(expected, abs=1e-3)
    assert scores[2] == 0.0  # nothing left after "\nA:"


def test_next_token_logprobs_match_reference(loaded):
    model, tokenizer = loaded
    candidates = [319, 350, 315, 360]  # " A", " B", " C", " D" in the LLaMA vocabulary
    got = make_lm(loaded, 4).next_token_logprobs([Prompt(t, True) for t in TEXTS], candidates)
    for text, row in zip(TEXTS, got):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(text).input_ids])).logits[0, -1].float()
        expected = torch.log_softmax(logits, dim=-1)[candidates].tolist()
        assert row == pytest.approx(expected, abs=1e-4)


def test_tulu_chat_prompt_puts_the_answer_opening_after_the_assistant_header(loaded):
    _, tokenizer = loaded
    for protocol in ("tulu-v1", "tulu-lite"):
        prompt = build_prompt("Q: Where is Oslo?", "A:", "tulu", tokenizer, protocol=protocol, raw_joiner="\n")
        assert prompt.text == "<|user|>\nQ: Where is Oslo?\n<|assistant|>\nA:"
        assert prompt.add_special_tokens  # BOS from the tokenizer, as the reference's tokenizer call adds it
        raw = build_prompt("Q: Where is Oslo?", "A:", "none", tokenizer, protocol=protocol, raw_joiner="\n")
        assert raw.text == "Q: Where is Oslo?\nA:" and raw.add_special_tokens


def test_open_instruct_tulu_turn_keeps_the_text_as_it_is(loaded):
    """open-instruct's create_prompt_with_tulu_chat_format does not strip; tulu-lite's training renderer does."""
    _, tokenizer = loaded
    user = "Passage: Oslo.\nQuestion: Where?\n"
    assert build_prompt(user, "Answer:", "tulu", tokenizer, protocol="tulu-v1").text == \
        "<|user|>\nPassage: Oslo.\nQuestion: Where?\n\n<|assistant|>\nAnswer:"
    assert build_prompt(user, "Answer:", "tulu", tokenizer, protocol="tulu-lite").text == \
        "<|user|>\nPassage: Oslo.\nQuestion: Where?\n<|assistant|>\nAnswer:"


def test_load_model_errors_are_one_line(tmp_path):
    with pytest.raises(TuluError, match="model directory not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(TuluError, match="is a LoRA adapter, not a model"):
        load_model(tmp_path / "adapter")
    with pytest.raises(TuluError, match=r"not a model directory \(no config.json\)"):
        load_model(tmp_path)


def test_native_chat_prompt_and_end_of_turn_stop(loaded):
    from conftest import tokenizer_dir

    from tulu_lite.tokenizer import load_tokenizer

    llama3 = load_tokenizer(tokenizer_dir("llama3"))
    prompt = build_prompt("Q: hi", "A:", "native", llama3, protocol="tulu-v1")
    assert prompt.text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ: hi<|eot_id|>")
    assert prompt.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nA:")
    assert not prompt.add_special_tokens  # the template wrote BOS itself
    model, _ = loaded
    assert llama3.convert_tokens_to_ids("<|eot_id|>") in LanguageModel(model, llama3).eos_ids


def test_absolute_position_models_are_padded_correctly(llama_tokenizer):
    """RoPE hides a padding shift (only relative positions matter); GPT-2's learned positions do not."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(llama_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                        bos_token_id=llama_tokenizer.bos_token_id, eos_token_id=llama_tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    loaded = (model, llama_tokenizer)
    pairs = [("Q: Where is Oslo?\nA:", " In Norway."), ("The quick brown fox jumps over the lazy dog and then", " x")]
    scores = make_lm(loaded, 2).continuation_logprobs([(Prompt(p, True), c) for p, c in pairs])
    for (prompt, continuation), score in zip(pairs, scores):
        assert score == pytest.approx(reference_continuation_logprob(model, llama_tokenizer, prompt, continuation),
                                      abs=1e-3)
    prompts = [Prompt(t, True) for t in TEXTS]
    batched = make_lm(loaded, 4).generate(prompts, max_new_tokens=6)
    assert batched == make_lm(loaded, 1).generate(prompts, max_new_tokens=6)


# ---- the stop check decodes only each row's tail: the same stops as decoding the whole continuation -------------

FRAGMENTS = ["def", " f", "(x)", ":", "    return", " x", "  ", "\t", "é", "über", "答案", "是", "😀", "#", "`", "``",
             "class", "print", "if", " if", "0", "123", ".", " .", " n't", "'s", "\u200b", "Ω"]
WIDE = ["😀", "🙂", "答", "案", "是", "é", "\u200b"]  # several byte pieces per character: tails need more tokens
STOPS = [["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```"], ["\n\n"], ["答案是"], ["😀😀"], ["x)\n"], [" n't."]]


def first_stops(tokenizer, rows: list[list[int]], stop: list[str]) -> tuple[list, list]:
    """For each row, the step at which it stops: (StopOnText's, the old rule's). The old rule, the reference: the
    first step at which the row's whole decoded continuation holds a stop sequence."""
    from tulu_lite.eval.generate import StopOnText

    check, ids = StopOnText(tokenizer, stop, prompt_width=2), torch.tensor([[0, 0] + row for row in rows])
    got: list[int | None] = [None] * len(rows)
    expected: list[int | None] = [None] * len(rows)
    for step in range(len(rows[0])):
        texts = tokenizer.batch_decode([row[:step + 1] for row in rows], skip_special_tokens=True)
        for row, (done, text) in enumerate(zip(check(ids[:, :step + 3], None).tolist(), texts)):
            got[row] = step if done and got[row] is None else got[row]
            expected[row] = step if expected[row] is None and any(s in text for s in stop) else expected[row]
    return got, expected


def random_rows(tokenizer, rng, stop: list[str], rows: int, length: int) -> list[list[int]]:
    """Token rows as a model might write them: text pieces (CJK, emoji, spaces), most with a stop or a newline in
    the second half, random vocabulary ids (byte pieces, half characters) and special tokens (eos) in between."""
    out = []
    special = [i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) if i is not None]
    for _ in range(rows):
        pool = rng.choice([FRAGMENTS, WIDE])
        pieces = [rng.choice(pool) for _ in range(length // 2)]
        if rng.random() < 0.8:
            pieces.insert(rng.randrange(length // 4, length // 2), rng.choice([*stop, "\n", "\n\n"]))
        ids = tokenizer("".join(pieces), add_special_tokens=False).input_ids
        for _ in range(rng.randrange(8)):
            noise = rng.choice(special) if rng.random() < 0.3 else rng.randrange(len(tokenizer))
            ids.insert(rng.randrange(len(ids) + 1), noise)
        out.append((ids + [rng.randrange(len(tokenizer)) for _ in range(length)])[:length])
    return out


@pytest.mark.parametrize("name", ["llama", "mistral", "llama3", "qwen3"])
def test_the_tail_stop_check_stops_where_the_whole_text_does(name):
    import random

    from conftest import tokenizer_dir

    from tulu_lite.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir(name))
    rng, late = random.Random(0), 0
    for stop in STOPS:
        got, expected = first_stops(tokenizer, random_rows(tokenizer, rng, stop, rows=12, length=160), stop)
        assert got == expected, stop
        late += sum(e is not None and e > 50 for e in expected)
    assert late >= 10  # most stops were found in tails, not in whole continuations


def test_a_stop_completed_by_a_run_of_byte_pieces_is_found(llama_tokenizer):
    """Sentencepiece's byte pieces decode as one run: all U+FFFD until its last character is complete, so a tail
    that starts inside the run, or that ends the run's text without what came before it, would miss the stop."""
    tokenizer = llama_tokenizer
    emoji = tokenizer.convert_tokens_to_ids([f"<0x{b:02X}>" for b in "😀".encode()])
    filler = tokenizer("ab " * 80, add_special_tokens=False).input_ids
    head = filler[:30] + tokenizer.convert_tokens_to_ids(["x"])
    eos = tokenizer.eos_token_id
    rows = [head + emoji * 6 + filler,
            head + emoji * 2 + emoji[:2] + [eos] + emoji[2:] + emoji * 3 + filler,  # eos inside the run: dropped
            head + [eos] * 40 + emoji * 6 + filler]
    width = max(len(row) for row in rows)
    rows = [row + filler[:width - len(row)] for row in rows]
    got, expected = first_stops(tokenizer, rows, ["x😀😀😀😀😀😀"])
    assert got == expected == [len(head) + 23, len(head) + 24, len(head) + 63]

    # A tail starting just after an eos inside a run would begin mid-character: the whole run would read U+FFFD.
    spaces = tokenizer.convert_tokens_to_ids(["▁" * 16]) * 2
    run = emoji * 20
    rows = [filler[:30] + run[:k] + [eos] + run[k:] + spaces + filler[:5] for k in range(20, 60)]
    got, expected = first_stops(tokenizer, rows, ["😀" + " " * 32])
    assert got == expected and None not in got
