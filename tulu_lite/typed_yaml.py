"""Typed YAML: read a YAML file safely, validate it with a pydantic model, and report every problem at its line.

Shared by everything configured from YAML (recipes in `tulu_lite.recipe`, mixtures in `tulu_lite.data.mix`) and by
the eval settings: `read_yaml` (safe load plus the line of every key, with a bound on alias expansion),
`validation_problems` (pydantic's errors in plain words, with "did you mean") and `format_problems` (one line per
problem, ``file:line: dotted.key: what``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tulu_lite.errors import TuluError, at, first_line


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a YAML document: the key path it is about, e.g. ``("sources", 2, "fraction")``, and what.

    `line` pins it to a line when that is not simply where its key is (a repeated key); `origin` replaces the
    ``file:line`` prefix for a problem that is not in the file (``--set`` for command-line overrides).
    """

    loc: tuple
    what: str
    line: int | None = None
    origin: str | None = None


def read_yaml(path: Path, kind: str, model: type[BaseModel]) -> tuple[dict, dict[tuple, int], list[Problem]]:
    """Safe-load a YAML mapping; return it, the line of every key path in it, and its repeated keys as problems.

    What stops all further checking raises `TuluError` at once: a missing file, text that is not UTF-8 or not YAML
    (Python tags included: the safe loader refuses them), aliases that expand too far or into themselves, nesting
    too deep, a top level that is not a mapping. `kind` names the file in those messages ("recipe"); `model` is
    what it should hold, to list the keys it expects.
    """
    if not path.is_file():
        raise TuluError(f"{path}: {kind} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TuluError(f"{path}: not UTF-8 text ({exc.reason})") from None
    root, data = load_yaml_text(text, str(path))
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise TuluError(f"{at(path, 1)}: a {kind} must be a mapping with keys {', '.join(model.model_fields)}; "
                        f"got {got}")
    lines: dict[tuple, int] = {}
    repeated: list[Problem] = []
    _index_lines(root, (), lines, repeated)
    return data, lines, repeated


# Anchors and aliases share one node between several places, and everything downstream (the line index,
# validation, the values quoted in messages, the saved recipe) walks the document with every alias expanded: ten
# lines of nested aliases ("billion laughs") expand to 10^9 values and exhaust memory. Aliases stay allowed
# (`<<: *defaults` is handy in a mixture) as long as what they add stays small; a recipe has ~50 values.
MAX_ALIAS_VALUES = 10_000


def load_yaml_text(text: str, where: str) -> tuple[yaml.Node | None, object]:
    """Compose and construct one YAML document with the safe loader, refusing alias bombs and recursive aliases.

    Returns the root node (for line numbers) and the data. `where` prefixes every error (a file path, or
    ``--set key``). Raises `TuluError`.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()  # parsed once: the nodes give the lines, the constructed data the values
        if root is not None:
            _check_aliases(root, where)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise TuluError(f"{at(where, line)}: not valid YAML ({problem})") from None
    except RecursionError:
        line = loader.get_mark().line + 1
        raise TuluError(f"{at(where, line)}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()
    return root, data


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_aliases(root: yaml.Node, where: str) -> None:
    """Refuse a document whose aliases add more than MAX_ALIAS_VALUES values, or refer to what contains them."""
    distinct = _expanded_sizes(root, where, cap=None)
    sizes = _expanded_sizes(root, where, cap=len(distinct) + MAX_ALIAS_VALUES)
    if sizes[id(root)] <= len(distinct) + MAX_ALIAS_VALUES:
        return
    line = root.start_mark.line + 1
    if isinstance(root, yaml.MappingNode):  # point at the first top-level key whose value is the bomb
        line = next((key.start_mark.line + 1 for key, value in root.value
                     if sizes[id(value)] > MAX_ALIAS_VALUES), line)
    raise TuluError(f"{at(where, line)}: YAML aliases expand this document by more than {MAX_ALIAS_VALUES:,} values "
                    f"(an alias bomb?); write the values out instead")


def _expanded_sizes(root: yaml.Node, where: str, cap: int | None) -> dict[int, int]:
    """id(node) -> how many values it holds with its aliases expanded (at most `cap`), for every distinct node.

    With `cap=None` each node counts once (the dict's length is the number of distinct nodes). Iterative, so a
    deep document cannot exhaust the stack; an alias inside its own anchor is an error.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            on_path.discard(id(node))
            total = 1 + (sum(sizes[id(child)] for child in _children(node)) if cap is not None else 0)
            sizes[id(node)] = total if cap is None else min(total, cap + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise TuluError(f"{at(where, node.start_mark.line + 1)}: a YAML alias refers to the anchor that "
                            f"contains it (a recursive value)")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes


def _index_lines(node: yaml.Node, prefix: tuple, lines: dict[tuple, int], repeated: list[Problem]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key, line = (*prefix, key_node.value), key_node.start_mark.line + 1
            if key in lines:  # safe_load silently keeps the last duplicate; a config should not depend on that
                repeated.append(Problem(key, "duplicate key", line=line))
            lines[key] = line
            _index_lines(value_node, key, lines, repeated)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*prefix, index)] = item.start_mark.line + 1
            _index_lines(item, (*prefix, index), lines, repeated)


def validation_problems(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors for `model` in plain words; an unknown key gets a "did you mean" (a near name, or the
    section that has that key)."""
    return [Problem(tuple(item["loc"]), _what(item, model)) for item in error.errors()]


def format_problems(path: str | os.PathLike, lines: dict[tuple, int], problems: Sequence[Problem]) -> str:
    """The `TuluError` message. One problem is one line ``file:line: dotted.key: what``; several are a first line
    ``file: N problems:`` and one indented line each, in file order (those not from the file first)."""
    ordered = sorted(problems, key=lambda problem: -1 if problem.origin else (problem_line(problem, lines) or 0))
    rendered = [_render(problem, path, lines) for problem in ordered]
    if len(rendered) == 1:
        return rendered[0]
    return f"{path}: {len(rendered)} problems:\n" + "\n".join(f"  {line}" for line in rendered)


def _what(item: dict, model: type[BaseModel]) -> str:
    kind = item["type"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a section (mapping), got {_show(item['input'])}"
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(tuple(item['loc']), model)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(item["ctx"]["error"]) if "ctx" in item else item["msg"]
    return f"{_lower_first(item['msg'])}, got {_show(item['input'])}"


def _suggest(loc: tuple, root: type[BaseModel]) -> str:
    """' (did you mean 'x'?)' for an unknown key: a close sibling, or the same name in another section."""
    owner = _model_at(root, loc[:-1])
    key = str(loc[-1])
    if owner is not None:
        close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{dotted((*loc[:-1], close[0]))}'?)"
    section = _section_with(root, key)
    if section is not None:
        return f" (did you mean '{dotted((*section, key))}'?)"
    if owner is not None:
        return f" (expected one of: {', '.join(owner.model_fields)})"
    return ""


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model whose keys are expected at `loc` (list indices pass through to the item model), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _section_class(model.model_fields[part].annotation)
    return model


def _section_with(root: type[BaseModel], key: str) -> tuple | None:
    """The path of the nearest section (breadth first, not inside lists) that has `key`."""
    queue: list[tuple[tuple, type[BaseModel]]] = [((), root)]
    while queue:
        path, model = queue.pop(0)
        if key in model.model_fields:
            return path
        for name, field in model.model_fields.items():
            section = _section_class(field.annotation, in_lists=False)
            if section is not None:
                queue.append(((*path, name), section))
    return None


def _section_class(annotation: Any, *, in_lists: bool = True) -> type[BaseModel] | None:
    """The model a field holds: ``X``, ``X | None``, or (with `in_lists`) ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list and not in_lists:
        return None
    for arg in get_args(annotation):
        found = _section_class(arg, in_lists=in_lists)
        if found is not None:
            return found
    return None


def problem_line(problem: Problem, lines: dict[tuple, int]) -> int | None:
    """The problem's line: its own, else that of its key or of the nearest enclosing key the file has."""
    if problem.line is not None:
        return problem.line
    for end in range(len(problem.loc), 0, -1):
        if problem.loc[:end] in lines:
            return lines[problem.loc[:end]]
    return None


def _render(problem: Problem, path: str | os.PathLike, lines: dict[tuple, int]) -> str:
    key = dotted(problem.loc) or "(top level)"
    if problem.origin:
        return f"{problem.origin} {key}: {problem.what}"
    return f"{at(path, problem_line(problem, lines))}: {key}: {problem.what}"


def dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."  # the message stays one readable line


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
