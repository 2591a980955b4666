"""Converters from the raw TÜLU source releases to the conversation format.

Each source is read the way its authors release it (JSON Lines, one big JSON array, the natural-instructions
folder, OpenAssistant message trees) and streamed: JSON Lines line by line, JSON arrays element by element with an
incremental decoder, so a multi-GB download never sits in memory. Every output line carries ``"dataset"`` (the
source name) and a stable ``"id"`` derived from the raw record (its own id, else its position in the file), so the
same raw file always gives the same ids whatever the seed or ``max_examples``.

Randomness is a function of ``(seed, id)`` only: the prompt template an instruction example gets, and whether it
survives ``max_examples`` (bottom-k sampling on a seeded hash), do not depend on the other records. The same seed
therefore gives byte-identical output, and a smaller sample is a subset of a larger one.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import heapq
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from difflib import get_close_matches
from pathlib import Path
from typing import Any, NamedTuple

from rich.markup import escape
from rich.table import Table

from tulu_lite.data.conversations import validate_messages, write_conversations
from tulu_lite.errors import TuluError, at
from tulu_lite.outputs import write_json

Messages = list[dict]
Example = tuple[str, Messages]  # (id, messages)

# ---- prompt templates ----------------------------------------------------------------------------------------
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


# ---- options and report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that changes a conversion's output (saved beside the output as ``*.meta.json``)."""

    seed: int = 42
    max_examples: int | None = None  # keep this many output examples (seeded bottom-k sample), None = all
    top_k_reply: int | None = None  # oasst1: keep the K best replies by quality at every node, None = all
    zero_shot_per_task: int = 60  # super_ni: zero-shot instances per task (open-instruct's default)
    few_shot_per_task: int = 20  # super_ni: few-shot instances per task
    n_few_shot: int = 2  # super_ni: positive examples shown in a few-shot prompt
    split_max_tokens: int | None = None  # sharegpt: split conversations to this token budget (needs tokenizer)
    tokenizer: str | None = None  # sharegpt: tokenizer directory used to count tokens for splitting


@dataclass
class ConvertReport:
    """What a conversion read, wrote, skipped and repaired (reason -> count)."""

    source: str
    inputs: list[str]
    records_read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    sampled_out: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "skipped": dict(self.skipped), "repaired": dict(self.repaired)}


# ---- reading raw files ----------------------------------------------------------------------------------------


class RawRecord(NamedTuple):
    """One top-level JSON value of a raw file: where it is, its 0-based position, the value and its first chars."""

    where: str
    index: int
    value: Any
    preview: str


