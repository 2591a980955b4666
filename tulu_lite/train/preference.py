"""Preference tuning (DPO) through TRL's `DPOTrainer`, fed by tulu-lite's own pair encoding.

TRL's DPOTrainer tokenizes ``prompt`` / ``chosen`` / ``rejected`` itself with the chat template and trains every
completion token. Here the data is already encoded (`tulu_lite.data.pairs`: each side exactly as SFT encodes a
conversation), so `PreferenceTrainer` skips TRL's preparation (`_prepare_dataset` returns the dataset as it is) and
`PairCollator` hands TRL a batch in its own layout: the chosen rows, then the rejected rows, of one right-padded
``input_ids``, with ``completion_mask`` = our trained tokens. TRL derives its labels from that mask
(``input_ids.masked_fill(completion_mask == 0, -100)``), so the tokens that carry the DPO loss are exactly the
encoder's. Every loss TRL offers is then TRL's own code: the log-probabilities are the SUM over the trained tokens,
and ``sigmoid_norm`` / ``ipo`` divide the policy-minus-reference log-ratios by the count of trained tokens.

The reference (``dpo.reference``):

- ``base``: a new adapter is trained and the reference is the same model with the adapter disabled (open-instruct's
  LoRA DPO). TRL would copy the fresh adapter as a frozen "ref" adapter (numerically the base, since LoRA B starts
  at zero); the copy is removed so the reference forward is the base itself.
- ``adapter``: the SFT adapter is trained further and TRL's frozen "ref" copy of it is the reference, so the first
  step has policy = reference and a loss of log 2 (dropout is disabled so that the two agree).

With ``dpo.precompute_reference`` the reference log-probabilities of every pair (training and held-out) are
computed once before training and cached on disk (`ReferenceCache`: keyed by the reference model's identity and
the encoded pairs' token ids), so a repeated or resumed run reads them, the reference forward never runs while
training, and the frozen "ref" adapter copy is dropped.

`heldout_preference_metrics` measures the held-out pairs per source: the DPO loss, the reward accuracy (chosen
reward above rejected; a tie counts half, so policy = reference is exactly chance) and the reward margin, with
rewards ``beta x log-ratio`` (per token for the length-normalised losses, as those losses compare them).
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from tulu_lite.data.encode import IGNORE_INDEX
from tulu_lite.data.pairs import PAIR_COLUMNS, SIDES
from tulu_lite.errors import TuluError
from tulu_lite.recipe import Recipe
from tulu_lite.train.heldout import (
    EVAL_LOSS,
    eval_batches,
    process_share,
    trainable_weights,
)
from tulu_lite.train.reference import (
    REF_COLUMNS,
    ReferenceCache,
    capture_log_probs,
    reference_cache,
    summed_log_probs,
    with_reference_logps,
)
from tulu_lite.train.run import RunContext, Start
from tulu_lite.train.stage import StageTrainer, training_arguments

# ---- batches ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairCollator:
    """Collate encoded pairs into TRL's DPO batch: ``input_ids`` / ``attention_mask`` / ``completion_mask`` of 2B
    right-padded rows (the B chosen sides, then the B rejected sides), plus precomputed reference log-probs when the
    pairs carry them.

    ``completion_mask`` marks the encoder's trained tokens (labels != -100). The first token of a row is never a
    target (nothing predicts it), so it is never marked: the mask's count is the number of trained tokens the
    log-probabilities sum over, which ``sigmoid_norm`` and ``ipo`` divide by.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise TuluError("collate: empty batch (no pairs to collate)")
        rows = [(feature[f"{side}_input_ids"], feature[f"{side}_labels"]) for side in SIDES for feature in features]
        width = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (ids, labels) in enumerate(rows):
            if len(ids) != len(labels):
                raise TuluError(f"collate: pair {row % len(features)} has {len(ids)} input_ids but {len(labels)} "
                                f"labels")
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, 1: len(ids)] = torch.as_tensor(labels[1:], dtype=torch.long) != IGNORE_INDEX
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        for column in REF_COLUMNS:
            if column in features[0]:
                batch[column] = torch.tensor([feature[column] for feature in features], dtype=torch.float64)
        return batch


