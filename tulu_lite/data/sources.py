"""Converters from the raw TÜLU source releases to the conversation format, in two styles.

Each source is read the way its authors release it (JSON Lines, one big JSON array, the natural-instructions
folder, OpenAssistant message trees) and streamed: JSON Lines line by line, JSON arrays element by element, so a
multi-GB download never sits in memory. Every output line is ``{"dataset": SOURCE, "id": ..., "messages": [...]}``.

``--style v1`` (the default) is TÜLU v1 as open-instruct built it at commit e44fcf588 (`reformat_datasets.py`,
`instruction_encode_templates.py`, `scripts/split_sharegpt_conversations.py`): the same records kept and dropped,
the same roles, contents and ids, super_ni from the xlingual task list, oasst1 with every root-to-assistant path,
sharegpt split and filtered as FastChat's script did. Its randomness (template choice, super_ni and CoT sampling)
came from Python's `random` seeded once with ``--seed`` (42); here one `random.Random(seed)` per conversion makes
the same calls in the same order, so the output equals the reference's when it is run on a raw folder holding
only that source (run over several sources, the reference shares one generator in `os.listdir` order).

``--style clean`` is tulu-lite's own conversion: templates from its own set picked by a hash of (seed, id) (so a
subsample keeps each example's prompt), empty instructions and outputs dropped, ShareGPT roles mapped and the turn
order repaired instead of whole conversations dropped, oasst1 maximal paths only, super_ni from the English
``splits/default`` list.

Either way the output is deterministic for a seed; ``max_examples`` keeps a bottom-k sample on a seeded hash of the
ids, so a smaller sample is a subset of a larger one.
"""

from __future__ import annotations

import heapq
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Literal

from rich.markup import escape
from rich.table import Table

from tulu_lite.data.conversations import check_output, validate_messages
from tulu_lite.data.raw import RawRecord, preview, read_json_values, read_sampled
from tulu_lite.data.templates import (
    few_shot_prompt,
    few_shot_prompt_v1,
    render_instruction,
    render_instruction_v1,
    seeded_unit,
)
from tulu_lite.errors import TuluError, at
from tulu_lite.json_files import json_error, write_json, write_jsonl

Messages = list[dict]
Example = tuple[str, Messages]  # (id, messages)
Style = Literal["v1", "clean"]
STYLES: tuple[str, ...] = ("v1", "clean")
SHAREGPT_SPLIT_DEFAULT = 2048  # LLaMA tokens per part, as TÜLU v1 split ShareGPT

# ---- options and report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that changes a conversion's output (saved beside the output as ``*.meta.json``)."""

    style: Style = "v1"
    seed: int = 42
    max_examples: int | None = None  # keep this many output examples (seeded bottom-k sample), None = all
    top_k_reply: int | None = None  # oasst1: keep the K best replies by quality at every node, None = all
    zero_shot_per_task: int = 60  # super_ni: zero-shot instances per task (open-instruct's default)
    few_shot_per_task: int = 20  # super_ni: few-shot instances per task
    n_few_shot: int = 2  # super_ni: positive examples shown in a few-shot prompt
    cot_zero_shot: int = 50000  # cot, v1: examples drawn from cot_zsopt.jsonl (the reference's cap)
    cot_few_shot: int = 50000  # cot, v1: examples drawn from cot_fsopt.jsonl
    split_max_tokens: int | None = None  # sharegpt: tokens per split part (2048 when a tokenizer is given)
    tokenizer: str | None = None  # sharegpt: tokenizer directory whose tokens are counted to split

    @property
    def split_budget(self) -> int | None:
        """Tokens per ShareGPT part, or None when no tokenizer is given (nothing is split)."""
        if self.tokenizer is None:
            return None
        return self.split_max_tokens if self.split_max_tokens is not None else SHAREGPT_SPLIT_DEFAULT


@dataclass
class ConvertReport:
    """What a conversion read, wrote, skipped and repaired (reason -> count)."""

    source: str
    inputs: list[str]
    style: str = "v1"
    records_read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    sampled_out: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "skipped": dict(self.skipped), "repaired": dict(self.repaired)}


# ---- the sources ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """State shared by one conversion: options, report, the current file, the splitter and v1's generator."""

    source: Source
    options: ConvertOptions
    report: ConvertReport
    file_stem: str = ""
    count_tokens: Callable[[list[str]], list[int]] | None = None
    rng: random.Random = field(default_factory=random.Random)  # v1: the one generator the reference seeded
    counter: int = 0  # v1: the running number the reference gave ids

    @property
    def v1(self) -> bool:
        return self.options.style == "v1"

    def next_id(self) -> str:
        """v1's ids: the source name and a running number over the conversion (records or examples)."""
        self.counter += 1
        return f"{self.source.name}_{self.counter - 1}"


Converter = Callable[[RawRecord, _Run], Iterator[Example]]