def preview(text: str, limit: int = 70) -> str:
    """The start of a line, on one line, for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _first_char(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def read_json_values(path: str | os.PathLike, expected: str, *, chunk_size: int = 1 << 20,
                     on_bytes: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """Stream the top-level records of a JSON array file or a JSON Lines file (detected from the first char).

    `expected` names the source and file the caller wanted; it goes into every parse error.
    """
    path = Path(path)
    first = _first_char(path)
    if first == "[":
        yield from _read_array(path, expected, chunk_size, on_bytes)
    elif first == "{":
        yield from _read_lines(path, expected, on_bytes)
    elif not first:
        raise TuluError(f"{path}: file is empty (expected {expected})")
    else:
        raise TuluError(f"{at(path, 1)}: not JSON or JSON Lines (expected {expected}); starts: {first!r}")


def _read_lines(path: Path, expected: str, on_bytes: Callable[[int], None] | None) -> Iterator[RawRecord]:
    index = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if on_bytes is not None:
                on_bytes(len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TuluError(f"{at(path, number)}: not UTF-8 text ({exc.reason}; expected {expected})") from None
            if number == 1:
                text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark some editors add
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TuluError(f"{at(path, number)}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                f"expected {expected}; line starts: {preview(text)}") from None
            yield RawRecord(at(path, number), index, value, text[:200])
            index += 1


class _ArrayScanner:
    """Walks a top-level JSON array in fixed-size chunks, so memory holds one chunk plus the current element."""

    _SPACE = re.compile(r"[ \t\r\n]*")

    def __init__(self, handle, chunk_size: int, on_bytes: Callable[[int], None] | None):
        self.handle, self.chunk_size, self.on_bytes = handle, chunk_size, on_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.line_base = 1  # line number of buf[0]
        self.line_cursor = (0, 1)  # (offset in buf, its line), so line lookups never rescan the buffer

    def fill(self) -> bool:
        data = self.handle.read(self.chunk_size)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        if not data:
            self.buf += self.decoder.decode(b"", final=True)
            self.eof = True
            return False
        self.buf += self.decoder.decode(data)
        return True

    def compact(self) -> None:
        if self.pos > self.chunk_size:
            line = self.line_at(self.pos)
            self.buf, self.pos = self.buf[self.pos:], 0
            self.line_base, self.line_cursor = line, (0, line)

    def line_at(self, offset: int) -> int:
        start, line = self.line_cursor
        if offset < start:
            start, line = 0, self.line_base
        line += self.buf.count("\n", start, offset)
        self.line_cursor = (offset, line)
        return line

    def skip_space(self) -> str:
        """Advance past whitespace and return the next char ('' at end of file)."""
        while True:
            self.pos = self._SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def decode_value(self, decoder: json.JSONDecoder) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.fill():  # the element may just be cut by the chunk boundary
                    continue
                raise exc
            self.pos = end
            return value


def _read_array(path: Path, expected: str, chunk_size: int,
                on_bytes: Callable[[int], None] | None) -> Iterator[RawRecord]:
    decoder = json.JSONDecoder()
    with path.open("rb") as handle:
        scan = _ArrayScanner(handle, chunk_size, on_bytes)
        scan.skip_space()
        if scan.buf.startswith("\ufeff", scan.pos):
            scan.pos += 1
            scan.skip_space()
        scan.pos += 1  # the "[" read_json_values already saw
        index = 0
        while True:
            scan.compact()
            char = scan.skip_space()
            if char == "]" and index == 0:
                scan.pos += 1
                break
            start, line = scan.pos, scan.line_at(scan.pos)
            where = at(path, line)
            try:
                value = scan.decode_value(decoder)
            except json.JSONDecodeError as exc:
                bad_line = scan.line_at(exc.pos)
                raise TuluError(f"{at(path, bad_line)}: not valid JSON ({exc.msg}); expected {expected}; "
                                f"element {index} starts: {preview(scan.buf[start:start + 200])}") from None
            yield RawRecord(where, index, value, scan.buf[start:start + 200])
            index += 1
            char = scan.skip_space()
            if char == ",":
                scan.pos += 1
                if scan.skip_space() == "]":
                    raise TuluError(f"{at(path, scan.line_at(scan.pos))}: trailing comma before ']' "
                                    f"(not valid JSON; expected {expected})")
                continue
            if char == "]":
                scan.pos += 1
                break
            got = "end of file" if not char else repr(char)
            raise TuluError(f"{at(path, scan.line_at(scan.pos))}: expected ',' or ']' after element {index - 1}, "
                            f"got {got} (truncated download? expected {expected})")
        if scan.skip_space():
            raise TuluError(f"{at(path, scan.line_at(scan.pos))}: text after the closing ']' (expected {expected})")


# ---- the sources ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """State shared by one conversion: options, report, the current file and the optional splitter."""

    source: Source
    options: ConvertOptions
    report: ConvertReport
    file_stem: str = ""
    count_tokens: Callable[[list[str]], list[int]] | None = None


@dataclass(frozen=True)
class Source:
    """One row of the sources table: what the authors release and how a record becomes examples."""

    name: str
    release: str  # the raw files as released, for help and error messages
    patterns: tuple[str, ...]  # globs used when RAW_PATH is a directory
    fields: dict[str, tuple[type, ...]]  # required top-level keys of a record and their JSON types
    convert: Callable[[RawRecord, _Run], Iterator[Example]] | None
    options: frozenset[str] = frozenset()  # ConvertOptions fields that only this source uses
    id_with_file: bool = False  # ids include the file stem (sources usually converted from several files)

    @property
    def expected(self) -> str:
        return f"the '{self.name}' format: {self.release}"


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
    yield from _instruction_example(run, _example_id(raw, run), record["instruction"], record["context"],
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


def _oasst_paths(node: dict, prefix: Messages, raw: RawRecord, run: _Run) -> Iterator[Example]:
    """Every maximal path through `node` that ends with an assistant reply (a dangling prompter turn is cut)."""
    role, text = node.get("role"), node.get("text")
    if role not in _OASST_ROLES or not isinstance(text, str):
        raise TuluError(f"{raw.where}: message {node.get('message_id', '?')!r}: expected role prompter|assistant "
                        f"and a text string (expected {run.source.expected}); got role {role!r}")
    messages = [*prefix, {"role": _OASST_ROLES[role], "content": text}]
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
    parts, dropped = split_by_budget(messages, costs, run.options.split_max_tokens)
    if dropped:
        run.report.skipped["sharegpt: exchange longer than --split-max-tokens"] += dropped
    if len(parts) > 1:
        run.report.repaired["sharegpt: conversation split into parts"] += 1
    for number, part in enumerate(parts):
        yield (base_id if len(parts) == 1 else f"{base_id}_part{number}"), part


_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_INSTRUCTION_FIELDS = {"instruction": _TEXT, "input": _OPTIONAL_TEXT, "output": _TEXT}

SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("super_ni", "the natural-instructions repository folder: splits/default/train_tasks.txt, tasks/*.json",
           (), {}, None, frozenset({"zero_shot_per_task", "few_shot_per_task", "n_few_shot"})),
    Source("cot", "cot_zsopt.jsonl / cot_fsopt.jsonl with inputs, targets", ("*.jsonl",),
           {"inputs": _TEXT, "targets": _TEXT}, _convert_flan, id_with_file=True),
    Source("flan_v2", "a FLAN v2 JSON Lines export with inputs, targets", ("*.jsonl",),
           {"inputs": _TEXT, "targets": _TEXT}, _convert_flan, id_with_file=True),
    Source("dolly", "databricks-dolly-15k.jsonl with instruction, context, response, category",
           ("databricks-dolly-15k.jsonl", "*.jsonl"),
           {"instruction": _TEXT, "context": _OPTIONAL_TEXT, "response": _TEXT}, _convert_dolly),
    Source("oasst1", "2023-04-12_oasst_ready.trees.jsonl message trees with prompt, replies",
           ("*oasst_ready.trees.jsonl", "*.trees.jsonl"), {"prompt": (dict,)}, _convert_oasst,
           frozenset({"top_k_reply"})),
    Source("self_instruct", "all_instances_82K.jsonl with instruction, input, output",
           ("all_instances_82K.jsonl", "*.jsonl"), _INSTRUCTION_FIELDS, _convert_alpaca_style),
    Source("unnatural_instructions", "core_data.jsonl with instruction, instances[] of input, constraints, output",
           ("core_data.jsonl", "*.jsonl"), {"instruction": _TEXT, "instances": (list,)}, _convert_unnatural),
    Source("stanford_alpaca", "alpaca_data.json, a JSON array of instruction, input, output",
           ("alpaca_data.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style),
    Source("code_alpaca", "code_alpaca_20k.json, a JSON array of instruction, input, output",
           ("code_alpaca_20k.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style),
    Source("gpt4_alpaca", "alpaca_gpt4_data.json, a JSON array of instruction, input, output",
           ("alpaca_gpt4_data.json",), _INSTRUCTION_FIELDS, _convert_alpaca_style),
    Source("baize", "*_chat_data.json, a JSON array of objects whose input holds a [|Human|]/[|AI|] transcript",
           ("*_chat_data.json",), {"input": _TEXT}, _convert_baize, id_with_file=True),
    Source("sharegpt", "ShareGPT JSON (e.g. sg_90k_part1_html_cleaned.json): id, conversations[] of from, value",
           ("*.json",), {"conversations": (list,)}, _convert_sharegpt,
           frozenset({"split_max_tokens", "tokenizer"})),
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


def _super_ni_tasks(root: Path, report: ConvertReport) -> list[tuple[str, str]]:
    listing = root / "splits" / "default" / "train_tasks.txt"
    if not listing.is_file():
        raise TuluError(f"{root}: not a natural-instructions folder for source 'super_ni' "
                        f"(no splits/default/train_tasks.txt)")
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
        raise TuluError(f"{at(path, exc.lineno)}: not valid JSON ({exc.msg}); expected a natural-instructions "
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


def _few_shot_prompt(definition: str, exemplars: list[dict], input_text: str) -> str:
    shots = "\n\n".join(f"Example input: {shot['input'].strip()}\nExample output: {str(shot['output']).strip()}"
                        for shot in exemplars)
    return f"{definition.strip()}\n\n{shots}\n\nNow the instance to solve.\nInput: {input_text.strip()}\nOutput:"


def _super_ni_examples(root: Path, run: _Run, on_task: Callable[[int], None] | None) -> Iterator[dict]:
    options = run.options
    for listed_at, name in _super_ni_tasks(root, run.report):
        task = _load_super_ni_task(root, listed_at, name)
        run.report.records_read += 1
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
                prompt = _few_shot_prompt(definition, shots, instance["input"])
            messages = [{"role": "user", "content": prompt},
                        {"role": "assistant", "content": instance["output"][0].strip()}]
            yield _record(run, example_id, messages, f"{root / 'tasks' / name}.json")
        if on_task is not None:
            on_task(1)


# ---- the pipeline ---------------------------------------------------------------------------------------------


def get_source(name: str) -> Source:
    """Look a source up by name; an unknown one is an error with a suggestion."""
    if name in SOURCES:
        return SOURCES[name]
    close = get_close_matches(name, SOURCES, n=1)
    hint = f", did you mean {close[0]!r}?" if close else ""
    raise TuluError(f"unknown source {name!r}{hint} (known: {', '.join(SOURCES)})")


def input_files(source: Source, raw_path: str | os.PathLike) -> list[Path]:
    """The raw files to read: RAW_PATH itself, or the files in the directory that match the source's globs."""
    path = Path(raw_path)
    if not path.exists():
        raise TuluError(f"{path}: not found (expected {source.expected})")
    if path.is_file():
        return [path]
    for pattern in source.patterns:
        matches = sorted(candidate for candidate in path.glob(pattern) if candidate.is_file())
        if matches:
            return matches
    raise TuluError(f"{path}: no file matching {' or '.join(source.patterns)} (expected {source.expected})")


