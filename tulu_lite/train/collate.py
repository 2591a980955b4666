"""Collate: turn encoded examples into training batches with loss on assistant tokens only.

The encoder already decided which tokens carry loss (`labels` is -100 everywhere else); the collator only lays
examples out, in one of two ways chosen by `data.padding_free`:

- padded: one row per example, right-padded to the longest in the batch, `attention_mask` 0 on padding and
  labels -100 there. Labels never come from comparing tokens with the pad id (the pad token may be `unk` or
  `eos`, and a real `eos` must keep its label).
- padding-free: every example of the batch concatenated into a single row, `position_ids` restarting at 0 at
  each example and no `attention_mask`. transformers (>= 5, `masking_utils.find_packed_sequence_indices`) turns
  restarting `position_ids` into a block-diagonal causal mask for sdpa, eager and flex attention (for sdpa and
  eager a dense T x T boolean mask: correct, but T^2 memory and attention work over the whole row); flash-attention
  runs its varlen kernel on the `cu_seq_lens_*` / `max_length_*` given here (or derives them from the positions),
  attending only within each example, which is why `model.attn_implementation: auto` picks it when it can run.
  Either way no token attends to another example, and no FLOPs are spent on padding.

Both layouts give exactly the same loss and gradients (tests/test_collate.py checks it on a tiny LLaMA, with
LoRA and with 4-bit nf4). The causal-LM loss predicts `labels[t + 1]` from position `t`, so the first token of
each example must never be a target: in a padded row it is shifted away anyway, in a packed row it would be
predicted from the previous example's last token. Its label is set to -100 in both layouts, which also makes
transformers' `num_items_in_batch` count (`labels[..., 1:] != -100`) the same for both, so gradient accumulation
stays exact even when micro-batches hold different numbers of tokens.

`TokenBudgetBatchSampler` makes padding-free rows full: it groups examples so that each batch holds as many
tokens as fit in a budget (sorting by length within seeded megabatches, first-fit decreasing), instead of a fixed
number of examples whose total length varies by 10x from batch to batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from tulu_lite.data.encode import IGNORE_INDEX
from tulu_lite.errors import TuluError

DEFAULT_MEGABATCH_SIZE = 256

Feature = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class AssistantOnlyCollator:
    """Collate `{"input_ids", "labels"}` features (labels already masked by the encoder) into a batch."""

    pad_token_id: int
    padding_free: bool

    def __call__(self, features: Sequence[Feature]) -> dict[str, object]:
        examples = [_example_tensors(feature, index) for index, feature in enumerate(features)]
        if not examples:
            raise TuluError("collate: empty batch (no examples to collate)")
        if self.padding_free:
            return _packed_batch(examples)
        return _padded_batch(examples, self.pad_token_id)


def _example_tensors(feature: Feature, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one feature and return (input_ids, labels) with the first label masked (see the module docstring)."""
    missing = [key for key in ("input_ids", "labels") if key not in feature]
    if missing:
        raise TuluError(f"collate: example {index} has no {' or '.join(missing)} (expected encoded examples)")
    input_ids = torch.as_tensor(feature["input_ids"], dtype=torch.long).flatten()
    labels = torch.as_tensor(feature["labels"], dtype=torch.long).flatten().clone()
    if input_ids.numel() == 0:
        raise TuluError(f"collate: example {index} is empty")
    if labels.shape != input_ids.shape:
        raise TuluError(
            f"collate: example {index} has {input_ids.numel()} input_ids but {labels.numel()} labels (expected equal)"
        )
    labels[0] = IGNORE_INDEX
    return input_ids, labels


