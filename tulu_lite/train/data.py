"""Training data: the recipe's inputs (train files, or a mixture written out per source), encoded once with the
foundation encoder (Arrow-cached) into examples to train on and the held-out examples per source.

`tulu-lite plan` imports this module alone (`encode_training_data`): it must not import the trainer.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tulu_lite.errors import TuluError
from tulu_lite.json_files import read_json_file, read_json_object, write_json
from tulu_lite.recipe import Recipe

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class TrainingData:
    """The encoded examples to train on, and the held-out ones per source (empty without held-out data)."""

    train: object  # datasets.Dataset of input_ids / labels
    report: object  # EncodeReport of the training data (kept, dropped)
    heldout: dict = field(default_factory=dict)  # source name -> datasets.Dataset
    heldout_report: object | None = None  # EncodeReport of data.eval_files


# ---- the recipe's inputs ------------------------------------------------------------------------------------------


def resolve_files(recipe: Recipe, key: str) -> list:
    """The inputs listed in ``data.<key>``: train_files and eval_files take the same kinds of input (files, folders,
    hub datasets; `tulu_lite.recipe.DataSource`). A missing local one is named with its recipe line here; the
    loader checks the rest."""
    items = list(getattr(recipe.data, key))
    for index, item in enumerate(items):
        if item.path is not None and not item.path.exists():
            raise TuluError(f"{recipe.where('data', key, index)}: {item.path}: file not found")
    return items


def training_files(recipe: Recipe) -> list:
    """The conversation inputs to train on: data.train_files (files, folders, hub datasets), or the file a mixture
    is written to."""
    if recipe.data.mixture is not None:
        return [path for _, path in _mixture_sources(recipe)]
    return resolve_files(recipe, "train_files")


# ---- a mixture, written out once per run --------------------------------------------------------------------------

_MIXTURE_RECORD = "mixture.json"


def _mixture_folder(recipe: Recipe) -> Path:
    return recipe.checkpoint_dir / "data"


def _mixture_sources(recipe: Recipe) -> list[tuple[str, Path]]:
    """Write each mixture source's selection once into OUT.checkpoints/data/ (seeded, so a rerun or --resume reuses
    it) and return (source name, file) pairs: held-out losses are reported per mixture source.

    The files are reused while the recorded resolved mixture equals the current one; edit a source file in place
    without touching the YAML and you must delete OUT.checkpoints/data/ to re-mix.
    """
    from tulu_lite.data.mix import iter_mixture, load_mixture, plan_mixture
    from tulu_lite.json_files import write_jsonl

    mixture = load_mixture(recipe.data.mixture)
    folder = _mixture_folder(recipe)
    labels = [source.label for source in mixture.sources]
    files = [folder / f"{index:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', label)}.jsonl"
             for index, label in enumerate(labels)]
    wanted = {"resolved": mixture.model_dump(mode="json"), "files": [path.name for path in files]}
    record = folder / _MIXTURE_RECORD
    if not (record.is_file() and read_json_file(record) == wanted and all(p.is_file() for p in files)):
        folder.mkdir(parents=True, exist_ok=True)
        # inputs other than tulu-lite JSON Lines (Parquet, hub, ...) are spooled as JSON Lines while selecting
        rows = _row_format(recipe)
        with tempfile.TemporaryDirectory(prefix=".spool-", dir=folder) as spool:
            for plan, path in zip(plan_mixture(mixture, lambda: Path(spool), rows=rows), files):
                write_jsonl(iter_mixture([plan], mixture.seed, rows), path)
        write_json(record, wanted)
    return list(zip(labels, files))


def _row_format(recipe: Recipe):
    """What the recipe's records are: conversations, or preference pairs (stage dpo)."""
    from tulu_lite.data.inputs import CONVERSATIONS
    from tulu_lite.data.pairs import PAIRS

    return PAIRS if recipe.stage == "dpo" else CONVERSATIONS


def check_mixture_unchanged(recipe: Recipe) -> None:
    """--resume with a mixture: the mixture the checkpoints were trained on must still be the recipe's."""
    from tulu_lite.data.mix import load_mixture

    record = _mixture_folder(recipe) / _MIXTURE_RECORD
    if recipe.data.mixture is None or not record.is_file():
        return
    if read_json_object(record)["resolved"] != load_mixture(recipe.data.mixture).model_dump(mode="json"):
        raise TuluError(f"--resume: {recipe.data.mixture} changed since the checkpoints were trained on it; undo "
                        f"the change, or start a new run (another output_dir, or --force)")


# ---- encoding -----------------------------------------------------------------------------------------------------


def _encode(recipe: Recipe, tokenizer, items: list, key: str):
    """Encode inputs as the recipe's stage trains on them: conversations (sft), or preference pairs (dpo: each side
    as SFT encodes a conversation, `tulu_lite.data.pairs`)."""
    if recipe.stage == "dpo":
        from tulu_lite.data.pairs import encode_pairs_dataset

        return encode_pairs_dataset(items, tokenizer, recipe.model.chat_template, recipe.data.max_seq_length,
                                    num_proc=recipe.data.num_proc, key=key, with_source=True)
    from tulu_lite.data.encode import encode_dataset

    return encode_dataset(items, tokenizer, recipe.model.chat_template, recipe.data.max_seq_length,
                          num_proc=recipe.data.num_proc, key=key, with_source=True)


