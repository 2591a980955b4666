"""The DPO reference: where the policy starts (a new adapter, or the SFT adapter) and the reference log-probabilities
precomputed once and cached on disk (``dpo.precompute_reference``).

The cache is keyed by the reference model's identity (`reference_model_key`: base weights fingerprint, how it is
loaded, the SFT adapter's files, library versions, device kind) and the encoded pairs' token ids and labels
(`pairs_fingerprint`), so a repeated or resumed run reads the values instead of running the reference again, and a
change to either computes them anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tulu_lite.data.pairs import PAIR_COLUMNS, SIDES
from tulu_lite.errors import TuluError
from tulu_lite.recipe import Recipe
from tulu_lite.train.heldout import eval_batches, process_share

if TYPE_CHECKING:
    from tulu_lite.train.preference import PreferenceTrainer

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # TRL's names for precomputed reference log-probs
# Bump when what the cached reference log-probs mean changes (how they are computed from the same model and data).
_REFERENCE_CACHE_VERSION = "2"  # 2: float64 sums of the per-token log-probs


# ---- log-probabilities, as both the policy and the reference sum them -------------------------------------------


@contextmanager
def capture_log_probs(model) -> Iterator[list[torch.Tensor]]:
    """Collect the per-token log-probs of every ``fused_lm_head`` forward of `model` inside the block (TRL's DPO
    calls: the policy's, then the live reference's), detached."""
    captured: list[torch.Tensor] = []

    def keep(module, args, kwargs, output):
        if kwargs.get("fused_lm_head"):
            captured.append(output.log_probs.detach())

    handle = model.register_forward_hook(keep, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def summed_log_probs(per_token: torch.Tensor, shifted_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the float64 sum of the per-token log-probs (zero off the trained tokens) at the mask's positions."""
    return per_token[:, -shifted_mask.size(1):].double().sum(dim=1)


# ---- where the policy starts ------------------------------------------------------------------------------------

def policy_model(recipe: Recipe, base):
    """The model DPO trains: a new LoRA adapter on the base (``reference: base``), or the SFT adapter at
    ``dpo.adapter``, trainable (``reference: adapter``; its own LoRA settings, not the recipe's ``lora``)."""
    from transformers import set_seed

    from tulu_lite.model.loading import add_lora

    if recipe.dpo.reference == "base":
        set_seed(recipe.training.seed)  # LoRA A is initialised randomly: the same recipe starts from the same adapter
        return add_lora(base, recipe.lora)
    return load_sft_adapter(base, recipe.dpo.adapter, recipe.where("dpo", "adapter"), recipe.model.name_or_path)


def load_sft_adapter(base, adapter: Path, key: str, base_name: str | None = None):
    """The SFT adapter at `adapter` on `base`, trainable; refused (one line) when it is not an adapter directory or
    was trained on another base (its ``base_model.json``)."""
    from peft import PeftModel

    from tulu_lite.json_files import read_json_object

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise TuluError(f"{key}: {adapter}: not an adapter directory (no adapter_config.json); give the output_dir "
                        f"of an SFT run")
    record = adapter / "base_model.json"
    if base_name is not None and record.is_file():
        trained_on = read_json_object(record).get("name_or_path")
        if trained_on not in (None, base_name):
            raise TuluError(f"{key}: {adapter} was trained on {trained_on}, not on model.name_or_path {base_name}")
    return PeftModel.from_pretrained(base, str(adapter), is_trainable=True)



# ---- reference log-probs, precomputed and cached ----------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceCache:
    """Where precomputed reference log-probs live: ``folder/<key>.safetensors``, the key made of the reference
    model's identity (`model_key`) and the token ids and labels of the pairs."""

    folder: Path
    model_key: str

    def path(self, dataset) -> Path:
        digest = hashlib.sha256(f"{_REFERENCE_CACHE_VERSION}|{self.model_key}|".encode())
        digest.update(pairs_fingerprint(dataset).encode())
        return self.folder / f"{digest.hexdigest()[:40]}.safetensors"


def reference_cache(recipe: Recipe, folder: Path | None = None) -> ReferenceCache:
    """The cache of a recipe's reference: in `folder`, default ``$TULU_LITE_CACHE/reference-logps``."""
    from tulu_lite.model.tiny import _cache_root

    return ReferenceCache(Path(folder) if folder is not None else _cache_root() / "reference-logps",
                          reference_model_key(recipe))