def _check_options(source: Source, options: ConvertOptions) -> None:
    defaults = ConvertOptions()
    for option in fields(ConvertOptions):
        owners = [s.name for s in SOURCES.values() if option.name in s.options]
        changed = getattr(options, option.name) != getattr(defaults, option.name)
        if owners and changed and source.name not in owners:
            flag = "--" + option.name.replace("_", "-")
            raise TuluError(f"{flag} only applies to source {' / '.join(owners)}, not {source.name!r}")
    if options.max_examples is not None and options.max_examples < 1:
        raise TuluError(f"--max-examples must be at least 1, got {options.max_examples}")
    if options.top_k_reply is not None and options.top_k_reply < 1:
        raise TuluError(f"--top-k-reply must be at least 1, got {options.top_k_reply}")
    if options.split_max_tokens is not None and options.tokenizer is None:
        raise TuluError("--split-max-tokens needs --tokenizer DIR (the tokenizer whose tokens are counted)")
    if options.split_max_tokens is not None and options.split_max_tokens < 16:
        raise TuluError(f"--split-max-tokens must be at least 16, got {options.split_max_tokens}")


def _token_counter(tokenizer_dir: str) -> Callable[[list[str]], list[int]]:
    from tulu_lite.tokenizer import load_tokenizer  # transformers is slow to import; only sharegpt splits need it

    tokenizer = load_tokenizer(tokenizer_dir)

    def count(texts: list[str]) -> list[int]:
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return count


