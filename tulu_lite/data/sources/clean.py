"""``--style clean``: tulu-lite's own conversion of each source's records.

Templates come from tulu-lite's own set, picked by a hash of (seed, id), so a subsample keeps each example's prompt;
empty instructions and outputs are dropped (counted); ShareGPT roles are mapped and the turn order repaired instead
of whole conversations dropped; oasst1 keeps maximal paths only. super_ni's clean rules are in `super_ni`.
"""

from __future__ import annotations

from collections.abc import Iterator

from tulu_lite.data.raw import RawRecord, preview
from tulu_lite.data.sources.conversion import (
    Example,
    Messages,
    Run,
    check_fields,
    oasst_message,
    oasst_quality,
)
from tulu_lite.data.templates import render_instruction
from tulu_lite.errors import TuluError


def _example_id(raw: RawRecord, run: Run) -> str:
    if run.source.id_with_file:
        return f"{run.source.name}_{run.file_stem}_{raw.index}"
    return f"{run.source.name}_{raw.index}"


def _instruction_example(run: Run, example_id: str, instruction: str, input_text: str | None,
                         output: str) -> Iterator[Example]:
    if not instruction.strip():
        run.report.skipped["empty instruction"] += 1
        return
    if not output.strip():
        run.report.skipped["empty output"] += 1
        return
    prompt = render_instruction(instruction, input_text, run.options.seed, example_id)
    yield example_id, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output.strip()}]


def convert_alpaca_style(raw: RawRecord, run: Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_example(run, _example_id(raw, run), record["instruction"], record.get("input"),
                                    record["output"])


def convert_dolly(raw: RawRecord, run: Run) -> Iterator[Example]:
    record = raw.value
    yield from _instruction_example(run, _example_id(raw, run), record["instruction"], record.get("context"),
                                    record["response"])


def convert_flan(raw: RawRecord, run: Run) -> Iterator[Example]:
    # FLAN v2 exports are already templated prompts: inputs/targets go in as they are.
    record = raw.value
    if not record["targets"].strip():
        run.report.skipped["empty output"] += 1
        return
    yield _example_id(raw, run), [{"role": "user", "content": record["inputs"].strip()},
                                  {"role": "assistant", "content": record["targets"].strip()}]


def convert_unnatural(raw: RawRecord, run: Run) -> Iterator[Example]:
    instruction = raw.value["instruction"]
    for number, instance in enumerate(raw.value["instances"]):
        check_fields(instance, {"input": (str,), "output": (str,)}, raw, run.source, f"instances[{number}]")
        constraints = instance.get("constraints") or ""
        if constraints.strip().lower() not in ("", "none", "none."):
            full_instruction = instruction.strip() + "\n" + constraints.strip()
        else:
            full_instruction = instruction
        example_id = f"{run.source.name}_{raw.index}_{number}"
        yield from _instruction_example(run, example_id, full_instruction, instance["input"], instance["output"])


def convert_baize(raw: RawRecord, run: Run) -> Iterator[Example]:
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


def _oasst_children(node: dict, top_k: int | None, run: Run) -> list[dict]:
    replies = node.get("replies") or []
    alive = [child for child in replies if isinstance(child, dict) and not child.get("deleted", False)]
    if len(alive) < len(replies):
        run.report.skipped["oasst1: deleted message (subtree dropped)"] += len(replies) - len(alive)
    if top_k is None:
        return alive
    # Messages without a quality label count as 0.0, as in open-instruct; sorted() is stable, so ties keep
    # the release order.
    return sorted(alive, key=lambda child: -oasst_quality(child))[:top_k]


def _oasst_paths(node: dict, prefix: Messages, raw: RawRecord, run: Run) -> Iterator[Example]:
    """Every maximal path through `node` that ends with an assistant reply (a dangling prompter turn is cut)."""
    messages = [*prefix, oasst_message(node, raw, run)]
    role = node["role"]
    emitted = False
    for child in _oasst_children(node, run.options.top_k_reply, run):
        for example in _oasst_paths(child, messages, raw, run):
            emitted = True
            yield example
    if role == "assistant" and not emitted:
        yield f"{run.source.name}_{node.get('message_id', raw.index)}", messages


def convert_oasst(raw: RawRecord, run: Run) -> Iterator[Example]:
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


def _sharegpt_messages(raw: RawRecord, run: Run) -> Messages | None:
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


def _sharegpt_trim(messages: Messages, run: Run) -> Messages | None:
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


def convert_sharegpt(raw: RawRecord, run: Run) -> Iterator[Example]:
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