def _padded_batch(examples: list[tuple[torch.Tensor, torch.Tensor]], pad_token_id: int) -> dict[str, object]:
    """One row per example, right-padded to the longest; padding is masked out of attention and loss."""
    width = max(ids.numel() for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, example_labels) in enumerate(examples):
        input_ids[row, : ids.numel()] = ids
        labels[row, : ids.numel()] = example_labels
        attention_mask[row, : ids.numel()] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def _packed_batch(examples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, object]:
    """All examples in one row with restarting position_ids, so attention stays inside each example."""
    lengths = torch.tensor([ids.numel() for ids, _ in examples])
    position_ids = torch.cat([torch.arange(int(length)) for length in lengths])
    cu_seq_lens = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
    max_length = int(lengths.max())
    return {
        "input_ids": torch.cat([ids for ids, _ in examples])[None],
        "labels": torch.cat([example_labels for _, example_labels in examples])[None],
        "position_ids": position_ids[None],
        # Flash-attention's varlen kernel takes the boundaries directly; without them transformers re-derives them
        # from position_ids in every layer, with a device-to-host sync each time. sdpa/eager ignore these keys.
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
        # transformers only builds the per-example mask when there is no KV cache
        # (`masking_utils._preprocess_mask_arguments`), and a model whose config has `use_cache=True` (the default)
        # creates one even in training: the packed row would then get one causal mask across all examples.
        # SFTTrainer also sets this; carrying it in the batch keeps a bare `model(**batch)` correct.
        "use_cache": False,
    }


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, *, seed: int, megabatch_size: int = DEFAULT_MEGABATCH_SIZE
) -> list[list[int]]:
    """Group example indices into batches of at most `max_tokens` tokens each, as full as possible.

    The examples are shuffled (seeded), cut into megabatches of `megabatch_size`, and each megabatch is packed
    first-fit decreasing: longest first, each example into the first batch that still has room. Sorting only
    within a megabatch keeps batches random across the dataset while leaving little unused budget.
    """
    if max_tokens < 1 or megabatch_size < 1:
        raise TuluError(f"token budget batching: max_tokens ({max_tokens}) and megabatch_size must be positive")
    too_long = [index for index, length in enumerate(lengths) if length > max_tokens]
    if too_long:
        raise TuluError(
            f"token budget batching: example {too_long[0]} has {lengths[too_long[0]]} tokens, more than the "
            f"budget of {max_tokens} per batch (raise the budget to at least data.max_seq_length)"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches: list[list[int]] = []
    for start in range(0, len(order), megabatch_size):
        megabatch = sorted(order[start : start + megabatch_size], key=lambda index: -lengths[index])
        batches.extend(_first_fit(megabatch, lengths, max_tokens))
    return batches


def _first_fit(indices: list[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Put each example (longest first) into the first batch with room for it."""
    batches: list[list[int]] = []
    room: list[int] = []
    for index in indices:
        slot = next((b for b, left in enumerate(room) if left >= lengths[index]), None)
        if slot is None:
            batches.append([])
            room.append(max_tokens)
            slot = len(batches) - 1
        batches[slot].append(index)
        room[slot] -= lengths[index]
    return batches


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """A DataLoader `batch_sampler` yielding token-budget batches (see `token_budget_batches`).

    The batches are built once, so `len()` (which Trainer uses to size the LR schedule) never changes and a
    resumed run replays the same batches; their order is reshuffled every epoch by `set_epoch`, which
    `tulu_lite.train.callbacks.SamplerEpoch` calls at every epoch start (Trainer's own call does not reach the
    sampler once accelerate has wrapped it twice: `BatchSamplerShard` for data parallel, then `SkipBatchSampler` on
    resume).
    Under data parallel accelerate deals the batches out in turn (batch k to process k mod N), so every process
    must see the same order: it depends only on the seed and the epoch. Gradient accumulation over batches of
    different sizes stays exact because Trainer normalizes the loss by `num_items_in_batch`, the label count over
    all accumulated micro-batches.
    """

    def __init__(
        self, lengths: Sequence[int], max_tokens: int, *, seed: int, megabatch_size: int = DEFAULT_MEGABATCH_SIZE
    ) -> None:
        self.batches = token_budget_batches(lengths, max_tokens, seed=seed, megabatch_size=megabatch_size)
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self.fill = sum(lengths) / (len(self.batches) * max_tokens) if self.batches else 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for position in torch.randperm(len(self.batches), generator=generator).tolist():
            yield list(self.batches[position])
