"""Chat formats: how a list of messages becomes the text a model is trained on or prompted with.

Two formats, chosen by a `Literal` field in the recipe:

- ``tulu``: the TÜLU training format, byte for byte as the original code builds it::

      <|system|>\\n{system}\\n<|user|>\\n{user}\\n<|assistant|>\\n{answer}</s>\\n<|user|>\\n...

  every content ``.strip()``-ped, the whole text ``.strip()``-ped; the tokenizer adds BOS.
- ``native``: the tokenizer's own ``chat_template`` (Llama-3, Qwen3, ...), rendered by transformers.
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedTokenizerBase

from tulu_lite.errors import TuluError

ChatFormat = Literal["tulu", "native"]

TULU_HEADERS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}
ASSISTANT_HEADER = TULU_HEADERS["assistant"]

# A Jinja chat_template that renders the tulu training text, saved with merged models so that
# `apply_chat_template(..., add_generation_prompt=True)` and servers (vLLM, TGI) prompt the model the way it was
# trained. It starts with BOS because chat templates are tokenized without special tokens; the whole text is
# right-stripped like the training text, except that a generation prompt follows the unstripped text (the
# training text continues there with "<|assistant|>\n").
TULU_CHAT_TEMPLATE = (
    "{%- set ns = namespace(text='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.text = ns.text + '<|system|>\\n' + message['content'] | trim + '\\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- set ns.text = ns.text + '<|user|>\\n' + message['content'] | trim + '\\n' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set ns.text = ns.text + '<|assistant|>\\n' + message['content'] | trim + eos_token + '\\n' -%}"
    "{%- else -%}"
    "{{ raise_exception('tulu format: unknown role ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if bos_token -%}{{ bos_token }}{%- endif -%}"
    "{%- if add_generation_prompt -%}{{ ns.text + '<|assistant|>\\n' }}{%- else -%}{{ ns.text | trim }}{%- endif -%}"
)


def tulu_pieces(messages: list[dict], eos_token: str) -> list[str]:
    """The text of each message in the tulu format, before the final strip (their concatenation is the text)."""
    pieces = []
    for message in messages:
        role = message["role"]
        if role not in TULU_HEADERS:
            raise TuluError(f"tulu format: unknown role {role!r}")
        tail = eos_token + "\n" if role == "assistant" else "\n"
        pieces.append(TULU_HEADERS[role] + message["content"].strip() + tail)
    return pieces


def render_tulu(messages: list[dict], eos_token: str) -> str:
    """The exact TÜLU training text for a conversation (BOS is added by the tokenizer, not here)."""
    return "".join(tulu_pieces(messages, eos_token)).strip()


def render_native(messages: list[dict], tokenizer: PreTrainedTokenizerBase, **kwargs) -> str:
    """Render with the tokenizer's own chat template; a missing or failing template is a one-line error."""
    if not tokenizer.chat_template:
        raise TuluError(
            f"{tokenizer.name_or_path}: tokenizer has no chat_template (use the tulu format for this base)"
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja raises TemplateError or whatever raise_exception() was given
        raise TuluError(f"{tokenizer.name_or_path}: chat_template failed on this conversation ({exc})") from exc


def generation_prompt(messages: list[dict], tokenizer: PreTrainedTokenizerBase, template: ChatFormat) -> str:
    """Text that prompts a model for its next assistant turn, formatted the way it was trained.

    Tokenize the result with ``add_special_tokens=True`` for ``tulu`` (BOS comes from the tokenizer, as in
    training) and ``add_special_tokens=False`` for ``native`` (the template writes its own BOS).
    """
    if template == "tulu":
        return "".join(tulu_pieces(messages, tokenizer.eos_token)) + ASSISTANT_HEADER
    if template == "native":
        return render_native(messages, tokenizer, add_generation_prompt=True)
    raise TuluError(f"unknown chat format {template!r}, expected tulu or native")