@dataclass(frozen=True)
class Source:
    """One row of the sources table: what the authors release and how a record becomes examples in each style."""

    name: str
    release: str  # the raw files as released, for help and error messages
    patterns: tuple[str, ...]  # globs used when RAW_PATH is a directory (the first that matches)
    fields: dict[str, tuple[type, ...]]  # required top-level keys of a record and their JSON types
    convert: Converter | None  # clean; None: super_ni reads a folder
    convert_v1: Converter | None
    options: frozenset[str] = frozenset()  # ConvertOptions fields that only this source uses
    id_with_file: bool = False  # clean ids include the file stem (sources usually converted from several files)
    v1_files: tuple[str, ...] = ()  # v1, RAW_PATH a directory: exactly these files, in this order (the reference's)
    # v1 with --tokenizer (the conversion splits): the files the reference's split script read, instead of v1_files
    v1_split_files: tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        return f"the '{self.name}' format: {self.release}"


# ---- clean: tulu-lite's rules -----------------------------------------------------------------------------------


def _example_id(raw: RawRecord, run: _Run) -> str:
    if run.source.id_with_file:
        return f"{run.source.name}_{run.file_stem}_{raw.index}"
    return f"{run.source.name}_{raw.index}"


def _instruction_example(run: _Run, example_id: str, instruction: str, input_text: str | None,
                         output: str) -> Iterator[Example]:
    if not instruction.strip():
        run.report.skipped["empty instruction"] += 1
        return
    if not output.strip():
        run.report.skipped["empty output"] += 1
        return
    prompt = render_instruction(instruction, input_text, run.options.seed, example_id)
    yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output.strip()}]


