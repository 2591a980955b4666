"""Recipes: the typed, validated YAML that fully describes one training run.

A recipe maps 1:1 onto `Recipe`. Every default lives on these classes. `load_recipe` reads the file with a safe YAML
loader, applies ``--set key=value`` overrides, and reports *all* problems at once (unknown keys with a "did you
mean", wrong types, out-of-range values), each prefixed with ``file:line`` where the YAML has that key.

Paths in a recipe (``model.name_or_path`` when it is a local directory, ``model.tokenizer``, the local entries of
``data.train_files`` and ``data.eval_files``, ``data.mixture``, ``output_dir``) are relative to the recipe file; paths
given with ``--set`` are relative to the current directory. Both are made absolute on load, so the saved recipe
(`save_recipe`) reruns from anywhere. Hub datasets (``hf:ID``, ``{hub: ID}``) stay as they are.

The generic part, "a YAML file validated by a pydantic model, every problem reported at once", is here too and is
what mixtures (`tulu_lite.data.mix`) and the eval settings use: `read_yaml` (safe load plus the line of every key),
`validation_problems` (pydantic's errors in plain words, with "did you mean") and `format_problems`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)

from tulu_lite.errors import TuluError, at
from tulu_lite.outputs import atomic_file

TINY_LLAMA_NAME = "tiny-llama"  # same value as tulu_lite.model.TINY_LLAMA_NAME (kept torch-free here)
# What a Hugging Face hub id can look like ("gpt2", "huggyllama/llama-7b"); anything else is a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
# transformers' attention implementations (modeling_utils.AttentionInterface); "auto" picks the fastest exact one.
AttnImplementation = Literal[
    "auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention"
]


class _Section(BaseModel):
    # allow_inf_nan=False: `--set training.epochs=.inf` must be a one-line error, not an OverflowError mid-setup.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TinyModelConfig(_Section):
    """Shape of the embedded tiny LLaMA (only for ``name_or_path: tiny-llama``); the seed makes it reproducible."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    seed: int = 0


