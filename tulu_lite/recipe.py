"""Recipes: the typed, validated YAML that fully describes one training run.

A recipe maps 1:1 onto `Recipe`. Every default lives on these classes. `load_recipe` reads the file with a safe YAML
loader, applies ``--set key=value`` overrides, and reports *all* problems at once (unknown keys with a "did you
mean", wrong types, out-of-range values), each prefixed with ``file:line`` where the YAML has that key.

Paths in a recipe (``model.name_or_path`` when it is a local directory, ``model.tokenizer``, the local entries of
``data.train_files`` and ``data.eval_files``, ``data.mixture``, ``output_dir``, ``dpo.adapter``) are relative to the
recipe file; paths given with ``--set`` are relative to the current directory. Both are made absolute on load, so the
saved recipe (`save_recipe`) reruns from anywhere. Hub datasets (``hf:ID``, ``{hub: ID}``) stay as they are.

The generic part, "a YAML file validated by a pydantic model, every problem reported at once", is
`tulu_lite.typed_yaml`, shared with mixtures and the eval settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from tulu_lite.errors import TuluError, at
from tulu_lite.outputs import atomic_file
from tulu_lite.typed_yaml import (
    Problem,
    dotted,
    format_problems,
    load_yaml_text,
    problem_line,
    read_yaml,
    validation_problems,
)

TINY_LLAMA_NAME = "tiny-llama"  # also tulu_lite.model.tiny.TINY_LLAMA_NAME (kept torch-free here)
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


class TinyModelSettings(_Section):
    """Shape of the embedded tiny LLaMA (only for ``name_or_path: tiny-llama``); the seed makes it reproducible."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    seed: int = 0


class ModelSettings(_Section):
    name_or_path: str
    # "auto": bfloat16 on a GPU that has it natively, float16 on older GPUs, float32 on CPU (model.resolve_dtype).
    dtype: Dtype = "auto"
    # "auto": flash-attention when installed and the GPU and dtype allow it, else sdpa (model.choose_attention).
    attn_implementation: AttnImplementation = "auto"
    chat_template: Literal["tulu", "native"] = "tulu"
    # Tokenizer directory; None means the model's own (or, for tiny-llama, the bundled LLaMA tokenizer).
    tokenizer: Path | None = None
    tiny: TinyModelSettings = Field(default_factory=TinyModelSettings)
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


class QuantizationSettings(_Section):
    """4-bit loading through bitsandbytes (QLoRA). ``compute_dtype: auto`` is resolved like ``model.dtype``."""

    load_in_4bit: Literal[True] = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Dtype = "auto"


