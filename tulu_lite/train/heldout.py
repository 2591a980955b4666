"""Held-out data: examples training never sees, and the assistant-token loss on them, per source.

A source is what a user mixes: the `dataset` field of each conversation (the name of its file when it has none),
or, when training from a mixture, the mixture source's name. Held-out examples come from `data.eval_files`, or are
a seeded `data.eval_fraction` of every source of the training data (so each source of a mixture is represented,
however small its share).

The held-out loss is the training loss measured on those examples: the summed negative log-likelihood of the
trained (assistant) tokens divided by their number, per source and over all sources (token-weighted, as a
training batch is). It is computed with the same forward and loss as training on that device, on batches laid out
by the same collator.

`BestAdapter` remembers the adapter weights of the evaluation with the lowest overall held-out loss, so the run's
output can be the best adapter, and counts the evaluations since then for early stopping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tulu_lite.data.encode import IGNORE_INDEX, SOURCE_COLUMN

EVAL_LOSS = "eval_loss"  # the overall held-out loss, under the Trainer's name (loggers show it as eval/loss)


def source_key(name: str) -> str:
    """The logged metric of one source's held-out loss (loggers show it as eval/loss/NAME)."""
    return f"{EVAL_LOSS}/{name}"


# ---- which examples are held out ----------------------------------------------------------------------------------


def split_heldout(dataset, fraction: float, seed: int):
    """Take a seeded `fraction` of every source out of `dataset`: return (the rest, {source: held-out examples}).

    Each source gives ``round(fraction x its examples)``, at least one, but always leaves one to train on; a source
    with a single example is not held out at all. The draw depends only on the seed and the examples' order.
    """
    groups = _indices_by_source(dataset)
    rng = random.Random(f"{seed}:heldout")
    held: dict[str, list[int]] = {}
    for name in sorted(groups):
        indices = groups[name]
        count = min(len(indices) - 1, max(1, round(fraction * len(indices))))
        if count >= 1:
            held[name] = sorted(rng.sample(indices, count))
    taken = {index for indices in held.values() for index in indices}
    rest = [index for index in range(len(dataset)) if index not in taken]
    return dataset.select(rest), {name: dataset.select(indices) for name, indices in held.items()}


def by_source(dataset) -> dict:
    """The examples of `dataset` grouped by source, sources in name order."""
    groups = _indices_by_source(dataset)
    return {name: dataset.select(groups[name]) for name in sorted(groups)}


def _indices_by_source(dataset) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(dataset[SOURCE_COLUMN]):
        groups.setdefault(name, []).append(index)
    return groups


@dataclass(frozen=True)
class SourceSize:
    examples: int
    trained_tokens: int  # the tokens the loss averages over (first token of each example excluded, as in training)


def source_sizes(sets: dict) -> dict[str, SourceSize]:
    """Examples and trained tokens per source (preference pairs: the trained tokens of both sides)."""
    return {name: SourceSize(len(ds), sum(sum(_trained(labels) for labels in ds[column])
                                          for column in _label_columns(ds)))
            for name, ds in sets.items()}


def _label_columns(dataset) -> list[str]:
    return ["labels"] if "labels" in dataset.column_names else ["chosen_labels", "rejected_labels"]


def _trained(labels: list[int]) -> int:
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


# ---- the loss on them ---------------------------------------------------------------------------------------------