class ModelConfig(_Section):
    name_or_path: str
    # "auto": bfloat16 on a GPU that has it natively, float16 on older GPUs, float32 on CPU (model.resolve_dtype).
    dtype: Dtype = "auto"
    # "auto": flash-attention when installed and the GPU and dtype allow it, else sdpa (model.choose_attention).
    attn_implementation: AttnImplementation = "auto"
    chat_template: Literal["tulu", "native"] = "tulu"
    # Tokenizer directory; None means the model's own (or, for tiny-llama, the bundled LLaMA tokenizer).
    tokenizer: Path | None = None
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    # Safety: never run code from a model repo, never unpickle weights, unless the recipe says so.
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == TINY_LLAMA_NAME

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer is loaded from."""
        if self.tokenizer is not None:
            return str(self.tokenizer)
        if self.is_tiny:
            from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER

            return str(BUNDLED_LLAMA_TOKENIZER)
        return self.name_or_path


class QuantizationConfig(_Section):
    """4-bit loading through bitsandbytes (QLoRA). ``compute_dtype: auto`` is resolved like ``model.dtype``."""

    load_in_4bit: Literal[True] = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Dtype = "auto"


class LoraConfig(_Section):
    r: int = Field(64, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR), min_length=1)


HUB_PREFIX = "hf:"


class DataSource(_Section):
    """Where conversations come from, and which columns hold them.

    Exactly one of `path` (a conversation JSONL file, a JSON or Parquet file, a ``save_to_disk`` folder, a dataset
    repository folder) or `hub` (a Hugging Face dataset id). A plain string is a path, ``hf:ID`` (or
    ``hf:ID:SPLIT``) a hub dataset. Rows need a list of turns in column `messages`; a turn's role and text are read
    from its keys `role` and `content`, and `roles` renames role values (e.g. ShareGPT's ``human``/``gpt``).
    """

    path: Path | None = None
    hub: str | None = Field(None, min_length=1)
    split: str = "train"  # for folders holding several splits, and the hub
    subset: str | None = None  # the hub dataset's configuration name (load_dataset's `name`)
    revision: str | None = None
    messages: str = "messages"
    role: str = "role"
    content: str = "content"
    roles: dict[str, Literal["system", "user", "assistant"]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return {"path": value}
        if isinstance(value, str):
            if not value.startswith(HUB_PREFIX):
                return {"path": value}
            hub, _, split = value[len(HUB_PREFIX):].partition(":")
            return {"hub": hub, **({"split": split} if split else {})}
        return value

    @model_validator(mode="after")
    def _one_location(self) -> DataSource:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (a local file or folder) or hub (a dataset id)")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> Any:
        """Only what differs from the defaults; a bare path or hub id is written back as its string form."""
        data = handler(self)
        changed = {key: value for key, value in data.items()
                   if key not in type(self).model_fields or value != type(self).model_fields[key].get_default(
                       call_default_factory=True)}
        if set(changed) == {"path"}:
            return changed["path"]
        if set(changed) <= {"hub", "split"} and "hub" in changed:
            return f"{HUB_PREFIX}{changed['hub']}" + (f":{changed['split']}" if "split" in changed else "")
        return changed

    @property
    def label(self) -> str:
        """How messages and tables name this input: the path, or ``hf:ID``."""
        return str(self.path) if self.path is not None else f"{HUB_PREFIX}{self.hub}"


# Every list of conversation inputs in a recipe (data.train_files, ...) has this type and goes through one loader,
# `tulu_lite.data.encode.load_conversations_dataset`.
DataFiles = list[DataSource]


class DataConfig(_Section):
    """Training data: conversation inputs (files, folders, hub datasets), or a mixture file (exactly one of the two),
    and optional held-out data.

    Held-out data is never trained on; its loss is computed per source (the `dataset` field of each conversation,
    or the mixture source name). Either `eval_files` (the same kinds of input as `train_files`), or
    `eval_fraction`: a seeded share of every source of the training data, so each source of a mixture is
    represented.
    """

    train_files: DataFiles = Field(default_factory=list)
    mixture: Path | None = None
    eval_files: DataFiles = Field(default_factory=list)
    eval_fraction: float | None = Field(None, gt=0, lt=1)
    max_seq_length: int = Field(2048, ge=8)
    padding_free: bool = True
    num_proc: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if bool(self.train_files) == (self.mixture is not None):
            raise ValueError("give exactly one of data.train_files or data.mixture")
        if self.eval_files and self.eval_fraction is not None:
            raise ValueError("give data.eval_files or data.eval_fraction, not both")
        return self

    @property
    def has_heldout(self) -> bool:
        return bool(self.eval_files) or self.eval_fraction is not None


class TrainingConfig(_Section):
    """Optimisation. Defaults are the TÜLU v1 paper's LoRA settings; the effective batch is what recipes set."""

    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # when set, overrides epochs
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    per_device_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    # Padding-free only: instead of per_device_batch_size examples, each micro-batch holds as many examples as fit
    # in this many tokens (length-grouped, so rows are full and memory per step is steady).
    max_tokens_per_batch: int | None = Field(None, ge=1)
    gradient_checkpointing: bool = True
    seed: int = 42
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    # Held-out loss every eval_steps (None: at every save_steps), always at the last step; needs held-out data.
    eval_steps: int | None = Field(None, ge=1)
    # Stop after this many evaluations without a lower overall held-out loss. With held-out data the output is
    # always the adapter of the best evaluation (metrics.json: best_step).
    early_stopping_patience: int | None = Field(None, ge=1)
    report_to: Literal["none", "tensorboard", "wandb"] = "none"


class Recipe(_Section):
    model: ModelConfig
    quantization: QuantizationConfig | None = None
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output_dir: Path
    # Where the recipe was read from, for error lines that point at a key (set by load_recipe; not part of the recipe).
    _origin: tuple[Path, dict, set] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the same recipe, wherever it was read from
        return isinstance(other, Recipe) and self.model_dump() == other.model_dump()

    @model_validator(mode="after")
    def _heldout_settings(self) -> Recipe:
        if not self.data.has_heldout:
            wanted = [key for key in ("eval_steps", "early_stopping_patience") if getattr(self.training, key)]
            if wanted:
                raise ValueError(f"training.{wanted[0]} needs held-out data: set data.eval_files or "
                                 f"data.eval_fraction")
        return self

    @model_validator(mode="after")
    def _token_budget(self) -> Recipe:
        budget = self.training.max_tokens_per_batch
        if budget is not None and not self.data.padding_free:
            raise ValueError("training.max_tokens_per_batch needs data.padding_free: true")
        if budget is not None and budget < self.data.max_seq_length:
            raise ValueError(
                f"training.max_tokens_per_batch ({budget}) must be at least data.max_seq_length "
                f"({self.data.max_seq_length}) so that the longest example fits"
            )
        return self

    @property
    def checkpoint_dir(self) -> Path:
        """Checkpoints live beside the output (``OUT.checkpoints``) so the output itself appears only when complete."""
        return self.output_dir.with_name(self.output_dir.name + ".checkpoints")

    def where(self, *key: str | int) -> str:
        """``FILE:LINE: dotted.key`` for an error about `key` (``--set dotted.key`` when an override set it)."""
        dotted = _dotted(key)
        if self._origin is None:
            return dotted
        path, lines, override_keys = self._origin
        if any(key[: len(set_key)] == set_key for set_key in override_keys):
            return f"--set {dotted}"
        return f"{at(path, _line(Problem(key, ''), lines))}: {dotted}"


# ---- loading a recipe -----------------------------------------------------------------------------------------


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override, resolve and validate a recipe; raise one `TuluError` listing every problem."""
    path = Path(path)
    raw, lines, problems = read_yaml(path, "recipe", Recipe)
    _resolve_paths(raw, path.resolve().parent, only=None)
    override_keys = _apply_overrides(raw, overrides, problems)
    _resolve_paths(raw, Path.cwd(), only=override_keys)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems += [_blame_overrides(problem, override_keys, lines) for problem in validation_problems(exc, Recipe)]
    if problems:
        raise TuluError(format_problems(path, lines, problems))
    recipe._origin = (path, lines, override_keys)
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe (every default filled in, absolute paths) as YAML, atomically."""
    data = recipe.model_dump(mode="json")
    with atomic_file(path) as handle:
        handle.write("# Resolved tulu-lite recipe: rerun with `tulu-lite train THIS_FILE`.\n")
        yaml.safe_dump(data, handle, sort_keys=False, allow_unicode=True)


def _apply_overrides(raw: dict, overrides: Sequence[str], problems: list[Problem]) -> set[tuple]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) in place; return the keys they set."""
    keys: set[tuple] = set()
    for item in overrides:
        name, sep, text = item.partition("=")
        key = tuple(name.strip().split("."))
        if not sep or not all(key):
            problems.append(Problem((item,), "expected KEY=VALUE with a dotted key, e.g. training.learning_rate=1e-4",
                                    origin="--set"))
            continue
        try:
            value = _override_value(text, f"--set {name.strip()}")
        except TuluError as exc:
            problems.append(Problem(key, str(exc).split(": ", 1)[1], origin="--set"))
            continue
        target = raw
        for part in key[:-1]:
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                problems.append(Problem(key, f"{part} is not a section", origin="--set"))
                break
        else:
            target[key[-1]] = value
            keys.add(key)
    return keys


def _override_value(text: str, where: str) -> object:
    """An override's value: YAML (bounded like a file) when it parses, else the text itself as a string."""
    if not text.strip():
        return ""
    try:
        return load_yaml_text(text, where)[1]
    except TuluError as exc:
        if "not valid YAML" in str(exc):
            return text  # e.g. --set output_dir=runs/a:b
        raise