def _empty_report(recipe: Recipe):
    from tulu_lite.data.encode import EncodeReport
    from tulu_lite.data.pairs import EncodedPairsReport

    return EncodedPairsReport() if recipe.stage == "dpo" else EncodeReport()


def _encode_training_files(recipe: Recipe, tokenizer):
    """Encode the training data; a mixture's examples are labelled with their mixture source's name."""
    from datasets import concatenate_datasets

    from tulu_lite.data.encode import SOURCE_COLUMN

    if recipe.data.mixture is None:
        return _encode(recipe, tokenizer, training_files(recipe), "data.train_files")
    parts, total = [], _empty_report(recipe)
    for label, path in _mixture_sources(recipe):
        encoded, report = _encode(recipe, tokenizer, [path], "data.mixture")
        parts.append(encoded.remove_columns(SOURCE_COLUMN).add_column(SOURCE_COLUMN, [label] * len(encoded)))
        if hasattr(total, "add"):  # a preference report also sums each side's trained tokens
            total.add(report)
            continue
        total.kept += report.kept
        total.tokens += report.tokens
        total.trained_tokens += report.trained_tokens
        for reason, count in report.dropped.items():
            total.dropped[reason] = total.dropped.get(reason, 0) + count
    return concatenate_datasets(parts), total


def encode_data(recipe: Recipe, tokenizer) -> TrainingData:
    """Encode the training files once (Arrow-cached by data + tokenizer + template + max length) and set the
    held-out examples apart: data.eval_files, or a seeded data.eval_fraction of every source. A dpo recipe's
    examples are encoded preference pairs (`tulu_lite.data.pairs.encode_pairs_dataset`)."""
    from tulu_lite.data.encode import SOURCE_COLUMN, check_heldout_split
    from tulu_lite.train.heldout import by_source, split_heldout

    train, report = _encode_training_files(recipe, tokenizer)
    heldout, heldout_report = {}, None
    if recipe.data.eval_fraction is not None:
        train, heldout = split_heldout(train, recipe.data.eval_fraction, recipe.training.seed)
        check_heldout_split(recipe.data.eval_fraction, len(train), sum(len(part) for part in heldout.values()),
                            recipe.where("data", "eval_fraction"))
    elif recipe.data.eval_files:
        encoded, heldout_report = _encode(recipe, tokenizer, resolve_files(recipe, "eval_files"), "data.eval_files")
        heldout = by_source(encoded)
        if not heldout:
            raise TuluError(f"{recipe.where('data', 'eval_files')}: no example with a trained token within "
                            f"max_seq_length {recipe.data.max_seq_length}")
    if len(train) == 0:
        files = ", ".join(getattr(item, "label", str(item)) for item in training_files(recipe))
        raise TuluError(f"data: no trainable example in {files} (dropped: {report.dropped})")
    heldout = {name: dataset.remove_columns(SOURCE_COLUMN) for name, dataset in heldout.items()}
    return TrainingData(train.remove_columns(SOURCE_COLUMN), report, heldout, heldout_report)


def encode_training_data(recipe: Recipe, tokenizer):
    """The examples trained on (held-out ones removed) and the encoding report, e.g. for `tulu-lite plan`."""
    data = encode_data(recipe, tokenizer)
    return data.train, data.report


def encode_in_turn(recipe: Recipe, tokenizer, *, processes: int) -> TrainingData:
    """Encode the training data while no collective is waiting: the processes of a machine take turns on a lock.

    The first process to get the lock encodes and fills the Arrow cache (for a cold TÜLU mixture that can take
    longer than any process-group timeout); the others wait on the lock, which has no timeout, and then read the
    cache. Waiting in a barrier instead (`main_process_first`) would hit the group's timeout.
    """
    if processes == 1:
        return encode_data(recipe, tokenizer)
    from filelock import FileLock

    with FileLock(str(encode_lock_path(recipe))):
        return encode_data(recipe, tokenizer)


def encode_lock_path(recipe: Recipe) -> Path:
    """A lock per run and machine (the Arrow cache is per machine too), in the system's temporary directory."""
    digest = hashlib.sha256(str(recipe.checkpoint_dir.resolve()).encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"tulu-lite-encode-{user}-{digest}.lock"


def describe_data(recipe: Recipe, data: TrainingData, console: Console) -> None:
    """One line on the held-out data and the evaluation cadence (nothing without held-out data)."""
    if not data.heldout:
        return
    t = recipe.training
    examples = sum(len(dataset) for dataset in data.heldout.values())
    where = "data.eval_files" if recipe.data.eval_files else f"{recipe.data.eval_fraction:g} of each source"
    stopping = (f"; early stopping after {t.early_stopping_patience} evaluations without improvement"
                if t.early_stopping_patience else "")
    sources = f"{len(data.heldout)} source{'s' if len(data.heldout) > 1 else ''}"
    console.print(f"held out: {examples:,} examples from {sources} ({where}), evaluated every "
                  f"{t.eval_steps or t.save_steps} steps{stopping}", highlight=False)