def eval_batches(lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Batches of example indices for evaluation: by length (less padding), `batch_size` examples each, or as
    many as fit in `max_tokens` when training batches by a token budget."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    batches: list[list[int]] = []
    used = 0
    for index in order:
        if not batches or (len(batches[-1]) >= batch_size if max_tokens is None
                           else used + lengths[index] > max_tokens):
            batches.append([])
            used = 0
        batches[-1].append(index)
        used += lengths[index]
    return batches


def process_share(batches: list[list[int]], rank: int, world_size: int) -> list[tuple[list[int], bool]]:
    """This process's share of `batches` as (indices, counts), padded so that every process runs the same number of
    forwards: under FSDP each forward gathers every layer's weights from all processes, so one that ran out of
    batches early would leave the others waiting for ever. A padding entry repeats the first batch and does not
    count."""
    mine = [(indices, True) for indices in batches[rank::world_size]]
    padding = math.ceil(len(batches) / world_size) - len(mine)
    return mine + [(batches[0], False)] * padding if padding else mine


@torch.no_grad()
def summed_nll(model, batch: dict) -> torch.Tensor:
    """The summed NLL of a batch's trained tokens, computed the way training computes it on this device.

    CPU: the model's own cross-entropy (`num_items_in_batch=1` makes it a sum), as `TuluSFTTrainer.compute_loss`.
    GPU: TRL's fused LM head, as SFTTrainer's loss, which never builds the (tokens x vocab) logits.
    """
    device = model.get_input_embeddings().weight.device
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    batch["use_cache"] = False
    if device.type == "cpu":
        return model(**batch, num_items_in_batch=1).loss.double()
    return -model(**batch, fused_lm_head=True).log_probs.double().sum()


def heldout_sums(model, sets: dict, collate: Callable[[list[dict]], dict], *, batch_size: int,
                 max_tokens: int | None, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Per source (in `sets` order): [summed NLL, trained tokens] over this process's share of the batches."""
    sums = torch.zeros(len(sets), 2, dtype=torch.float64)
    for row, dataset in enumerate(sets.values()):
        lengths = [len(ids) for ids in dataset["input_ids"]]
        for batch_indices, counts in process_share(eval_batches(lengths, batch_size, max_tokens), rank, world_size):
            examples = [dataset[index] for index in batch_indices]
            batch = collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
            nll = float(summed_nll(model, batch))
            if counts:
                sums[row, 0] += nll
                sums[row, 1] += sum(_trained(e["labels"]) for e in examples)
    return sums


def losses_from_sums(names: Iterable[str], sums: torch.Tensor) -> dict[str, float]:
    """`{eval_loss: overall, eval_loss/SOURCE: ...}` from the (reduced) per-source sums."""
    metrics = {EVAL_LOSS: float(sums[:, 0].sum() / sums[:, 1].sum().clamp(min=1))}
    for name, (nll, tokens) in zip(names, sums.tolist()):
        metrics[source_key(name)] = nll / tokens if tokens else math.nan
    return metrics


def heldout_metrics(trainer) -> dict[str, float]:
    """The held-out losses of a stage's trainer's model as it is now, every process evaluating its share of the
    batches (`trainer.run` holds the held-out sets and the recipe)."""
    sets, training = trainer.run.data.heldout, trainer.run.recipe.training
    model, accelerator = trainer.model, trainer.accelerator
    was_training = model.training
    model.eval()
    try:
        with accelerator.autocast():
            sums = heldout_sums(model, sets, trainer.data_collator, batch_size=training.per_device_batch_size,
                                max_tokens=training.max_tokens_per_batch, rank=accelerator.process_index,
                                world_size=accelerator.num_processes)
    finally:
        model.train(was_training)
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    return losses_from_sums(sets.keys(), sums)


# ---- the best adapter and early stopping --------------------------------------------------------------------------


@dataclass
class BestAdapter:
    """The trainable weights at the lowest overall held-out loss so far, and evaluations since (for patience).

    The evaluation before training (step 0) is drawn but never a candidate: the output is always a trained adapter.
    """

    step: int | None = None
    loss: float = math.inf
    weights: dict[str, torch.Tensor] | None = None
    evals_since: int = 0

    def observe(self, step: int, loss: float, model) -> bool:
        """Record an evaluation; return whether it is the new best (then its weights are kept, on CPU)."""
        if step == 0:
            return False
        if loss < self.loss:
            self.step, self.loss, self.evals_since = step, loss, 0
            self.weights = trainable_weights(model)
            return True
        self.evals_since += 1
        return False

    def restore_into(self, model) -> None:
        """Put the best weights back into `model` (a no-op when there is no best yet)."""
        if self.weights is None:
            return
        parameters = dict(model.named_parameters())
        for name, value in self.weights.items():
            parameters[name].data.copy_(value.to(parameters[name].device))

    def resume(self, log_history: list[dict], best_step: int | None, weights: dict | None) -> None:
        """Become the tracker of a resumed run: its best evaluation and the evaluations since, from the Trainer's
        log history (`weights`: that evaluation's adapter, from the checkpoint)."""
        evals = [entry for entry in log_history if EVAL_LOSS in entry and entry.get("step", 0) > 0]
        self.step, self.loss, self.weights = None, math.inf, None
        for entry in evals:
            if entry["step"] == best_step:
                self.step, self.loss, self.weights = best_step, entry[EVAL_LOSS], weights
        self.evals_since = sum(1 for entry in evals if self.step is not None and entry["step"] > self.step)


def trainable_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().to("cpu", copy=True) for name, param in model.named_parameters()
            if param.requires_grad}


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(path))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@dataclass
class EvalRecord:
    """One evaluation for metrics.json: the step, the overall loss and each source's."""

    step: int
    loss: float
    sources: dict[str, float] = field(default_factory=dict)


def eval_history(log_history: list[dict], names: Iterable[str]) -> list[EvalRecord]:
    names = list(names)
    return [EvalRecord(entry["step"], entry[EVAL_LOSS], {name: entry.get(source_key(name)) for name in names})
            for entry in log_history if EVAL_LOSS in entry]