class LoraSettings(_Section):
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
    Preference pairs (``stage: dpo``) are read from columns `chosen` and `rejected` (message lists, or completion
    strings after a `prompt`: see `tulu_lite.data.pairs`), turns mapped the same way.
    """

    path: Path | None = None
    hub: str | None = Field(None, min_length=1)
    split: str = "train"  # for folders holding several splits, and the hub
    subset: str | None = None  # the hub dataset's configuration name (load_dataset's `name`)
    revision: str | None = None
    messages: str = "messages"
    chosen: str = "chosen"  # preference pairs: the preferred side,
    rejected: str = "rejected"  # the other side,
    prompt: str = "prompt"  # and the prompt when the sides are completions only (TRL's format)
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


class DataSettings(_Section):
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
    def _one_source(self) -> DataSettings:
        if bool(self.train_files) == (self.mixture is not None):
            raise ValueError("give exactly one of data.train_files or data.mixture")
        if self.eval_files and self.eval_fraction is not None:
            raise ValueError("give data.eval_files or data.eval_fraction, not both")
        return self

    @property
    def has_heldout(self) -> bool:
        return bool(self.eval_files) or self.eval_fraction is not None


class TrainingSettings(_Section):
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


# Every loss TRL 1.16's DPOTrainer computes (trl/trainer/dpo_config.py `loss_type`; dpo_trainer.py `_compute_loss`).
DPO_LOSSES = ("sigmoid", "sigmoid_norm", "ipo", "hinge", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
              "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft")
# Losses on the per-token mean of the log-ratios (TRL divides by the trained tokens): their rewards are per token.
LENGTH_NORMALISED_LOSSES = ("sigmoid_norm", "ipo")


class DpoSettings(_Section):
    """Preference tuning (``stage: dpo``): DPO on the preference pairs of ``data``, through TRL's DPOTrainer.

    The defaults are open-instruct's TÜLU 2 DPO (sigmoid loss on the SUM of the log-probabilities of the trained
    tokens, beta 0.1, the reference = the base with the adapter disabled). TÜLU 3's length-normalised DPO is
    ``loss_type: sigmoid_norm`` (the log-ratios divided by the trained tokens; TÜLU 3 used beta 5). `loss_type` is
    any loss TRL's DPOTrainer offers, or a list of them combined with `loss_weights` (e.g. MPO).

    `reference`: ``base`` trains a new adapter on the recipe's base and compares with that base (the adapter
    disabled); ``adapter`` continues training the SFT adapter at `adapter` and compares with its frozen copy (then
    the adapter's own LoRA settings are trained and ``lora`` is not used). `precompute_reference` computes the
    reference log-probabilities of every pair once, before training, and caches them on disk (keyed by the model
    and the data), so the reference forward never runs during training and a repeated or resumed run reads them.
    """

    beta: float = Field(0.1, gt=0)
    loss_type: str | list[str] = "sigmoid"  # one of DPO_LOSSES, or a list of them
    loss_weights: list[float] | None = None  # one per loss type; default 1 each
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # robust (flip probability), exo_pair (epsilon, must be > 0), aot
    discopop_tau: float = Field(0.05, gt=0)  # discopop
    reference: Literal["base", "adapter"] = "base"
    adapter: Path | None = None  # the SFT adapter directory (reference: adapter)
    precompute_reference: bool = False

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, value: str | list[str]) -> str | list[str]:
        unknown = [name for name in ([value] if isinstance(value, str) else value) if name not in DPO_LOSSES]
        if unknown:
            raise ValueError(f"unknown loss {unknown[0]!r} (TRL's DPOTrainer offers {', '.join(DPO_LOSSES)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DpoSettings:
        if self.reference == "adapter" and self.adapter is None:
            raise ValueError("reference: adapter needs dpo.adapter: the SFT adapter directory to start from")
        if self.reference == "base" and self.adapter is not None:
            raise ValueError("dpo.adapter is only used with reference: adapter (reference: base trains a new adapter)")
        types = self.loss_types
        if len(set(types)) != len(types) or not types:
            raise ValueError("dpo.loss_type: give each loss at most once (and at least one)")
        if self.loss_weights is not None and len(self.loss_weights) != len(types):
            raise ValueError(f"dpo.loss_weights: {len(self.loss_weights)} weights for {len(types)} loss types")
        if "exo_pair" in types and self.label_smoothing == 0:
            raise ValueError("loss_type exo_pair needs dpo.label_smoothing > 0 (the EXO paper uses 1e-3)")
        return self

    @property
    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    @property
    def length_normalised(self) -> bool:
        """Whether the loss compares per-token means of the log-ratios (then rewards are per token too)."""
        return all(name in LENGTH_NORMALISED_LOSSES for name in self.loss_types)


class Recipe(_Section):
    # sft: instruction tuning on conversations; dpo: preference tuning on pairs (the `dpo` section, DpoSettings).
    stage: Literal["sft", "dpo"] = "sft"
    model: ModelSettings
    quantization: QuantizationSettings | None = None
    lora: LoraSettings = Field(default_factory=LoraSettings)
    data: DataSettings
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    output_dir: Path
    dpo: DpoSettings | None = None  # given, or filled with its defaults, exactly when stage is dpo
    # Where the recipe was read from, for error lines that point at a key (set by load_recipe; not part of the recipe).
    _origin: tuple[Path, dict, set] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:  # the same recipe, wherever it was read from
        return isinstance(other, Recipe) and self.model_dump() == other.model_dump()

    @model_validator(mode="before")
    @classmethod
    def _dpo_defaults(cls, data: Any) -> Any:
        """``stage: dpo`` without a dpo section gets DpoSettings' defaults."""
        if isinstance(data, dict) and data.get("stage") == "dpo" and data.get("dpo") is None:
            return {**data, "dpo": {}}
        return data

    # Field validators (not model ones) so that a problem is reported at the line of its section; `stage` is
    # declared first, so it is validated before them.
    @field_validator("dpo")
    @classmethod
    def _dpo_needs_stage(cls, value: DpoSettings | None, info: ValidationInfo) -> DpoSettings | None:
        if value is not None and info.data.get("stage") != "dpo":
            raise ValueError("a dpo section needs stage: dpo")
        return value

    @field_validator("data")
    @classmethod
    def _dpo_pads(cls, value: DataSettings, info: ValidationInfo) -> DataSettings:
        if info.data.get("stage") == "dpo" and value.padding_free:
            raise ValueError("stage dpo needs data.padding_free: false (TRL's DPOTrainer runs the chosen and "
                             "rejected sides as the two halves of one padded batch)")
        return value

    @field_validator("training")
    @classmethod
    def _dpo_batches(cls, value: TrainingSettings, info: ValidationInfo) -> TrainingSettings:
        if info.data.get("stage") == "dpo" and value.max_tokens_per_batch is not None:
            raise ValueError("training.max_tokens_per_batch is not available with stage: dpo (a batch is "
                             "training.per_device_batch_size pairs)")
        return value

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
        name = dotted(key)
        if self._origin is None:
            return name
        path, lines, override_keys = self._origin
        if any(key[: len(set_key)] == set_key for set_key in override_keys):
            return f"--set {name}"
        return f"{at(path, problem_line(Problem(key, ''), lines))}: {name}"


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


_PATH_KEYS = [("model", "name_or_path"), ("model", "tokenizer"), ("data", "mixture"), ("output_dir",),
              ("dpo", "adapter")]


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
