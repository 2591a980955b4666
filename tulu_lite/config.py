"""Recipes: the typed, validated YAML that fully describes one training run.

A recipe maps 1:1 onto `Recipe`. Every default lives on these classes. `load_recipe` reads the file with a safe YAML
loader, applies ``--set key=value`` overrides, and reports *all* problems at once (unknown keys with a "did you
mean", wrong types, out-of-range values), each prefixed with ``file:line`` where the YAML has that key.

Paths in a recipe (``model.name_or_path`` when it is a local directory, ``model.tokenizer``, ``data.train_files``,
``data.mixture``, ``output_dir``) are relative to the recipe file; paths given with ``--set`` are relative to the
current directory. Both are made absolute on load, so the saved recipe (`save_recipe`) reruns from anywhere.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tulu_lite.errors import TuluError, at
from tulu_lite.outputs import atomic_file

TINY_LLAMA_NAME = "tiny-llama"  # same value as tulu_lite.model.TINY_LLAMA_NAME (kept torch-free here)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(_Section):
    """Shape of the embedded tiny LLaMA (only for ``name_or_path: tiny-llama``); the seed makes it reproducible."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    seed: int = 0


class ModelConfig(_Section):
    name_or_path: str
    dtype: Dtype = "auto"
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
    """4-bit loading through bitsandbytes (QLoRA). ``compute_dtype: auto``: bfloat16 on a GPU that has it, else fp32."""

    load_in_4bit: Literal[True] = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Dtype = "auto"


class LoraConfig(_Section):
    r: int = Field(64, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR), min_length=1)


class DataConfig(_Section):
    """Training data: conversation JSONL files, or a mixture file (exactly one of the two)."""

    train_files: list[Path] = Field(default_factory=list)
    mixture: Path | None = None
    max_seq_length: int = Field(2048, ge=8)
    padding_free: bool = True
    num_proc: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if bool(self.train_files) == (self.mixture is not None):
            raise ValueError("give exactly one of data.train_files or data.mixture")
        return self


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
    report_to: Literal["none", "tensorboard", "wandb"] = "none"


class Recipe(_Section):
    model: ModelConfig
    quantization: QuantizationConfig | None = None
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output_dir: Path

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