def _blame_overrides(problem: Problem, override_keys: set[tuple], lines: dict[tuple, int]) -> Problem:
    """A problem with a value ``--set`` gave is reported as ``--set key: what``, not at a file line.

    A problem at or under an overridden key is the override's, even where the file has that key too (the
    override replaced the file's value); one about an enclosing section is the override's when the file does not
    have that section.
    """
    loc = problem.loc
    if any(loc[: len(key)] == key for key in override_keys):
        return replace(problem, origin="--set")
    touched = any(key[: len(loc)] == loc for key in override_keys)
    return replace(problem, origin="--set") if touched and loc not in lines else problem


_PATH_KEYS = [("model", "name_or_path"), ("model", "tokenizer"), ("data", "mixture"), ("output_dir",)]


_DATA_LISTS = [("data", "train_files"), ("data", "eval_files")]  # lists of DataSource entries, each item resolved by _absolute_input


def _resolve_paths(raw: dict, base: Path, only: set[tuple] | None) -> None:
    """Make recipe paths absolute against `base`; `only` limits this to the keys set by overrides."""
    for key in [*_PATH_KEYS, *_DATA_LISTS]:
        if only is not None and key not in only:
            continue
        parent = raw
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or key[-1] not in parent:
            continue
        value = parent[key[-1]]
        if key in _DATA_LISTS and isinstance(value, list):
            parent[key[-1]] = [_absolute_input(item, base) for item in value]
        elif key == ("model", "name_or_path") and isinstance(value, str):
            # A hub id ("huggyllama/llama-7b") or tiny-llama stays as is; a local directory becomes absolute.
            looks_local = value.startswith((".", "/", "~")) or (base / value).exists() or not HUB_ID.fullmatch(value)
            parent[key[-1]] = _absolute(value, base) if looks_local and value != TINY_LLAMA_NAME else value
        elif isinstance(value, str):
            parent[key[-1]] = _absolute(value, base)