def _record(run: _Run, example_id: str, messages: Messages, where: str) -> dict:
    validate_messages(messages, f"{where} (converted by {run.source.name})")  # a converter bug must not ship
    return {"dataset": run.source.name, "id": example_id, "messages": messages}


def iter_converted(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions(), *,
                   report: ConvertReport | None = None, chunk_size: int = 1 << 20,
                   on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Stream every converted record of a raw release, in file order (no sampling).

    `on_progress` receives bytes read (tasks done for super_ni); `report` is filled in as records go by.
    """
    source = get_source(source_name)
    _check_options(source, options)
    report = report if report is not None else ConvertReport(source.name, [])
    if source.convert is None:  # super_ni reads a folder of task files
        root = Path(raw_path)
        if not root.is_dir():
            raise TuluError(f"{root}: expected the natural-instructions folder for source 'super_ni'")
        report.inputs = [str(root)]
        yield from _super_ni_examples(root, _Run(source, options, report), on_progress)
        return
    files = input_files(source, raw_path)
    report.inputs = [str(path) for path in files]
    run = _Run(source, options, report)
    if options.split_max_tokens is not None:
        run.count_tokens = _token_counter(options.tokenizer)
    for path in files:
        run.file_stem = path.name.split(".")[0]
        for raw in read_json_values(path, source.expected, chunk_size=chunk_size, on_bytes=on_progress):
            _check_fields(raw.value, source.fields, raw, source)
            report.records_read += 1
            for example_id, messages in source.convert(raw, run):
                yield _record(run, example_id, messages, raw.where)


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


def convert(source_name: str, raw_path: str | os.PathLike, out: str | os.PathLike,
            options: ConvertOptions = ConvertOptions(), *, chunk_size: int = 1 << 20,
            on_progress: Callable[[int], None] | None = None) -> ConvertReport:
    """Convert a raw release into a conversation JSONL file (atomic) plus ``*.meta.json`` with the settings."""
    report = ConvertReport(get_source(source_name).name, [])
    records = iter_converted(source_name, raw_path, options, report=report, chunk_size=chunk_size,
                            on_progress=on_progress)
    if options.max_examples is not None:
        records = sample_examples(records, options.max_examples, options.seed, report)
    report.written = write_conversations(records, out)
    write_json(meta_path(out), {"command": "convert", "source": report.source, "raw_path": str(raw_path),
                                "options": asdict(options), "report": report.to_json()})
    return report


def total_input_size(source_name: str, raw_path: str | os.PathLike) -> int:
    """Bytes to read (tasks for super_ni), for a progress bar."""
    source = get_source(source_name)
    if source.convert is None:
        root = Path(raw_path)
        listing = root / "splits" / "default" / "train_tasks.txt"
        if not listing.is_file():
            return 0
        return sum(1 for line in listing.open(encoding="utf-8") if line.strip() and "_mmmlu_" not in line)
    return sum(path.stat().st_size for path in input_files(source, raw_path))


def report_table(report: ConvertReport, out: str | os.PathLike) -> Table:
    """A rich table of what a conversion read, wrote, skipped and repaired."""
    table = Table(title=f"{report.source} → {out}")
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