@dataclass
class PairLogps:
    """One batch, per pair: the summed log-probabilities of the trained tokens of each side under the policy and the
    reference, and how many trained tokens each side has."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor

    def logratios(self, normalised: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy minus reference log-prob of each side: summed, or per trained token (`normalised`)."""
        chosen, rejected = self.chosen - self.ref_chosen, self.rejected - self.ref_rejected
        if normalised:
            chosen, rejected = chosen / self.chosen_tokens.clamp(min=1), rejected / self.rejected_tokens.clamp(min=1)
        return chosen, rejected

    def rewards(self, beta: float, normalised: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """DPO's implicit rewards, ``beta x log-ratio``, of the chosen and the rejected sides."""
        chosen, rejected = self.logratios(normalised)
        return beta * chosen, beta * rejected


def reward_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when the chosen reward is higher, 0 when lower, 1/2 for a tie (policy = reference is chance)."""
    return (chosen > rejected).double() + 0.5 * (chosen == rejected).double()


# ---- the trainer ------------------------------------------------------------------------------------------------


class PreferenceTrainer(StageTrainer, DPOTrainer):
    """TRL's DPOTrainer on pre-encoded pairs (see the module docstring), plus what every stage adds
    (`StageTrainer`: run, best adapter, early stopping on the held-out DPO loss, token counts, checkpoints).

    `reference` is the recipe's ``dpo.reference``; `reference_cache` (``dpo.precompute_reference``) precomputes the
    reference log-probabilities of the training and held-out pairs, through the cache. After each loss computation
    `last_pairs` holds the batch's `PairLogps`.

    TRL casts a quantized model's trainable LoRA weights to bf16 (pending peft#2889); they are put back exactly as
    they were (fp32), so an SFT adapter and its frozen reference copy start identical.
    """

    def __init__(self, *, reference: str = "base", reference_cache: ReferenceCache | None = None,
                 normalised_rewards: bool = False, **kwargs) -> None:
        before = trainable_weights(kwargs["model"])
        super().__init__(**kwargs)
        parameters = dict(self.model.named_parameters())
        for name, value in before.items():
            parameters[name].data = value.to(parameters[name].device)
        self.reference = reference
        self.normalised_rewards = normalised_rewards
        self.last_pairs: PairLogps | None = None
        if self.args.device.type == "cpu":
            use_plain_lm_head(self.model)
        peft_config = self.model.peft_config
        if reference == "base" and "ref" in peft_config:
            # The reference is the base with the adapter disabled, as in open-instruct; a copy of a fresh adapter
            # computes the same (LoRA B is zero) at the cost of a second adapter.
            self.model.delete_adapter("ref")
        if reference_cache is not None:
            self.train_dataset = with_reference_logps(self, self.train_dataset, "train", reference_cache)
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {name: with_reference_logps(self, dataset, name, reference_cache)
                                     for name, dataset in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = with_reference_logps(self, self.eval_dataset, "eval", reference_cache)
            self.precompute_ref_logps = True  # _compute_loss reads the reference from the batch from now on
            if "ref" in self.model.peft_config:
                self.model.delete_adapter("ref")  # the reference never sits in memory

    def heldout_metrics(self) -> dict[str, float]:
        return heldout_preference_metrics(self)

    # The three private overrides below are TRL 1.16's only ways in: DPOTrainer has no public switch to skip its
    # own tokenisation (`_prepare_dataset`), to keep our pre-encoded columns (`_set_signature_columns_if_needed`),
    # or to read the per-pair log-probabilities its loss computes (`_compute_loss`). Remove each when TRL offers
    # the public equivalent (pre-tokenized DPO datasets with a completion mask; returned per-pair log-probs).

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Our pairs are already tokenized, truncated and masked by `tulu_lite.data.pairs`: keep them as they are."""
        missing = [name for name in PAIR_COLUMNS if name not in dataset.column_names]
        if missing:
            raise TuluError(f"{dataset_name} dataset: not encoded preference pairs (missing {', '.join(missing)}; "
                            f"encode with tulu_lite.data.pairs.encode_pairs_dataset)")
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [*PAIR_COLUMNS, *REF_COLUMNS]

    def _compute_loss(self, model, inputs, return_outputs):
        """TRL's loss, keeping the per-pair log-probabilities it computes (a forward hook reads the per-token
        log-probs of the policy call and, without precomputed values, of the reference call that follows it)."""
        with capture_log_probs(self.model) as captured:
            result = super()._compute_loss(model, inputs, return_outputs)
        self.last_pairs = self._pair_logps(inputs, captured)
        self._replace_reward_metrics(self.last_pairs)
        return result

    def _pair_logps(self, inputs: dict, captured: list[torch.Tensor]) -> PairLogps:
        mask = inputs["completion_mask"][:, 1:]
        expected = 1 if self.precompute_ref_logps else 2
        if len(captured) != expected:
            raise RuntimeError(f"PreferenceTrainer: expected {expected} fused forward(s) per loss, saw "
                               f"{len(captured)} (has TRL's DPOTrainer._compute_loss changed?)")
        policy = summed_log_probs(captured[0], mask)
        if self.precompute_ref_logps:
            reference = torch.cat([inputs[REF_COLUMNS[0]], inputs[REF_COLUMNS[1]]]).double()
        else:
            reference = summed_log_probs(captured[1], mask)
        counts = mask.sum(dim=1).double()
        chosen, rejected = policy.chunk(2)
        ref_chosen, ref_rejected = reference.to(policy.device).chunk(2)
        chosen_tokens, rejected_tokens = counts.chunk(2)
        return PairLogps(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens)

    def _replace_reward_metrics(self, pairs: PairLogps) -> None:
        """TRL logs rewards of summed log-ratios and a strict accuracy; log them as `heldout_preference_metrics`
        measures them (per token for the length-normalised losses; ties count half)."""
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        chosen, rejected = pairs.rewards(self.beta, self.normalised_rewards)
        values = {"rewards/accuracies": reward_accuracy(chosen, rejected)}
        if self.normalised_rewards:
            values.update({"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
                           "logps/chosen": pairs.chosen / pairs.chosen_tokens.clamp(min=1),
                           "logps/rejected": pairs.rejected / pairs.rejected_tokens.clamp(min=1)})
        for name, value in values.items():
            if metrics.get(name):
                metrics[name][-1] = self.accelerator.gather(value.float()).mean().item()


def use_plain_lm_head(model) -> None:
    """On CPU, answer TRL's ``fused_lm_head=True`` calls from the model's full logits.

    TRL's chunked log-prob head (trl/trainer/utils.py `add_fused_lm_head`) never builds the (tokens x vocab) logits,
    which matters on a GPU; on CPU it made a tiny-LLaMA DPO step about 2x slower (forward alone about 3.5x; measured
    with trl 1.16), as it did for SFT (`tulu_lite.train.trainer.TuluSFTTrainer`). Same values: per-token
    log-probs of the labels, zero where the label is -100, and the metrics TRL reads (entropy, mean logit, top-1).
    The vocabulary-wide work (log-softmax, entropy, arg-max) runs on the trained positions only: TRL reads every
    output through the label mask, and in a padded batch of pairs most positions are prompt or padding.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    fused = target.forward  # TRL's patched forward: fused_lm_head=False runs the model's own

    def forward(self, *args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or kwargs.get("shift_labels") is not None or kwargs.get("output_router_logits"):
            return fused(*args, fused_lm_head=fused_lm_head, labels=labels, num_items_in_batch=num_items_in_batch,
                         **kwargs)
        kwargs["use_cache"] = False
        logits = fused(*args, **kwargs).logits[:, :-1]
        targets = labels[:, 1:].to(logits.device)
        mask = targets != IGNORE_INDEX
        trained = logits[mask]  # (trained tokens, vocab)
        trained = trained.float() if trained.dtype in (torch.float16, torch.bfloat16) else trained
        log_softmax = trained.log_softmax(dim=-1)
        picked = log_softmax.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
        log_probs = _at_positions(mask, picked)
        with torch.no_grad():
            entropy = _at_positions(mask, -(log_softmax.exp() * log_softmax).sum(dim=-1))
            mean_logits = _at_positions(mask, trained.mean(dim=-1))
            is_top1 = _at_positions(mask, trained.argmax(dim=-1) == targets[mask])
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    target.forward = types.MethodType(forward, target)


def _at_positions(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like `mask` holding `values` at its true positions (in order) and zero elsewhere
    (differentiable in `values`)."""
    return values.new_zeros(mask.shape).index_put((mask,), values)


# ---- the recipe -> TRL ------------------------------------------------------------------------------------------


def dpo_config(recipe: Recipe, *, evaluate: bool = False, eval_on_start: bool = False) -> DPOConfig:
    """Map a ``stage: dpo`` recipe onto TRL's DPOConfig (the optimisation part as `tulu_lite.train.sft_config`).

    Our pairs arrive encoded and our collator lays them out (no TRL truncation, no padding-free: TRL 1.16's DPO
    has it disabled). Reference log-probs are precomputed by `PreferenceTrainer` through its cache, not by TRL.
    Dropout is disabled only with ``reference: adapter``, where the frozen copy runs through the same dropout layers;
    with ``reference: base`` the reference (adapter disabled) has no LoRA dropout and ``lora.dropout`` applies to the
    policy, as in open-instruct's QLoRA DPO script.
    """

    dpo = recipe.dpo
    if dpo is None:
        raise TuluError("dpo_config: the recipe's stage is not dpo")
    return DPOConfig(
        **training_arguments(recipe, evaluate=evaluate, eval_on_start=eval_on_start),
        per_device_eval_batch_size=recipe.training.per_device_batch_size,
        beta=dpo.beta,
        loss_type=dpo.loss_types,
        loss_weights=dpo.loss_weights,
        label_smoothing=dpo.label_smoothing,
        discopop_tau=dpo.discopop_tau,
        precompute_ref_log_probs=False,  # PreferenceTrainer precomputes through its own cache
        disable_dropout=dpo.reference == "adapter",
    )


def make_preference_trainer(recipe: Recipe, model, tokenizer, data, heldout: dict | None = None,
                            callbacks: Sequence[TrainerCallback] = (), *, start: Start | None = None,
                            cache_folder: Path | None = None,
                            trainer_class: type[PreferenceTrainer] = PreferenceTrainer) -> PreferenceTrainer:
    """A PreferenceTrainer for the recipe: `data` is the run's `TrainingData` (encoded training pairs and held-out
    pairs per source), or a dataset of encoded pairs with `heldout` beside it; the reference and its cache as the
    recipe says (`cache_folder` default: `tulu_lite.train.reference.reference_cache`'s)."""
    from tulu_lite.data.pairs import EncodedPairsReport
    from tulu_lite.train.data import TrainingData

    if not isinstance(data, TrainingData):
        data = TrainingData(data, EncodedPairsReport(), dict(heldout or {}))
    start = start or Start()
    cache = reference_cache(recipe, cache_folder) if recipe.dpo.precompute_reference else None
    evaluate = bool(data.heldout)
    return trainer_class(
        run=RunContext(recipe, data, start),
        model=model,
        args=dpo_config(recipe, evaluate=evaluate, eval_on_start=start.checkpoint is None),
        data_collator=PairCollator(pad_token_id=_pad_id(tokenizer)),
        train_dataset=data.train,
        eval_dataset=dict(data.heldout) if evaluate else None,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        reference=recipe.dpo.reference,
        reference_cache=cache,
        normalised_rewards=recipe.dpo.length_normalised,
    )


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ---- held-out metrics -------------------------------------------------------------------------------------------

# Per source: summed batch losses (x pairs), pairs, correctly ordered pairs, summed margins, summed rewards.
_SUMS = ("loss", "pairs", "correct", "margin", "chosen", "rejected")


def preference_sums(trainer: PreferenceTrainer, sets: dict, *, batch_size: int) -> torch.Tensor:
    """Per source (in `sets` order): the `_SUMS` over this process's share of the batches.

    Each batch goes through the trainer's own loss (TRL's, so the held-out loss is the training objective). TRL
    gathers metrics across processes inside it, so every process runs the same number of batches, each round of
    the same size (`_equal_size_share`).
    """
    accelerator = trainer.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    sums = torch.zeros(len(sets), len(_SUMS), dtype=torch.float64)
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        for row, dataset in enumerate(sets.values()):
            lengths = [len(c) + len(r) for c, r in zip(dataset["chosen_input_ids"], dataset["rejected_input_ids"])]
            for indices, counts in _equal_size_share(eval_batches(lengths, batch_size, None), batch_size, rank, world):
                batch_sums = _batch_sums(trainer, [dataset[index] for index in indices])
                if counts:
                    sums[row] += batch_sums
    finally:
        model.train(was_training)
        trainer._metrics["eval"].clear()  # TRL's per-batch means: the sums above replace them
    if world > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    return sums


def _equal_size_share(batches: list[list[int]], batch_size: int, rank: int, world: int) -> list[tuple[list[int], bool]]:
    """`process_share` with every process's batch of a round the same size: TRL gathers per-pair metrics across
    processes inside its loss, and a collective over tensors of unequal sizes fails. The full batches are shared
    out; the short last one, if any, runs on every process and counts on the first only."""
    full = [indices for indices in batches if len(indices) == batch_size]
    short = [(indices, rank == 0) for indices in batches if len(indices) != batch_size]
    return process_share(full, rank, world) + short


@torch.no_grad()
def _batch_sums(trainer: PreferenceTrainer, examples: list[dict]) -> torch.Tensor:
    batch = trainer._prepare_inputs(trainer.data_collator(examples))
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(trainer.model, batch)
    chosen, rejected = trainer.last_pairs.rewards(trainer.beta, trainer.normalised_rewards)
    count = len(examples)
    return torch.tensor([float(loss) * count, count, float(reward_accuracy(chosen, rejected).sum()),
                         float((chosen - rejected).sum()), float(chosen.sum()), float(rejected.sum())],
                        dtype=torch.float64)


_METRICS = {EVAL_LOSS: "loss", "eval_rewards/accuracies": "correct", "eval_rewards/margins": "margin",
            "eval_rewards/chosen": "chosen", "eval_rewards/rejected": "rejected"}  # logged name -> mean of sum


def preference_metrics_from_sums(names, sums: torch.Tensor) -> dict[str, float]:
    """``eval_loss`` (the mean DPO loss over all held-out pairs, as SFT's best-adapter and early stopping read it)
    and ``eval_loss/SOURCE``; reward accuracy, margin and mean rewards, overall and ``.../SOURCE``."""
    rows = [(None, sums.sum(dim=0)), *zip(names, sums)]
    metrics: dict[str, float] = {}
    for source, values in rows:
        pairs = float(values[_SUMS.index("pairs")])
        for metric, column in _METRICS.items():
            key = metric if source is None else f"{metric}/{source}"
            metrics[key] = float(values[_SUMS.index(column)]) / pairs if pairs else math.nan
    return metrics


def heldout_preference_metrics(trainer: PreferenceTrainer, sets: dict | None = None) -> dict[str, float]:
    """The held-out preference metrics of the model as it is now (`preference_metrics_from_sums`), every process
    evaluating its share of the batches; `sets` defaults to the trainer's held-out sets (with their precomputed
    reference log-probs when the recipe precomputes)."""
    sets = sets if sets is not None else trainer.eval_dataset
    sums = preference_sums(trainer, sets, batch_size=trainer.args.per_device_eval_batch_size)
    return preference_metrics_from_sums(sets.keys(), sums)


# ---- in metrics.json and on screen ------------------------------------------------------------------------------

_ACCURACY, _MARGIN = "eval_rewards/accuracies", "eval_rewards/margins"


def preference_history(history: list[dict], log_history: list[dict], names) -> list[dict]:
    """metrics.json's held-out history of a dpo run: each evaluation's record (step, loss, loss per source) plus its
    reward accuracy and margin, overall and per source."""
    names = list(names)
    evaluations = {entry["step"]: entry for entry in log_history if EVAL_LOSS in entry}
    for record in history:
        entry = evaluations.get(record["step"], {})
        record["reward_accuracy"], record["reward_margin"] = entry.get(_ACCURACY), entry.get(_MARGIN)
        record["sources_reward_accuracy"] = {name: entry.get(f"{_ACCURACY}/{name}") for name in names}
        record["sources_reward_margin"] = {name: entry.get(f"{_MARGIN}/{name}") for name in names}
    return history


def reward_table(metrics: dict):
    """Held-out reward accuracy and margin per source: before training, at the best evaluation, at the last one."""
    from rich.markup import escape
    from rich.table import Table

    history = metrics["heldout"]["history"]
    columns = [("step 0", next((entry for entry in history if entry["step"] == 0), None)),
               (f"best: {metrics['best_step']}", next((e for e in history if e["step"] == metrics["best_step"]), None)),
               (f"last: {history[-1]['step']}", history[-1])]
    columns = [(title, entry) for title, entry in columns if entry is not None]
    table = Table(title="held-out reward accuracy / margin by step")
    for title in ("source", "pairs", *(title for title, _ in columns)):
        table.add_column(title, justify="left" if title == "source" else "right")

    def cell(accuracy, margin) -> str:
        return "" if accuracy is None else f"{accuracy:.2f} / {margin:+.3f}"

    for name, size in metrics["heldout"]["sources"].items():
        table.add_row(escape(name), f"{size['examples']:,}",
                      *(cell(entry["sources_reward_accuracy"].get(name), entry["sources_reward_margin"].get(name))
                        for _, entry in columns))
    table.add_section()
    pairs = sum(size["examples"] for size in metrics["heldout"]["sources"].values())
    table.add_row("overall", f"{pairs:,}", *(cell(entry["reward_accuracy"], entry["reward_margin"])
                                              for _, entry in columns))
    return table
