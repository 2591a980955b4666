"""The original TÜLU masking method, kept slow on purpose as the reference tulu-lite is proven against.

For every non-assistant message i it re-tokenizes the conversation prefix before i and the prefix through i (plus
"<|assistant|>\\n" when an assistant answers it), and masks the token range between the two lengths. Used by
tests/test_encode.py and benchmarks/encode.py.
"""

from __future__ import annotations

from tulu_lite.data.encode import IGNORE_INDEX


def prefix_reference(messages, tokenizer, max_seq_length):
    """The original TÜLU method, slow on purpose: re-tokenize every message prefix to find mask boundaries."""

    def concat(msgs):
        text = ""
        for m in msgs:
            if m["role"] == "assistant":
                text += "<|assistant|>\n" + m["content"].strip() + tokenizer.eos_token + "\n"
            else:
                text += f"<|{m['role']}|>\n" + m["content"].strip() + "\n"
        return text

    def n_tokens(text):
        return len(tokenizer(text, max_length=max_seq_length, truncation=True)["input_ids"])

    input_ids = tokenizer(concat(messages).strip(), max_length=max_seq_length, truncation=True)["input_ids"]
    labels = list(input_ids)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            continue
        start = 0 if i == 0 else n_tokens(concat(messages[:i]))
        through = concat(messages[: i + 1])
        if i + 1 < len(messages) and messages[i + 1]["role"] == "assistant":
            through += "<|assistant|>\n"
        end = n_tokens(through)
        labels[start:end] = [IGNORE_INDEX] * len(labels[start:end])
        if end >= max_seq_length:
            break
    return {"input_ids": input_ids, "labels": labels}
