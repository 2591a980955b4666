"""How an (instruction, input) pair becomes one user message, in the two conversion styles.

``v1`` is TÜLU v1 exactly (open-instruct at e44fcf588, `instruction_encode_templates.py`): 14 templates for
examples with an input and 14 without, each a (prompt, completion) pair with a fixed weight, drawn with Python's
`random.choices` from one generator seeded once per conversion, one draw per example in file order; and the
few-shot layout of its SuperNI prompts. The formats below are the reference's, character for character
(including its "Plase" typo and the completion template that starts with a newline).

``clean`` is tulu-lite's own smaller set, picked by a hash of (seed, example id), so an example's template never
depends on the other records (a subsample keeps each example's prompt).
"""

from __future__ import annotations

import bisect
import hashlib
import random

# ---- v1: the reference's templates and weights ------------------------------------------------------------------
# (prompt template, completion template, weight), in the reference's order: the order fixes which template a
# given random draw selects, so it is part of the format.
V1_TEMPLATES_WITH_INPUT: tuple[tuple[str, str, float], ...] = (
    ("{instruction}\n\n{input}\n\n", "{output}", 0.2),
    ("{instruction}\n{input}\n\n", "{output}", 0.1),
    ("{instruction}\n{input}\n", "{output}", 0.1),
    ("{instruction}\n\nInput: {input}\n\nOutput:", "{output}", 0.05),
    ("{instruction}\nInput: {input}\nOutput:", "{output}", 0.05),
    ("{instruction}\n{input}\n\nResponse:", "{output}", 0.05),
    ("{instruction}\n\nAdditional Context:\n{input}\n\nAnswer:", "{output}", 0.05),
    ("Task: {instruction}\nInput: {input}\nOutput:", "{output}", 0.05),
    ("Task: {instruction}\n\n{input}\n\n", "{output}", 0.05),
    ("Task: {instruction}\n\n{input}\n\nAnswer:", "{output}", 0.05),
    ("You need to complete the following task:\n\n{instruction}\n\n{input}\n\nAnswer:", "{output}", 0.05),
    ("{instruction}\n\nNow complete the following instance -\nInput: {input}\nOutput:", "{output}", 0.05),
    ("Instruction:{instruction}\n\nInput: {input}\n\n", "{output}", 0.05),
    ("Below is an instruction that describes a task, paired with an input that provides further context. "
     "Write a response that appropriately completes the request.\n\n"
     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:", "{output}", 0.1),
)
V1_TEMPLATES_WITHOUT_INPUT: tuple[tuple[str, str, float], ...] = (
    ("{instruction}\n\n", "{output}", 0.2),
    ("{instruction}\n", "{output}", 0.1),
    ("{instruction}", "\n{output}", 0.1),
    ("{instruction} Output:", "{output}", 0.05),
    ("{instruction}\nResponse:", "{output}", 0.05),
    ("{instruction}\n\nAnswer:", "{output}", 0.05),
    ("Task: {instruction}\n\n", "{output}", 0.05),
    ("Instruction: {instruction}\n", "{output}", 0.05),
    ("Instruction: {instruction}\nOutput:", "{output}", 0.05),
    ("You need to complete the following task:\n\n{instruction}\n\n", "{output}", 0.05),
    ("Can you help with this?\n\n{instruction}\n", "{output}", 0.05),
    ("Plase answer the following request: {instruction}\nAnswer:", "{output}", 0.05),
    ("Tell me how would you respond to the following request.\n{instruction}\n", "{output}", 0.05),
    ("Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
     "### Response:", "{output}", 0.1),
)
_V1_WEIGHTS = {id(options): [weight for _, _, weight in options]
               for options in (V1_TEMPLATES_WITH_INPUT, V1_TEMPLATES_WITHOUT_INPUT)}


def render_instruction_v1(instruction: str, input_text: str | None, output: str,
                          rng: random.Random) -> tuple[str, str]:
    """(user message, assistant message) as v1 built them; draws exactly one `rng.random()`, as the reference did.

    Nothing is dropped or trimmed beyond what v1 did: instruction, input and output are stripped, the prompt keeps
    the template's trailing newlines, and an empty output stays empty.
    """
    has_input = input_text is not None and input_text.strip() != ""
    options = V1_TEMPLATES_WITH_INPUT if has_input else V1_TEMPLATES_WITHOUT_INPUT
    prompt, completion, _ = rng.choices(options, weights=_V1_WEIGHTS[id(options)])[0]
    if has_input:
        return prompt.format(instruction=instruction.strip(), input=input_text.strip()), \
            completion.format(output=output.strip())
    return prompt.format(instruction=instruction.strip()), completion.format(output=output.strip())


def few_shot_prompt_v1(definition: str, exemplars: list[dict], input_text: str) -> str:
    """A v1 SuperNI few-shot prompt: the definition, then ``Input:``/``Output:`` blocks, the last one open."""
    shots = "".join(f"Input:\n{shot['input'].strip()}\nOutput:\n{str(shot['output']).strip()}\n\n"
                    for shot in exemplars)
    return f"{definition.strip()}\n\n{shots}Input:\n{input_text.strip()}\nOutput:\n"


# ---- clean: tulu-lite's own templates, picked by a hash of (seed, id) ------------------------------------------
# TÜLU turned (instruction, input) pairs into one user message through a weighted set of templates, the plain
# "instruction, blank line, input" form being the most common and the Alpaca prompt among them, so the model does
# not over-fit one layout. These are tulu-lite's own templates in that spirit; weights sum to 1.
TEMPLATES_WITH_INPUT: tuple[tuple[str, float], ...] = (
    ("{instruction}\n\n{input}", 0.25),
    ("{instruction}\n{input}", 0.15),
    ("{instruction}\n\nInput: {input}", 0.10),
    ("Task: {instruction}\n\nInput:\n{input}", 0.10),
    ("{input}\n\n{instruction}", 0.10),
    ("Instruction: {instruction}\nContext: {input}", 0.10),
    ("Here is a task and the text it refers to.\n\nTask: {instruction}\nText: {input}", 0.10),
    # The Stanford Alpaca prompt format, kept so models also see the layout most public checkpoints use.
    ("Below is an instruction that describes a task, paired with an input that provides further context. "
     "Write a response that appropriately completes the request.\n\n"
     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:", 0.10),
)
TEMPLATES_WITHOUT_INPUT: tuple[tuple[str, float], ...] = (
    ("{instruction}", 0.35),
    ("Task: {instruction}", 0.10),
    ("Instruction: {instruction}", 0.10),
    ("Please help with the following request.\n\n{instruction}", 0.10),
    ("{instruction}\n\nAnswer:", 0.10),
    ("Respond to this: {instruction}", 0.10),
    ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
     "\n\n### Instruction:\n{instruction}\n\n### Response:", 0.15),
)


def seeded_unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) that depends only on `seed` and `parts` (stable across runs and Python versions)."""
    key = "\x1f".join(str(part) for part in (seed, *parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def _cumulative(options: tuple[tuple[str, float], ...]) -> list[float]:
    running, out = 0.0, []
    for _, weight in options:
        running += weight
        out.append(running)
    return out


_CUMULATIVE = {id(options): _cumulative(options) for options in (TEMPLATES_WITH_INPUT, TEMPLATES_WITHOUT_INPUT)}


def _weighted_pick(options: tuple[tuple[str, float], ...], unit: float) -> str:
    cumulative = _CUMULATIVE.get(id(options)) or _cumulative(options)
    return options[min(bisect.bisect_right(cumulative, unit * cumulative[-1]), len(options) - 1)][0]


def render_instruction(instruction: str, input_text: str | None, seed: int, example_id: str) -> str:
    """The user message for an (instruction, input) pair, with a template picked by (seed, id)."""
    instruction, input_text = instruction.strip(), (input_text or "").strip()
    unit = seeded_unit(seed, "template", example_id)
    if input_text:
        return _weighted_pick(TEMPLATES_WITH_INPUT, unit).format(instruction=instruction, input=input_text)
    return _weighted_pick(TEMPLATES_WITHOUT_INPUT, unit).format(instruction=instruction)


def few_shot_prompt(definition: str, exemplars: list[dict], input_text: str) -> str:
    """A clean SuperNI few-shot prompt: the definition, the examples, then the instance to solve."""
    shots = "\n\n".join(f"Example input: {shot['input'].strip()}\nExample output: {str(shot['output']).strip()}"
                        for shot in exemplars)
    return f"{definition.strip()}\n\n{shots}\n\nNow the instance to solve.\nInput: {input_text.strip()}\nOutput:"