def _convert_alpaca_style(raw: RawRecord, run: _Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_example(run, _example_id(raw, run), record["instruction"], record.get("input"),
                                    record["output"])


def _convert_dolly(raw: RawRecord, run: _Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_example(run, _example_id(raw, run), record["instruction"], record.get("context"),
                                    record["response"])


def _convert_flan(raw: RawRecord, run: _Run) -> Iterator[Example]:
    # FLAN v2 exports are already templated prompts: inputs/targets go in as they are.
    record = raw.value
    if not record["targets"].strip():
        run.report.skipped["empty output"] += 1
        return
    yield _example_id(raw, run), [{"role": "user", "content": record["inputs"].strip()},
                                  {"role": "assistant", "content": record["targets"].strip()}]


def _convert_unnatural(raw: RawRecord, run: _Run) -> Iterator[Example]:
    instruction = raw.value["instruction"]
    for number, instance in enumerate(raw.value["instances"]):
        _check_fields(instance, {"input": (str,), "output": (str,)}, raw, run.source, f"instances[{number}]")
        constraints = instance.get("constraints") or ""
        if constraints.strip().lower() not in ("", "none", "none."):
            full_instruction = instruction.strip() + "\n" + constraints.strip()
        else:
            full_instruction = instruction
        example_id = f"{run.source.name}_{raw.index}_{number}"
        yield from _instruction_example(run, example_id, full_instruction, instance["input"], instance["output"])


def _convert_baize(raw: RawRecord, run: _Run) -> Iterator[Example]:
    # A transcript: a preamble, then "[|Human|] ... [|AI|] ..." rounds, usually ending with an empty "[|Human|]".
    messages: Messages = []
    for chunk in raw.value["input"].split("[|Human|]")[1:]:
        human, marker, ai = chunk.partition("[|AI|]")
        if not marker or not human.strip() or not ai.strip():
            continue
        if "[|AI|]" in ai:
            run.report.repaired["baize: consecutive AI turns merged"] += 1
            ai = "\n".join(part.strip() for part in ai.split("[|AI|]") if part.strip())
        messages += [{"role": "user", "content": human.strip()}, {"role": "assistant", "content": ai.strip()}]
    if not messages:
        run.report.skipped["no complete [|Human|]/[|AI|] round"] += 1
        return
    yield _example_id(raw, run), messages


# -- oasst1 --


def _oasst_children(node: dict, top_k: int | None, run: _Run) -> list[dict]:
    replies = node.get("replies") or []
    alive = [child for child in replies if isinstance(child, dict) and not child.get("deleted", False)]
    if len(alive) < len(replies):
        run.report.skipped["oasst1: deleted message (subtree dropped)"] += len(replies) - len(alive)
    if top_k is None:
        return alive
    # Messages without a quality label count as 0.0, as in open-instruct; sorted() is stable, so ties keep
    # the release order.
    return sorted(alive, key=lambda child: -_oasst_quality(child))[:top_k]


def _oasst_quality(node: dict) -> float:
    quality = (node.get("labels") or {}).get("quality") or {}
    value = quality.get("value", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_message(node: dict, raw: RawRecord, run: _Run) -> dict:
    role, text = node.get("role"), node.get("text")
    if role not in _OASST_ROLES or not isinstance(text, str):
        raise TuluError(f"{raw.where}: message {node.get('message_id', '?')!r}: expected role prompter|assistant "
                        f"and a text string (expected {run.source.expected}); got role {role!r}")
    return {"role": _OASST_ROLES[role], "content": text}


def _oasst_paths(node: dict, prefix: Messages, raw: RawRecord, run: _Run) -> Iterator[Example]:
    """Every maximal path through `node` that ends with an assistant reply (a dangling prompter turn is cut)."""
    messages = [*prefix, _oasst_message(node, raw, run)]
    role = node["role"]
    emitted = False
    for child in _oasst_children(node, run.options.top_k_reply, run):
        for example in _oasst_paths(child, messages, raw, run):
            emitted = True
            yield example
    if role == "assistant" and not emitted:
        yield f"{run.source.name}_{node.get('message_id', raw.index)}", messages


def _convert_oasst(raw: RawRecord, run: _Run) -> Iterator[Example]:
    root = raw.value["prompt"]
    if root.get("deleted", False):
        run.report.skipped["oasst1: deleted message (subtree dropped)"] += 1
        return
    count = 0
    for example in _oasst_paths(root, [], raw, run):
        count += 1
        yield example
    if not count:
        run.report.skipped["oasst1: tree without an assistant reply"] += 1


# -- sharegpt --

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                   "bing": "assistant", "system": "system"}


def _sharegpt_messages(raw: RawRecord, run: _Run) -> Messages | None:
    """Map speakers to roles and repair the turn order; None (counted) when nothing trainable is left."""
    messages: Messages = []
    for number, turn in enumerate(raw.value["conversations"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise TuluError(f"{raw.where}: conversations[{number}] must be an object with a string 'value' "
                            f"(expected {run.source.expected}); record starts: {preview(raw.preview)}")
        role = _SHAREGPT_ROLES.get(str(turn.get("from")).lower())
        if role is None:
            run.report.skipped[f"sharegpt: unknown speaker {turn.get('from')!r}"] += 1
            return None
        if not turn["value"].strip():
            run.report.repaired["sharegpt: empty turn removed"] += 1
            continue
        if role == "system" and messages:
            run.report.skipped["sharegpt: system message after the start"] += 1
            return None
        if messages and messages[-1]["role"] == role:
            run.report.repaired["sharegpt: consecutive same-speaker turns merged"] += 1
            messages[-1] = {"role": role, "content": messages[-1]["content"] + "\n\n" + turn["value"]}
            continue
        messages.append({"role": role, "content": turn["value"]})
    return _sharegpt_trim(messages, run)


def _sharegpt_trim(messages: Messages, run: _Run) -> Messages | None:
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system):]
    if body and body[0]["role"] == "assistant":
        run.report.repaired["sharegpt: leading assistant turn dropped"] += 1
        body = body[1:]
    if body and body[-1]["role"] == "user":
        run.report.repaired["sharegpt: trailing user turn dropped"] += 1
        body = body[:-1]
    if not body:
        run.report.skipped["sharegpt: no complete user/assistant exchange"] += 1
        return None
    return system + body


def _message_cost_texts(messages: Messages) -> list[str]:
    # Cost of a message in the tulu training text: its role header, content and closing newline (eos counted
    # separately for assistant turns).
    return [f"<|{message['role']}|>\n{message['content'].strip()}\n" for message in messages]


def split_by_budget(messages: Messages, costs: list[int], budget: int) -> tuple[list[Messages], int]:
    """Split an alternating conversation into parts of whole user+assistant exchanges within `budget` tokens.

    A leading system message is repeated at the start of every part and counted in each part's budget; one
    token is reserved for BOS. An exchange that alone exceeds the budget is dropped (its part boundary kept).
    Returns the parts and how many exchanges were dropped.
    """
    has_system = messages[0]["role"] == "system"
    fixed = 1 + (costs[0] if has_system else 0)
    head = messages[:1] if has_system else []
    start = 1 if has_system else 0
    parts, current, used, dropped = [], [], fixed, 0
    for index in range(start, len(messages) - 1, 2):
        pair, cost = messages[index:index + 2], costs[index] + costs[index + 1]
        if fixed + cost > budget:
            dropped += 1
            if current:
                parts.append(head + current)
            current, used = [], fixed
            continue
        if used + cost > budget:
            parts.append(head + current)
            current, used = [], fixed
        current += pair
        used += cost
    if current:
        parts.append(head + current)
    return parts, dropped


def _convert_sharegpt(raw: RawRecord, run: _Run) -> Iterator[Example]:
    base_id = f"{run.source.name}_{raw.value.get('id', raw.index)}"
    messages = _sharegpt_messages(raw, run)
    if messages is None:
        return
    if run.count_tokens is None:
        yield base_id, messages
        return
    costs = run.count_tokens(_message_cost_texts(messages))
    costs = [cost + (message["role"] == "assistant") for cost, message in zip(costs, messages)]  # + eos
    parts, dropped = split_by_budget(messages, costs, run.options.split_budget)
    if dropped:
        run.report.skipped["sharegpt: exchange longer than --split-max-tokens"] += dropped
    if len(parts) > 1:
        run.report.repaired["sharegpt: conversation split into parts"] += 1
    for number, part in enumerate(parts):
        yield (base_id if len(parts) == 1 else f"{base_id}_part{number}"), part


# ---- v1: TÜLU v1's rules ---------------------------------------------------------------------------------------
# Every instruction example draws its template from run.rng in file order, as the reference did; nothing is
# dropped for being empty. Conversations the reference wrote but that hold nothing to train on (no assistant turn)
# can't be stored in the conversation format: `_emit` drops and counts them.


def _instruction_v1(run: _Run, example_id: str, instruction: str, input_text: str | None,
                    output: str) -> Iterator[Example]:
    prompt, completion = render_instruction_v1(instruction, input_text, output, run.rng)
    yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _convert_alpaca_style_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_v1(run, run.next_id(), record["instruction"], record.get("input"), record["output"])


def _convert_dolly_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_v1(run, run.next_id(), record["instruction"], record.get("context"), record["response"])


def _convert_flan_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    # The prompt gets a newline unless it already ends with one or with a colon; the target goes in untouched.
    prompt = raw.value["inputs"]
    if not prompt.endswith("\n") and not prompt.rstrip().endswith(":"):
        prompt += "\n"
    yield run.next_id(), [{"role": "user", "content": prompt},
                          {"role": "assistant", "content": raw.value["targets"]}]


def _convert_unnatural_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    instruction = raw.value["instruction"]
    for number, instance in enumerate(raw.value["instances"]):
        _check_fields(instance, {"input": _TEXT, "output": _TEXT, "constraints": _OPTIONAL_TEXT}, raw, run.source,
                      f"instances[{number}]")
        constraints = instance.get("constraints")
        if constraints and constraints.lower() not in ("none", "none."):
            instruction_here = instruction + "\n" + constraints
        else:
            instruction_here = instruction
        yield from _instruction_v1(run, run.next_id(), instruction_here, instance["input"], instance["output"])


def _convert_baize_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
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


def _convert_oasst_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    for messages in _oasst_prefixes(raw.value["prompt"], [], raw, run):
        yield run.next_id(), messages


def _oasst_prefixes(node: dict, prefix: Messages, raw: RawRecord, run: _Run) -> Iterator[Messages]:
    """Depth first: every path from the root that ends in an assistant reply, leaves and inner nodes alike.

    v1 read the released trees as they are (no `deleted` filter: the ``ready`` export holds none).
    """
    messages = [*prefix, _oasst_message(node, raw, run)]
    if messages[-1]["role"] == "assistant":
        yield messages
    replies = [child for child in node.get("replies") or [] if isinstance(child, dict)]
    if run.options.top_k_reply is not None:
        replies = sorted(replies, key=lambda child: -_oasst_quality(child))[:run.options.top_k_reply]
    for child in replies:
        yield from _oasst_prefixes(child, messages, raw, run)


def _split_sharegpt_v1(turns: list[dict], costs: list[int], budget: int) -> list[tuple[int, int]]:
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


_SHAREGPT_V1_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant"}


def _sharegpt_turns(raw: RawRecord, run: _Run) -> list[dict]:
    turns = raw.value["conversations"]
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise TuluError(f"{raw.where}: conversations[{number}] must be an object with a string 'value' "
                            f"(expected {run.source.expected}); record starts: {preview(raw.preview)}")
    return turns


def _convert_sharegpt_v1(raw: RawRecord, run: _Run) -> Iterator[Example]:
    turns, raw_id = _sharegpt_turns(raw, run), str(raw.value.get("id", raw.index))
    if run.count_tokens is None:  # already split (the reference's sharegpt_html_cleaned_and_split.json)
        parts = [(raw_id, turns)]
    else:
        paired = [turn["value"] for turn in turns[: len(turns) // 2 * 2]]
        costs = [cost + 6 for cost in run.count_tokens(paired)] if paired else []
        spans = _split_sharegpt_v1(turns, costs, run.options.split_budget)
        parts = [(f"{raw_id}_{start}", turns[start:end]) for start, end in spans]
        if len(parts) > 1:
            run.report.repaired["sharegpt: conversation split into parts"] += 1
        parts = [(part_id, part) for part_id, part in parts if _strictly_alternating(part, run)]
    for part_id, part in parts:
        messages = _sharegpt_reformat_v1(part, raw, run)
        if messages:
            yield f"{run.source.name}_{part_id}", messages


def _strictly_alternating(turns: list[dict], run: _Run) -> bool:
    """The split script's filter: a part survives only if its speakers are exactly human, gpt, human, gpt, ..."""
    if not turns:
        run.report.skipped["sharegpt: empty part after splitting"] += 1
        return False
    if all(turn.get("from") == ("human", "gpt")[number % 2] for number, turn in enumerate(turns)):
        return True
    run.report.skipped["sharegpt: part whose speakers are not human/gpt alternating"] += 1
    return False


def _sharegpt_reformat_v1(turns: list[dict], raw: RawRecord, run: _Run) -> Messages:
    """`reformat_datasets.py`'s mapping; a system or bing turn drops the conversation, other speakers stop it."""
    messages = []
    for number, turn in enumerate(turns):
        speaker = turn.get("from")
        if speaker in ("system", "bing"):
            run.report.skipped[f"sharegpt: conversation with a {speaker!r} turn"] += 1
            return []
        if speaker not in _SHAREGPT_V1_ROLES:
            raise TuluError(f"{raw.where}: conversations[{number}].from is {speaker!r}; v1 knows human, user, gpt, "
                            f"chatgpt, system, bing (the reference stops here too; --style clean skips it)")
        messages.append({"role": _SHAREGPT_V1_ROLES[speaker], "content": turn["value"]})
    if not messages:
        run.report.skipped["sharegpt: no turns"] += 1
    return messages


_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_INSTRUCTION_FIELDS = {"instruction": _TEXT, "input": _OPTIONAL_TEXT, "output": _TEXT}
_FLAN_FIELDS = {"inputs": _TEXT, "targets": _TEXT}

SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("super_ni", "the natural-instructions repository folder: splits/xlingual/train_tasks.txt (v1) or "
           "splits/default/train_tasks.txt (clean), tasks/*.json", (), {}, None, None,
           frozenset({"zero_shot_per_task", "few_shot_per_task", "n_few_shot"})),
    Source("cot", "cot_zsopt.jsonl / cot_fsopt.jsonl (or their folder) with inputs, targets", ("*.jsonl",),
           _FLAN_FIELDS, _convert_flan, _convert_flan_v1, frozenset({"cot_zero_shot", "cot_few_shot"}),
           id_with_file=True, v1_files=("cot_zsopt.jsonl", "cot_fsopt.jsonl")),
    Source("flan_v2", "flan_v2_resampled_100k.jsonl (a FLAN v2 JSON Lines export) with inputs, targets",
           ("flan_v2_resampled_100k.jsonl", "*.jsonl"), _FLAN_FIELDS, _convert_flan, _convert_flan_v1,
           id_with_file=True),
    Source("dolly", "databricks-dolly-15k.jsonl with instruction, context, response, category",
           ("databricks-dolly-15k.jsonl", "*.jsonl"),
           {"instruction": _TEXT, "context": _OPTIONAL_TEXT, "response": _TEXT}, _convert_dolly, _convert_dolly_v1),
    Source("oasst1", "2023-04-12_oasst_ready.trees.jsonl message trees with prompt, replies",
           ("*oasst_ready.trees.jsonl", "*.trees.jsonl"), {"prompt": (dict,)}, _convert_oasst, _convert_oasst_v1,
           frozenset({"top_k_reply"})),
    Source("self_instruct", "all_instances_82K.jsonl with instruction, input, output",
           ("all_instances_82K.jsonl", "*.jsonl"), _INSTRUCTION_FIELDS, _convert_alpaca_style,
           _convert_alpaca_style_v1),
    Source("unnatural_instructions", "core_data.jsonl with instruction, instances[] of input, constraints, output",
           ("core_data.jsonl", "*.jsonl"), {"instruction": _TEXT, "instances": (list,)}, _convert_unnatural,
           _convert_unnatural_v1),
    Source("stanford_alpaca", "alpaca_data.json, a JSON array of instruction, input, output",
           ("alpaca_data.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style, _convert_alpaca_style_v1),
    Source("code_alpaca", "code_alpaca_20k.json, a JSON array of instruction, input, output",
           ("code_alpaca_20k.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style, _convert_alpaca_style_v1),
    Source("gpt4_alpaca", "alpaca_gpt4_data.json, a JSON array of instruction, input, output",
           ("alpaca_gpt4_data.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style, _convert_alpaca_style_v1),
    Source("baize", "*_chat_data.json, a JSON array of objects whose input holds a [|Human|]/[|AI|] transcript",
           ("*_chat_data.json",), {"input": _TEXT}, _convert_baize, _convert_baize_v1, id_with_file=True,
           v1_files=tuple(f"{name}_chat_data.json" for name in ("alpaca", "medical", "quora", "stackoverflow"))),
    Source("sharegpt", "ShareGPT JSON (sg_90k_part{1,2}_html_cleaned.json; v1 without --tokenizer: the already split "
           "sharegpt_html_cleaned_and_split.json): id, conversations[] of from, value",
           ("*.json",), {"conversations": (list,)}, _convert_sharegpt, _convert_sharegpt_v1,
           frozenset({"split_max_tokens", "tokenizer"}), v1_files=("sharegpt_html_cleaned_and_split.json",),
           v1_split_files=("sg_90k_part1_html_cleaned.json", "sg_90k_part2_html_cleaned.json")),
)}


_JSON_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", type(None): "null"}


def _check_fields(record: object, required: dict[str, tuple[type, ...]], raw: RawRecord, source: Source,
                  context: str = "") -> None:
    """Raise the "wrong file?" error when a record lacks the source's keys or has the wrong types."""
    prefix = f"{context}." if context else ""
    if not isinstance(record, dict):
        raise TuluError(f"{raw.where}: {prefix or 'record '}is {type(record).__name__}, not an object; "
                        f"expected {source.expected}; starts: {preview(raw.preview)}")
    missing = [name for name, types in required.items() if name not in record and type(None) not in types]
    if missing:
        found = ", ".join(sorted(record)[:8]) or "none"
        raise TuluError(f"{raw.where}: record does not match source '{source.name}': "
                        f"{prefix}{', '.join(missing)} missing (found keys: {found}); expected {source.expected}; "
                        f"starts: {preview(raw.preview)}")
    for name, types in required.items():
        if name in record and not isinstance(record[name], types):
            wanted = " or ".join(_JSON_TYPE_NAMES[kind] for kind in types)
            raise TuluError(f"{raw.where}: {prefix}{name} must be {wanted}, got {type(record[name]).__name__} "
                            f"(expected {source.expected}); starts: {preview(raw.preview)}")


# ---- super_ni: a folder, not a file ----------------------------------------------------------------------------


def _super_ni_listing(root: Path, style: Style) -> Path:
    """v1 trained on the cross-lingual task list (about 1.4k tasks, non-English ones included); clean on the
    English default list (about 756)."""
    return root / "splits" / ("xlingual" if style == "v1" else "default") / "train_tasks.txt"


def _super_ni_tasks(root: Path, style: Style, report: ConvertReport) -> list[tuple[str, str]]:
    listing = _super_ni_listing(root, style)
    if not listing.is_file():
        other = "clean" if style == "v1" else "v1"
        raise TuluError(f"{root}: not a natural-instructions folder for source 'super_ni' "
                        f"(no {listing.relative_to(root)}; --style {other} reads "
                        f"{_super_ni_listing(root, other).relative_to(root)})")
    tasks = []
    with listing.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            name = line.strip()
            if not name:
                continue
            if "_mmmlu_" in name:  # translated MMLU tasks would leak the MMLU evaluation (as open-instruct notes)
                report.skipped["super_ni: mmmlu task (evaluation leakage)"] += 1
                continue
            tasks.append((at(listing, number), name))
    return tasks


def _load_super_ni_task(root: Path, listed_at: str, name: str) -> dict:
    path = root / "tasks" / f"{name}.json"
    if not path.is_file():
        raise TuluError(f"{listed_at}: task {name!r} is listed but {path} does not exist")
    try:
        with path.open(encoding="utf-8") as handle:
            task = json.load(handle)
    except json.JSONDecodeError as exc:
        raise TuluError(f"{at(path, exc.lineno)}: not valid JSON ({json_error(exc)}); expected a natural-instructions "
                        f"task file") from None
    problems = _super_ni_task_problems(task)
    if problems:
        raise TuluError(f"{path}: not a natural-instructions task file for 'super_ni': {problems}")
    return task


def _super_ni_task_problems(task: object) -> str:
    if not isinstance(task, dict):
        return f"top level is {type(task).__name__}, expected an object"
    definition = task.get("Definition")
    if not (isinstance(definition, list) and definition and isinstance(definition[0], str)):
        return "Definition must be a non-empty list of strings"
    for key in ("Positive Examples", "Instances"):
        items = task.get(key)
        if not isinstance(items, list):
            return f"{key!r} must be a list"
        for number, item in enumerate(items):
            if not (isinstance(item, dict) and isinstance(item.get("input"), str) and "output" in item):
                return f"{key}[{number}] must be an object with input and output"
    for number, instance in enumerate(task["Instances"]):
        if not (isinstance(instance["output"], list) and all(isinstance(o, str) for o in instance["output"])):
            return f"Instances[{number}].output must be a list of strings"
    return ""


def _super_ni_examples(root: Path, run: _Run, on_task: Callable[[int], None] | None) -> Iterator[dict]:
    for listed_at, name in _super_ni_tasks(root, run.options.style, run.report):
        task = _load_super_ni_task(root, listed_at, name)
        run.report.records_read += 1
        where = f"{root / 'tasks' / name}.json"
        examples = _super_ni_task_v1(task, name, run) if run.v1 else _super_ni_task_clean(task, name, run)
        for example_id, messages in examples:
            record = _emit(run, example_id, messages, where)
            if record is not None:
                yield record
        if on_task is not None:
            on_task(1)


def _super_ni_task_clean(task: dict, name: str, run: _Run) -> Iterator[Example]:
    options = run.options
    rng = random.Random(f"{options.seed}:super_ni:{name}")
    wanted = options.zero_shot_per_task + options.few_shot_per_task
    instances = task["Instances"]
    instances = rng.sample(instances, wanted) if wanted < len(instances) else list(instances)
    definition = task["Definition"][0]
    for position, instance in enumerate(instances):
        if not instance["output"] or not instance["output"][0].strip():
            run.report.skipped["empty output"] += 1
            continue
        example_id = f"super_ni_{instance.get('id', f'{name}-{position}')}"
        if position < options.zero_shot_per_task:
            prompt = render_instruction(definition, instance["input"], options.seed, example_id)
        else:
            positives = task["Positive Examples"]
            shots = rng.sample(positives, options.n_few_shot) if options.n_few_shot < len(positives) else positives
            prompt = few_shot_prompt(definition, shots, instance["input"])
        yield example_id, [{"role": "user", "content": prompt},
                           {"role": "assistant", "content": instance["output"][0].strip()}]


def _super_ni_task_v1(task: dict, name: str, run: _Run) -> Iterator[Example]:
    """As v1: sample zero+few-shot instances from the shared generator, the first ones zero-shot with a random
    template, the rest few-shot with sampled positive examples; the first reference output, empty or not."""
    options, rng = run.options, run.rng
    wanted = options.zero_shot_per_task + options.few_shot_per_task
    instances = task["Instances"]
    instances = rng.sample(instances, wanted) if wanted < len(instances) else instances
    definition, positives = task["Definition"][0], task["Positive Examples"]
    for position, instance in enumerate(instances):
        example_id = f"super_ni_{instance.get('id', f'{name}-{position}')}"
        output = instance["output"][0] if instance["output"] else None
        if position < options.zero_shot_per_task:
            prompt, completion = render_instruction_v1(definition, instance["input"], output or "", rng)
        else:
            shots = rng.sample(positives, options.n_few_shot) if options.n_few_shot < len(positives) else positives
            prompt, completion = few_shot_prompt_v1(definition, shots, instance["input"]), (output or "").strip()
        if output is None:  # the reference stops with an IndexError here; the draws above keep the sequence
            run.report.skipped["super_ni: instance without any output (the reference stops here)"] += 1
            continue
        yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


# ---- the pipeline ---------------------------------------------------------------------------------------------


def get_source(name: str) -> Source:
    """Look a source up by name; an unknown one is an error with a suggestion."""
    if name in SOURCES:
        return SOURCES[name]
    close = get_close_matches(name, SOURCES, n=1)
    hint = f", did you mean {close[0]!r}?" if close else ""
    raise TuluError(f"unknown source {name!r}{hint} (known: {', '.join(SOURCES)})")


def input_files(source: Source, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> list[Path]:
    """The raw files to read: RAW_PATH itself, or the files of the directory that the source reads.

    In v1 a source with `v1_files` reads exactly those names, in the reference's order (ShareGPT: the split file,
    or with a tokenizer the two raw parts the reference split, so a folder holding all three is read once);
    otherwise the first glob of `patterns` that matches, sorted.
    """
    style = options.style
    path = Path(raw_path)
    if not path.exists():
        raise TuluError(f"{path}: not found (expected {source.expected})")
    if path.is_file():
        return [path]
    names = source.v1_split_files if options.split_budget is not None and source.v1_split_files else source.v1_files
    if style == "v1" and names:
        present = [path / name for name in names if (path / name).is_file()]
        if present:
            return present
    for pattern in source.patterns:
        matches = sorted(candidate for candidate in path.glob(pattern) if candidate.is_file())
        if matches:
            return matches
    raise TuluError(f"{path}: no file matching {' or '.join(source.patterns)} (expected {source.expected})")


_V1_ONLY = {"cot_zero_shot", "cot_few_shot"}


def _check_options(source: Source, options: ConvertOptions) -> None:
    if options.style not in STYLES:
        raise TuluError(f"--style must be one of {', '.join(STYLES)}, got {options.style!r}")
    defaults = ConvertOptions()
    for option in fields(ConvertOptions):
        owners = [s.name for s in SOURCES.values() if option.name in s.options]
        changed = getattr(options, option.name) != getattr(defaults, option.name)
        flag = "--" + option.name.replace("_", "-")
        if owners and changed and source.name not in owners:
            raise TuluError(f"{flag} only applies to source {' / '.join(owners)}, not {source.name!r}")
        if option.name in _V1_ONLY and changed and options.style != "v1":
            raise TuluError(f"{flag} only applies with --style v1 (clean converts each CoT file whole)")
    for name in ("max_examples", "top_k_reply"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise TuluError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("zero_shot_per_task", "few_shot_per_task", "n_few_shot", "cot_zero_shot", "cot_few_shot"):
        if getattr(options, name) < 0:
            raise TuluError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(options, name)}")
    if options.split_max_tokens is not None and options.tokenizer is None:
        raise TuluError("--split-max-tokens needs --tokenizer DIR (the tokenizer whose tokens are counted)")
    if options.split_max_tokens is not None and options.split_max_tokens < 16:
        raise TuluError(f"--split-max-tokens must be at least 16, got {options.split_max_tokens}")


def _token_counter(tokenizer_dir: str, *, with_special_tokens: bool) -> Callable[[list[str]], list[int]]:
    from tulu_lite.tokenizer import (
        load_tokenizer,  # transformers is slow to import; only sharegpt splits need it
    )

    tokenizer = load_tokenizer(tokenizer_dir)

    def count(texts: list[str]) -> list[int]:
        encoded = tokenizer(texts, add_special_tokens=with_special_tokens, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return count


def _emit(run: _Run, example_id: str, messages: Messages, where: str) -> dict | None:
    """The output record, validated (a converter bug must not ship); None for what v1 wrote but can't be trained."""
    if run.v1 and not any(message["role"] == "assistant" for message in messages):
        run.report.skipped["no assistant message (v1 wrote it; nothing to train on)"] += 1
        return None
    validate_messages(messages, f"{where} (converted by {run.source.name})")
    return {"dataset": run.source.name, "id": example_id, "messages": messages}


def _raw_records(path: Path, run: _Run, chunk_size: int, on_progress) -> Iterator[RawRecord]:
    """A raw file's records; v1's CoT draws its 50k + 50k sample first, as the reference did."""
    if run.v1 and run.source.name == "cot":
        few_shot = run.options.cot_few_shot
        if few_shot == 0:  # the reference reads cot_zsopt only `if num_few_shot_examples > 0` (its typo), so neither
            return iter(())
        cap = few_shot if "fsopt" in path.name else run.options.cot_zero_shot
        return read_sampled(path, run.source.expected, cap, run.rng, on_bytes=on_progress)
    return read_json_values(path, run.source.expected, chunk_size=chunk_size, on_bytes=on_progress)


def iter_converted(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions(), *,
                   report: ConvertReport | None = None, chunk_size: int = 1 << 20,
                   on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Stream every converted record of a raw release, in file order (no ``max_examples`` sampling).

    `on_progress` receives bytes read (tasks done for super_ni); `report` is filled in as records go by.
    """
    source = get_source(source_name)
    _check_options(source, options)
    report = report if report is not None else ConvertReport(source.name, [])
    report.style = options.style
    run = _Run(source, options, report, rng=random.Random(options.seed))
    if source.convert is None:  # super_ni reads a folder of task files
        root = Path(raw_path)
        if not root.is_dir():
            raise TuluError(f"{root}: expected the natural-instructions folder for source 'super_ni'")
        report.inputs = [str(root)]
        yield from _super_ni_examples(root, run, on_progress)
        return
    files = input_files(source, raw_path, options)
    report.inputs = [str(path) for path in files]
    if options.split_budget is not None:
        run.count_tokens = _token_counter(options.tokenizer, with_special_tokens=run.v1)
    convert_record = source.convert_v1 if run.v1 else source.convert
    for path in files:
        run.file_stem = path.name.split(".")[0]
        for raw in _raw_records(path, run, chunk_size, on_progress):
            _check_fields(raw.value, source.fields, raw, source)
            report.records_read += 1
            for example_id, messages in convert_record(raw, run):
                record = _emit(run, example_id, messages, raw.where)
                if record is not None:
                    yield record


def sample_examples(records: Iterator[dict], max_examples: int, seed: int, report: ConvertReport) -> Iterator[dict]:
    """Keep `max_examples` records by bottom-k on a seeded hash of their ids, in their original order.

    Memory holds at most `max_examples` records; the sample for k is a subset of the sample for k' > k.
    """
    heap: list[tuple[float, int, dict]] = []  # max-heap via negated keys: the k smallest keys survive
    seen = 0
    for order, record in enumerate(records):
        seen += 1
        key = -seeded_unit(seed, "sample", record["id"])
        if len(heap) < max_examples:
            heapq.heappush(heap, (key, -order, record))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, -order, record))
    report.sampled_out = seen - len(heap)
    for _, _, record in sorted(heap, key=lambda item: -item[1]):
        yield record


def meta_path(out: str | os.PathLike) -> Path:
    """Where the resolved settings of an output file go: ``x.jsonl`` -> ``x.meta.json``."""
    return Path(out).with_suffix(".meta.json")


def raw_inputs(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> list[Path]:
    """What a conversion reads: the raw files, or the natural-instructions folder for super_ni."""
    source = get_source(source_name)
    if source.convert is None:
        return [Path(raw_path)]
    return input_files(source, raw_path, options)


def convert(source_name: str, raw_path: str | os.PathLike, out: str | os.PathLike,
            options: ConvertOptions = ConvertOptions(), *, force: bool = False, chunk_size: int = 1 << 20,
            on_progress: Callable[[int], None] | None = None) -> ConvertReport:
    """Convert a raw release into a conversation JSONL file (atomic) plus ``*.meta.json`` with the settings.

    Refused before reading anything: an output that is one of the raw inputs, and an existing output without
    `force`.
    """
    _check_options(get_source(source_name), options)
    check_output(out, raw_inputs(source_name, raw_path, options), force=force, sidecars=[meta_path(out)])
    report = ConvertReport(get_source(source_name).name, [])
    records = iter_converted(source_name, raw_path, options, report=report, chunk_size=chunk_size,
                            on_progress=on_progress)
    if options.max_examples is not None:
        records = sample_examples(records, options.max_examples, options.seed, report)
    report.written = write_jsonl(records, out)
    write_json(meta_path(out), {"command": "convert", "source": report.source, "raw_path": str(raw_path),
                                "options": asdict(options), "report": report.to_json()})
    return report


def total_input_size(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> int:
    """Bytes to read (tasks for super_ni), for a progress bar."""
    source = get_source(source_name)
    if source.convert is None:
        listing = _super_ni_listing(Path(raw_path), options.style)
        if not listing.is_file():
            return 0
        return sum(1 for line in listing.open(encoding="utf-8") if line.strip() and "_mmmlu_" not in line)
    return sum(path.stat().st_size for path in input_files(source, raw_path, options))


def report_table(report: ConvertReport, out: str | os.PathLike) -> Table:
    """A rich table of what a conversion read, wrote, skipped and repaired."""
    table = Table(title=f"{report.source} (--style {report.style}) → {out}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("raw records read", f"{report.records_read:,}")
    for reason, count in sorted(report.skipped.items()):
        table.add_row(f"[yellow]skipped[/]: {escape(reason)}", f"{count:,}")
    for reason, count in sorted(report.repaired.items()):
        table.add_row(f"[cyan]repaired[/]: {escape(reason)}", f"{count:,}")
    if report.sampled_out:
        table.add_row("left out by --max-examples", f"{report.sampled_out:,}")
    table.add_section()
    table.add_row("[bold]examples written[/]", f"[bold]{report.written:,}[/]")
    return table
