"""``--style v1`` (the default): TÜLU v1's rules, as open-instruct applied them at commit e44fcf588.

The reference is `reformat_datasets.py`, `instruction_encode_templates.py` and
`scripts/split_sharegpt_conversations.py`: the same records kept and dropped, the same roles, contents and ids,
oasst1 with every root-to-assistant path, sharegpt split and filtered as FastChat's script did. Its quirks are kept
and, where the reference stopped with an exception, the record is kept or skipped and counted instead.
super_ni's v1 rules are in `super_ni`.
"""

from __future__ import annotations

from collections.abc import Iterator

from tulu_lite.data.raw import RawRecord, preview
from tulu_lite.data.sources.conversion import (
    OPTIONAL_TEXT,
    TEXT,
    Example,
    Messages,
    Run,
    check_fields,
    oasst_message,
    oasst_quality,
)
from tulu_lite.data.templates import render_instruction_v1
from tulu_lite.errors import TuluError

# Every instruction example draws its template from run.rng in file order, as the reference did; nothing is
# dropped for being empty. Conversations the reference wrote but that hold nothing to train on (no assistant turn)
# can't be stored in the conversation format: `conversion.emit` drops and counts them.


def _instruction(run: Run, example_id: str, instruction: str, input_text: str | None,
                 output: str) -> Iterator[Example]:
    prompt, completion = render_instruction_v1(instruction, input_text, output, run.rng)
    yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def convert_alpaca_style(raw: RawRecord, run: Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction(run, run.next_id(), record["instruction"], record.get("input"), record["output"])


def convert_dolly(raw: RawRecord, run: Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction(run, run.next_id(), record["instruction"], record.get("context"), record["response"])


def convert_flan(raw: RawRecord, run: Run) -> Iterator[Example]:
    # The prompt gets a newline unless it already ends with one or with a colon; the target goes in untouched.
    prompt = raw.value["inputs"]
    if not prompt.endswith("\n") and not prompt.rstrip().endswith(":"):
        prompt += "\n"
    yield run.next_id(), [{"role": "user", "content": prompt},
                          {"role": "assistant", "content": raw.value["targets"]}]


def convert_unnatural(raw: RawRecord, run: Run) -> Iterator[Example]:
    instruction = raw.value["instruction"]
    for number, instance in enumerate(raw.value["instances"]):
        check_fields(instance, {"input": TEXT, "output": TEXT, "constraints": OPTIONAL_TEXT}, raw, run.source,
                     f"instances[{number}]")
        constraints = instance.get("constraints")
        if constraints and constraints.lower() not in ("none", "none."):
            instruction_here = instruction + "\n" + constraints
        else:
            instruction_here = instruction
        yield from _instruction(run, run.next_id(), instruction_here, instance["input"], instance["output"])


def convert_baize(raw: RawRecord, run: Run) -> Iterator[Example]:
    messages: Messages = []
    for chunk in raw.value["input"].split("[|Human|]")[1:]:
        if not chunk.strip() or "[|AI|]" not in chunk:
            continue
        human, *answers = chunk.split("[|AI|]")
        if len(answers) > 1:  # the reference's two-way unpacking raises here; keep the answers, counted
            run.report.repaired["baize: several [|AI|] turns in one round joined (the reference stops here)"] += 1
        messages += [{"role": "user", "content": human.strip()},
                     {"role": "assistant", "content": "\n".join(answer.strip() for answer in answers).strip()}]
    yield run.next_id(), messages


def convert_oasst(raw: RawRecord, run: Run) -> Iterator[Example]:
    for messages in _oasst_prefixes(raw.value["prompt"], [], raw, run):
        yield run.next_id(), messages


def _oasst_prefixes(node: dict, prefix: Messages, raw: RawRecord, run: Run) -> Iterator[Messages]:
    """Depth first: every path from the root that ends in an assistant reply, leaves and inner nodes alike.

    v1 read the released trees as they are (no `deleted` filter: the ``ready`` export holds none).
    """
    messages = [*prefix, oasst_message(node, raw, run)]
    if messages[-1]["role"] == "assistant":
        yield messages
    replies = [child for child in node.get("replies") or [] if isinstance(child, dict)]
    if run.options.top_k_reply is not None:
        replies = sorted(replies, key=lambda child: -oasst_quality(child))[:run.options.top_k_reply]
    for child in replies:
        yield from _oasst_prefixes(child, messages, raw, run)


def _split_sharegpt(turns: list[dict], costs: list[int], budget: int) -> list[tuple[int, int]]:
    """FastChat's split as TÜLU v1 ran it: (start, end) turn ranges of whole human+gpt pairs within `budget`.

    A pair's cost is the tokens of both values (with BOS) + 6 each. Kept as the reference behaves, quirks included:
    an odd last turn is dropped first; a pair longer than the budget is skipped, but its cost still counts
    towards the next part, which is then cut empty; and when the last pair overflows, the open part is lost.
    """
    turns = turns[: len(turns) // 2 * 2]
    if len(turns) < 2:
        return []
    parts, start, used = [], 0, 0
    for index in range(0, len(turns), 2):
        pair = costs[index] + costs[index + 1]
        if used + pair > budget:
            parts.append((start, index))
            start = index + 2 if pair > budget else index
            used = 0
        elif index == len(turns) - 2:
            parts.append((start, index + 2))
        used += pair
    return parts


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant"}


def _sharegpt_turns(raw: RawRecord, run: Run) -> list[dict]:
    turns = raw.value["conversations"]
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise TuluError(f"{raw.where}: conversations[{number}] must be an object with a string 'value' "
                            f"(expected {run.source.expected}); record starts: {preview(raw.preview)}")
    return turns


def convert_sharegpt(raw: RawRecord, run: Run) -> Iterator[Example]:
    turns, raw_id = _sharegpt_turns(raw, run), str(raw.value.get("id", raw.index))
    if run.count_tokens is None:  # already split (the reference's sharegpt_html_cleaned_and_split.json)
        parts = [(raw_id, turns)]
    else:
        paired = [turn["value"] for turn in turns[: len(turns) // 2 * 2]]
        costs = [cost + 6 for cost in run.count_tokens(paired)] if paired else []
        spans = _split_sharegpt(turns, costs, run.options.split_budget)
        parts = [(f"{raw_id}_{start}", turns[start:end]) for start, end in spans]
        if len(parts) > 1:
            run.report.repaired["sharegpt: conversation split into parts"] += 1
        parts = [(part_id, part) for part_id, part in parts if _strictly_alternating(part, run)]
    for part_id, part in parts:
        messages = _sharegpt_reformat(part, raw, run)
        if messages:
            yield f"{run.source.name}_{part_id}", messages


def _strictly_alternating(turns: list[dict], run: Run) -> bool:
    """The split script's filter: a part survives only if its speakers are exactly human, gpt, human, gpt, ..."""
    if not turns:
        run.report.skipped["sharegpt: empty part after splitting"] += 1
        return False
    if all(turn.get("from") == ("human", "gpt")[number % 2] for number, turn in enumerate(turns)):
        return True
    run.report.skipped["sharegpt: part whose speakers are not human/gpt alternating"] += 1
    return False


def _sharegpt_reformat(turns: list[dict], raw: RawRecord, run: Run) -> Messages:
    """`reformat_datasets.py`'s mapping; a system or bing turn drops the conversation, other speakers stop it."""
    messages = []
    for number, turn in enumerate(turns):
        speaker = turn.get("from")
        if speaker in ("system", "bing"):
            run.report.skipped[f"sharegpt: conversation with a {speaker!r} turn"] += 1
            return []
        if speaker not in _SHAREGPT_ROLES:
            raise TuluError(f"{raw.where}: conversations[{number}].from is {speaker!r}; v1 knows human, user, gpt, "
                            f"chatgpt, system, bing (the reference stops here too; --style clean skips it)")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": turn["value"]})
    if not messages:
        run.report.skipped["sharegpt: no turns"] += 1
    return messages