def reference_model_key(recipe: Recipe) -> str:
    """What determines the reference model's log-probs: the base (its weights fingerprint), how it is loaded
    (dtype, attention, 4-bit settings), the SFT adapter's files with ``reference: adapter``, the libraries and the
    device kind. Cheap even for a 65B base (`tulu_lite.model.base_fingerprint` samples the weights)."""
    import transformers
    import trl

    from tulu_lite.model.files import base_fingerprint, model_files_dir
    from tulu_lite.model.loading import resolve_attention, resolve_dtype
    from tulu_lite.model.tiny import tiny_llama_dir, weights_sha256

    model = recipe.model
    if model.is_tiny:
        weights = weights_sha256(tiny_llama_dir(model))
    else:
        directory = model_files_dir(model.name_or_path)
        weights = base_fingerprint(directory) if directory is not None else None
    identity = {
        "base": model.name_or_path, "weights": weights, "dtype": str(resolve_dtype(model.dtype)),
        "attention": resolve_attention(model, recipe.quantization),
        "quantization": recipe.quantization.model_dump(mode="json") if recipe.quantization else None,
        "reference": recipe.dpo.reference,
        "adapter": _files_sha256(recipe.dpo.adapter) if recipe.dpo.reference == "adapter" else None,
        "versions": [torch.__version__, transformers.__version__, trl.__version__],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _files_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def pairs_fingerprint(dataset) -> str:
    """A content hash of encoded pairs (their token ids and labels, in order): what the cached values belong to."""
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    for table in dataset.select_columns(list(PAIR_COLUMNS)).with_format("arrow").iter(batch_size=4096):
        for name in PAIR_COLUMNS:
            column = table.column(name)
            digest.update(pc.list_value_length(column).to_numpy(zero_copy_only=False).tobytes())
            digest.update(pc.list_flatten(column).to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def with_reference_logps(trainer: PreferenceTrainer, dataset, name: str, cache: ReferenceCache):
    """`dataset` with TRL's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns: read from the cache, or computed
    (every process its share of the batches) and written there by the main process."""
    from safetensors.torch import load_file

    path = cache.path(dataset)
    accelerator = trainer.accelerator
    if path.is_file():
        values = load_file(str(path))
    else:
        chosen, rejected = compute_reference_logps(trainer, dataset)
        values = {"chosen": chosen, "rejected": rejected}
        if accelerator.is_main_process:
            _write_cache(path, values, name)
        accelerator.wait_for_everyone()
    if values["chosen"].numel() != len(dataset):
        raise TuluError(f"{path}: holds {values['chosen'].numel()} reference log-probs for {len(dataset)} pairs "
                        f"(delete it to recompute)")
    for column, side in zip(REF_COLUMNS, SIDES):
        dataset = dataset.add_column(column, values[side].tolist())
    return dataset


def _write_cache(path: Path, values: dict[str, torch.Tensor], name: str) -> None:
    from safetensors.torch import save

    from tulu_lite.outputs import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        handle.write(save({key: value.contiguous() for key, value in values.items()}, metadata={"dataset": name}))


@torch.no_grad()
def compute_reference_logps(trainer: PreferenceTrainer, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed reference log-probs of every pair of `dataset` (TRL's `compute_ref_log_probs`: the frozen "ref"
    adapter, or the adapter disabled), the model in eval mode; batches by length, spread over the processes."""
    accelerator = trainer.accelerator
    model = trainer.model
    chosen = torch.zeros(len(dataset), dtype=torch.float64)
    rejected = torch.zeros(len(dataset), dtype=torch.float64)
    lengths = [len(c) + len(r) for c, r in zip(dataset["chosen_input_ids"], dataset["rejected_input_ids"])]
    batch_size = trainer.args.precompute_ref_batch_size or trainer.args.per_device_eval_batch_size
    was_training = model.training
    model.eval()
    try:
        share = process_share(eval_batches(lengths, batch_size, None), accelerator.process_index,
                              accelerator.num_processes)
        for indices, counts in share:
            batch = trainer._prepare_inputs(trainer.data_collator([dataset[index] for index in indices]))
            with capture_log_probs(model) as captured:
                trainer.compute_ref_log_probs(model, batch)
            if not counts:
                continue
            # Summed in float64 from the per-token values, exactly as the policy's are (`PreferenceTrainer`), so
            # that a policy equal to its reference ties (reward accuracy exactly 1/2) instead of differing by
            # float32 rounding.
            ref_chosen, ref_rejected = summed_log_probs(captured[-1], batch["completion_mask"][:, 1:]).chunk(2)
            chosen[indices] = ref_chosen.cpu()
            rejected[indices] = ref_rejected.cpu()
    finally:
        model.train(was_training)
    if accelerator.num_processes > 1:
        both = accelerator.reduce(torch.stack([chosen, rejected]).to(accelerator.device), reduction="sum").cpu()
        chosen, rejected = both[0], both[1]
    return chosen, rejected