# ---- loading --------------------------------------------------------------------------------------------------


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override, resolve and validate a recipe; raise one `TuluError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise TuluError(f"{path}: recipe file not found")
    text = path.read_text(encoding="utf-8")
    problems: list[str] = []
    raw, lines = _parse_yaml(text, path, problems)
    _resolve_paths(raw, path.resolve().parent, only=None)
    override_keys = _apply_overrides(raw, overrides, problems)
    _resolve_paths(raw, Path.cwd(), only=override_keys)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        described = [_describe(error, path, lines, override_keys) for error in exc.errors()]
        problems.extend(sorted(described, key=_line_of))
    if problems:
        raise TuluError(_summarise(path, problems))
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe (every default filled in, absolute paths) as YAML, atomically."""
    data = recipe.model_dump(mode="json")
    with atomic_file(path) as handle:
        handle.write("# Resolved tulu-lite recipe: rerun with `tulu-lite train THIS_FILE`.\n")
        yaml.safe_dump(data, handle, sort_keys=False, allow_unicode=True)


def _parse_yaml(text: str, path: Path, problems: list[str]) -> tuple[dict, dict[tuple, int]]:
    """Safe-load the YAML and map each key's dotted path to its line number."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise TuluError(f"{at(path, line)}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if raw is None:
        raise TuluError(f"{path}: recipe is empty")
    if not isinstance(raw, dict):
        raise TuluError(f"{at(path, 1)}: a recipe must be a mapping of sections (model, data, ...)")
    lines: dict[tuple, int] = {}
    _index_lines(root, (), lines, path, problems)
    return raw, lines


def _index_lines(node: yaml.Node, prefix: tuple, lines: dict[tuple, int], path: Path, problems: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, key_node.value)
            if key in lines:  # safe_load silently keeps the last duplicate; a recipe should not depend on that
                problems.append(f"{at(path, key_node.start_mark.line + 1)}: {_dotted(key)}: duplicate key")
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines, path, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*prefix, index)] = item.start_mark.line + 1
            _index_lines(item, (*prefix, index), lines, path, problems)


def _apply_overrides(raw: dict, overrides: Sequence[str], problems: list[str]) -> set[tuple]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) in place; return the keys they set."""
    keys: set[tuple] = set()
    for item in overrides:
        name, sep, text = item.partition("=")
        key = tuple(name.strip().split("."))
        if not sep or not all(key):
            problems.append(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. training.learning_rate=1e-4")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        target = raw
        for part in key[:-1]:
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
            if not isinstance(target, dict):
                problems.append(f"--set {name}: {part} is not a section")
                break
        else:
            target[key[-1]] = value
            keys.add(key)
    return keys


_PATH_KEYS = [("model", "name_or_path"), ("model", "tokenizer"), ("data", "mixture"), ("output_dir",)]


def _resolve_paths(raw: dict, base: Path, only: set[tuple] | None) -> None:
    """Make recipe paths absolute against `base`; `only` limits this to the keys set by overrides."""
    for key in [*_PATH_KEYS, ("data", "train_files")]:
        if only is not None and key not in only:
            continue
        parent = raw
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or key[-1] not in parent:
            continue
        value = parent[key[-1]]
        if key == ("data", "train_files") and isinstance(value, list):
            parent[key[-1]] = [_absolute(item, base) if isinstance(item, str) else item for item in value]
        elif key == ("model", "name_or_path") and isinstance(value, str):
            # A hub id ("huggyllama/llama-7b") or tiny-llama stays as is; a local directory becomes absolute.
            looks_local = value.startswith((".", "/", "~")) or (base / value).exists()
            parent[key[-1]] = _absolute(value, base) if looks_local and value != TINY_LLAMA_NAME else value
        elif isinstance(value, str):
            parent[key[-1]] = _absolute(value, base)


def _absolute(value: str, base: Path) -> str:
    return str((base / Path(value).expanduser()).resolve())


# ---- error messages -------------------------------------------------------------------------------------------


def _describe(error: dict, path: Path, lines: dict[tuple, int], override_keys: set[tuple]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "model_attributes_type" or error["type"] == "dict_type":
        what = f"expected a section (mapping), got {_show(error['input'])}"
    elif error["type"] == "extra_forbidden":
        what = f"unknown key{_suggest(loc)}"
    elif error["type"] == "missing":
        what = "required key is missing"
    elif error["type"] == "value_error":
        what = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    else:
        what = f"{_lower_first(error['msg'])}, got {_show(error['input'])}"
    loc = _trim_union_tags(loc)
    from_override = any(loc[: len(key)] == key or key[: len(loc)] == loc for key in override_keys)
    if from_override and loc not in lines:
        return f"--set {_dotted(loc)}: {what}"
    return f"{_where(path, lines, loc)}: {_dotted(loc) or '(top level)'}: {what}"


def _suggest(loc: tuple) -> str:
    """' (did you mean 'x'?)' for an unknown key: a close sibling, or the same name in another section."""
    model = _model_at(loc[:-1])
    key = str(loc[-1])
    if model is not None:
        close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{_dotted((*loc[:-1], close[0]))}'?)"
    for section, field in Recipe.model_fields.items():
        annotation = _section_class(field.annotation)
        if annotation is not None and key in annotation.model_fields:
            return f" (did you mean '{section}.{key}'?)"
    if model is not None:
        return f" (expected one of: {', '.join(model.model_fields)})"
    return ""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        model = _section_class(model.model_fields[part].annotation)
    return model


def _section_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # QuantizationConfig | None
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _trim_union_tags(loc: tuple) -> tuple:
    # pydantic names the union member in the location ("quantization.QuantizationConfig.quant_type")
    return tuple(part for part in loc if not (isinstance(part, str) and part[:1].isupper()))


def _where(path: Path, lines: dict[tuple, int], loc: tuple) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return at(path, lines[loc[:end]])
    return str(path)


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _line_of(problem: str) -> int:
    """Sort key: problems from --set first, then by line in the file."""
    head = problem.split(": ", 1)[0]
    number = head.rpartition(":")[2]
    return int(number) if number.isdigit() else 0


def _summarise(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{path}: {len(problems)} problems in the recipe:\n" + "\n".join(f"  {problem}" for problem in problems)
