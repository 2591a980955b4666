"""Merge's inputs, checked before any weights load: the adapter directory, its base and the output directory.

An adapter directory is `tulu-lite train`'s output (or one of its checkpoints): the PEFT adapter, recipe.yaml (the
base and its quantization), metrics.json and base_model.json (a fingerprint of the base training used). A base
that changed since training is refused, and an output that would overwrite an input or an existing directory
(without --force) fails here, before minutes of loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_file
from tulu_lite.outputs import ensure_writable
from tulu_lite.recipe import ModelSettings, Recipe, load_recipe

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class AdapterDir:
    """A `tulu-lite train` output directory, checked."""

    path: Path
    recipe: Recipe
    metrics: dict
    base_record: dict
    checkpoint: dict | None = None  # a training checkpoint's checkpoint.json (step, max_steps), not a final output

    @property
    def quantized(self) -> bool:
        return self.recipe.quantization is not None


def read_adapter_dir(path: str | Path) -> AdapterDir:
    """Check that `path` is a `tulu-lite train` output and read its recipe, metrics and base record."""
    path = Path(path)
    if not path.is_dir():
        raise TuluError(f"{path}: adapter directory not found")
    if not (path / "adapter_config.json").is_file():
        looks_like = "; it looks like a merged or base model" if (path / "config.json").is_file() else ""
        raise TuluError(
            f"{path}: not an adapter directory (no adapter_config.json{looks_like}); "
            f"expected the output_dir of `tulu-lite train`"
        )
    if not any(path.glob("adapter_model.*")):
        raise TuluError(f"{path}: adapter_config.json but no adapter_model.safetensors (incomplete adapter)")
    if not (path / "recipe.yaml").is_file():
        raise TuluError(f"{path}: no recipe.yaml, so the base and its quantization are unknown (train with tulu-lite)")
    from tulu_lite.json_files import read_json_object
    from tulu_lite.model.files import check_safetensors

    read_json_object(path / "adapter_config.json")  # PEFT would raise a bare JSONDecodeError
    if (path / "adapter_model.safetensors").is_file():
        check_safetensors(path / "adapter_model.safetensors")  # ...and a truncated file a SafetensorError
    recipe = load_recipe(path / "recipe.yaml")
    # a missing file reads as {}; checkpoint.json is only in OUT.checkpoints/checkpoint-N of `tulu-lite train`
    metrics, base_record, checkpoint = (read_json_file(path / name) if (path / name).is_file() else {}
                                        for name in ("metrics.json", "base_model.json", "checkpoint.json"))
    return AdapterDir(path, recipe, metrics, base_record, checkpoint or None)


def check_out_dir(out_dir: Path, inputs: list[Path], *, force: bool) -> None:
    """Fail before loading anything: never write over an input (adapter, base), nor an output without --force."""
    for path in inputs:
        if path.exists() and path.resolve().is_relative_to(out_dir.resolve()):
            raise TuluError(f"{out_dir}: the output would replace the input {path}; choose another -o")
    if out_dir.is_file():  # --force replaces a folder, never a file: say so before anything loads
        raise TuluError(f"{out_dir}: is a file, not a folder (remove it or choose another -o)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise TuluError(f"{out_dir}: already exists (pass --force to overwrite)")
    ensure_writable(out_dir, "-o", expect="dir")  # a link to a folder is followed; a FIFO or device is refused


def base_config(adapter: AdapterDir, base: str | Path | None, console: Console) -> ModelSettings:
    """The recipe's model section, pointed at `--base` when given; the base must be the one training used.

    Training records a fingerprint of the base (`tulu_lite.model.base_fingerprint`; the full weights hash for a
    rebuilt tiny LLaMA). A base that no longer matches it is refused, saying what differs, unless `--base` names
    the base to use explicitly (then the differences are only printed).
    """
    from tulu_lite.model.files import check_model_dir
    from tulu_lite.model.tiny import tiny_llama_dir, weights_sha256

    model_cfg = adapter.recipe.model
    if base is not None:
        check_model_dir(base, "--base")
        model_cfg = model_cfg.model_copy(update={"name_or_path": str(Path(base).resolve())})
        differences = _base_differences(adapter, model_cfg)
        if differences:
            console.print(f"[yellow]note[/]: --base {base} is not the base this adapter was trained on "
                          f"({'; '.join(differences[:3])}); merging into it as asked", highlight=False)
        return model_cfg
    if model_cfg.is_tiny and "weights_sha256" in adapter.base_record:
        if weights_sha256(tiny_llama_dir(model_cfg)) != adapter.base_record["weights_sha256"]:
            raise TuluError(
                f"{adapter.path}: the rebuilt tiny-llama base differs from the one this adapter was trained on "
                f"(different torch/transformers?); pass --base with the original base directory"
            )
    differences = _base_differences(adapter, model_cfg)
    if differences:
        raise TuluError(f"{adapter.path}: the base {model_cfg.name_or_path} changed since training "
                        f"({'; '.join(differences[:3])}); pass --base DIR to merge into a base anyway")
    return model_cfg


def _base_differences(adapter: AdapterDir, model_cfg: ModelSettings) -> list[str]:
    """How the base at `model_cfg` differs from the fingerprint recorded at training (empty if none recorded)."""
    from tulu_lite.model.files import (
        base_fingerprint,
        check_model_dir,
        fingerprint_differences,
        model_files_dir,
    )

    recorded = adapter.base_record.get("fingerprint")
    if not isinstance(recorded, dict) or model_cfg.is_tiny:
        return []  # adapters trained before fingerprints were recorded
    directory = model_files_dir(model_cfg.name_or_path)
    if directory is None:
        return []  # a hub base that is not cached: loading it will say so
    check_model_dir(directory, "base")
    return fingerprint_differences(recorded, base_fingerprint(directory))


def training_tokenizer(model_cfg: ModelSettings):
    """The tokenizer exactly as training loaded it: from the recipe's source, not the copy in the adapter dir.

    transformers 5.23 does not save a LLaMA tokenizer's ``legacy`` flag, so a saved copy reloads with
    ``legacy=False`` and tokenizes the text after a special token differently (after ``</s>``, "\n" instead of
    "▁\n"): the adapter dir's copy does not reproduce the training ids of multi-turn conversations.
    """
    from tulu_lite.model.loading import load_recipe_tokenizer

    return load_recipe_tokenizer(model_cfg)