def _absolute_input(item: Any, base: Path) -> Any:
    """A DataSource entry with its local path made absolute (``hf:`` ids and hub entries stay as they are)."""
    if isinstance(item, str) and not item.startswith(HUB_PREFIX):
        return _absolute(item, base)
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return {**item, "path": _absolute(item["path"], base)}
    return item


def _absolute(value: str, base: Path) -> str:
    return str((base / Path(value).expanduser()).resolve())


def local_model_dir(name: str, key: str) -> Path | None:
    """The local directory `name` refers to, or None for a hub id.

    A name that can only be a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) and does not exist is an error saying
    so, rather than a hub lookup that fails with a message about the network.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise TuluError(f"{key}: {name}: is a file, not a model directory")
    if name.startswith((".", "/", "~")) or not HUB_ID.fullmatch(name):
        raise TuluError(f"{key}: {name}: directory not found")
    return None


# ---- typed YAML: read a file, validate it with a model, report every problem at its line ------------------------
# Shared by everything configured from YAML (recipes here, mixtures in tulu_lite.data.mix) and by the eval settings.


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
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
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
    ordered = sorted(problems, key=lambda problem: -1 if problem.origin else (_line(problem, lines) or 0))
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
            return f" (did you mean '{_dotted((*loc[:-1], close[0]))}'?)"
    section = _section_with(root, key)
    if section is not None:
        return f" (did you mean '{_dotted((*section, key))}'?)"
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


def _line(problem: Problem, lines: dict[tuple, int]) -> int | None:
    """The problem's line: its own, else that of its key or of the nearest enclosing key the file has."""
    if problem.line is not None:
        return problem.line
    for end in range(len(problem.loc), 0, -1):
        if problem.loc[:end] in lines:
            return lines[problem.loc[:end]]
    return None


def _render(problem: Problem, path: str | os.PathLike, lines: dict[tuple, int]) -> str:
    key = _dotted(problem.loc) or "(top level)"
    if problem.origin:
        return f"{problem.origin} {key}: {problem.what}"
    return f"{at(path, _line(problem, lines))}: {key}: {problem.what}"


def _dotted(loc: tuple) -> str:
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
