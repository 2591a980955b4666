"""Preference tuning through TRL's DPOTrainer on tulu-lite's own pair encoding: the batch layout, the loss, rewards
and log-probs against the formulas, the reference (base, adapter, precomputed and cached), and a short training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_runs import tiny_cache  # noqa: F401  (keeps built tiny bases out of the user cache)

from tulu_lite.data.encode import IGNORE_INDEX
from tulu_lite.data.pairs import encode_pairs_dataset
from tulu_lite.errors import TuluError
from tulu_lite.model.loading import load_base_model, load_recipe_tokenizer
from tulu_lite.recipe import Recipe
from tulu_lite.train.preference import (
    PairCollator,
    PreferenceTrainer,
    _equal_size_share,
    dpo_config,
    heldout_preference_metrics,
    make_preference_trainer,
)
from tulu_lite.train.reference import load_sft_adapter, policy_model

DEMO_PAIRS = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "preferences.jsonl"


def dpo_recipe(tmp_path: Path, *, dpo: dict | None = None, quantized: bool = False, **training) -> Recipe:
    return Recipe.model_validate({
        "stage": "dpo",
        "model": {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 32}},
        **({"quantization": {}} if quantized else {}),
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train_files": [str(DEMO_PAIRS)], "padding_free": False, "max_seq_length": 128},
        "training": {"learning_rate": 1e-2, "per_device_batch_size": 4, "gradient_checkpointing": False,
                     "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 1000, "seed": 1, **training},
        "dpo": dpo or {},
        "output_dir": str(tmp_path / "out"),
    })


@pytest.fixture(scope="module")
def tokenizer():
    from tulu_lite.recipe import ModelSettings

    return load_recipe_tokenizer(ModelSettings(name_or_path="tiny-llama"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tokenizer):
    encoded, _ = encode_pairs_dataset([DEMO_PAIRS], tokenizer, "tulu", 128,
                                      cache_dir=str(tmp_path_factory.mktemp("arrow")), with_source=True)
    return encoded


def trained_policy(recipe: Recipe, *, seed: int = 0, scale: float = 0.05):
    """The recipe's policy with its LoRA B moved off zero (seeded), so that policy and reference differ."""
    model = policy_model(recipe, load_base_model(recipe.model, recipe.quantization))
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name and ".default." in name:
            param.data = torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale
    return model


# ---- the batch ---------------------------------------------------------------------------------------------------


def test_pair_collator_lays_out_chosen_then_rejected():
    features = [{"chosen_input_ids": [1, 5, 6, 7], "chosen_labels": [IGNORE_INDEX, IGNORE_INDEX, 6, 7],
                 "rejected_input_ids": [1, 5, 8], "rejected_labels": [1, IGNORE_INDEX, 8],
                 "ref_chosen_logps": -3.5, "ref_rejected_logps": -4.0},
                {"chosen_input_ids": [1, 9], "chosen_labels": [IGNORE_INDEX, 9],
                 "rejected_input_ids": [1, 9, 9, 9, 9], "rejected_labels": [IGNORE_INDEX, 9, 9, 9, 9],
                 "ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0}]
    batch = PairCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 0], [1, 9, 0, 0, 0], [1, 5, 8, 0, 0], [1, 9, 9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    # the encoder's trained tokens; never the first token of a row (nothing predicts it)
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert batch["ref_chosen_logps"].tolist() == [-3.5, -1.0] and batch["ref_rejected_logps"].tolist() == [-4.0, -2.0]
    assert PairCollator(pad_token_id=0, pad_to_multiple_of=8)(features)["input_ids"].shape == (4, 8)
    with pytest.raises(TuluError, match="empty batch"):
        PairCollator(pad_token_id=0)([])


def test_dpo_config_maps_the_recipe(tmp_path):
    recipe = dpo_recipe(tmp_path, dpo={"beta": 0.3, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]})
    config = dpo_config(recipe)
    assert (config.beta, config.loss_type, config.loss_weights) == (0.3, ["sigmoid", "sft"], [1.0, 0.5])
    assert config.max_length is None and not config.padding_free and not config.precompute_ref_log_probs
    assert not config.disable_dropout and not config.bf16 and config.output_dir == str(recipe.checkpoint_dir)
    adapter = dpo_recipe(tmp_path, dpo={"reference": "adapter", "adapter": str(tmp_path)})
    assert dpo_config(adapter).disable_dropout  # the frozen copy must compute what the policy computes


def test_unencoded_data_is_refused(tmp_path, tokenizer):
    from datasets import Dataset

    recipe = dpo_recipe(tmp_path)
    raw = Dataset.from_list([{"prompt": "hi", "chosen": "a", "rejected": "b"}])
    with pytest.raises(TuluError, match="train dataset: not encoded preference pairs"):
        make_preference_trainer(recipe, trained_policy(recipe), tokenizer, raw)


# ---- loss, rewards and log-probs against the formulas ------------------------------------------------------------


def independent_logps(model, example: dict, side: str) -> tuple[float, int]:
    """Summed log-probability of a side's trained tokens, and their count, from the model's own logits."""
    ids, labels = example[f"{side}_input_ids"], example[f"{side}_labels"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    log_probs = logits.log_softmax(dim=-1)
    trained = [t for t in range(1, len(ids)) if labels[t] != IGNORE_INDEX]
    return sum(float(log_probs[t - 1, ids[t]]) for t in trained), len(trained)


@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm", "ipo"])
def test_loss_rewards_and_logps_match_the_formulas(tmp_path, tokenizer, pairs, loss_type):
    beta = 0.1 if loss_type != "sigmoid_norm" else 5.0
    recipe = dpo_recipe(tmp_path, dpo={"beta": beta, "loss_type": loss_type})
    model = trained_policy(recipe).double()  # float64 end to end: the test checks formulas, not rounding
    examples = [pairs[index] for index in range(4)]
    trainer = make_preference_trainer(recipe, model, tokenizer, pairs.remove_columns("dataset"))
    batch = trainer._prepare_inputs(trainer.data_collator(examples))
    loss = float(trainer.compute_loss(trainer.model, batch))
    got = trainer.last_pairs

    expected_losses, expected_rewards = [], []
    for index, example in enumerate(examples):
        (policy_c, n_c), (policy_r, n_r) = (independent_logps(model, example, side) for side in ("chosen", "rejected"))
        with model.disable_adapter():
            (ref_c, _), (ref_r, _) = (independent_logps(model, example, side) for side in ("chosen", "rejected"))
        assert (float(got.chosen[index]), float(got.rejected[index])) == pytest.approx((policy_c, policy_r), abs=1e-5)
        assert (float(got.ref_chosen[index]), float(got.ref_rejected[index])) == pytest.approx((ref_c, ref_r), abs=1e-5)
        assert (int(got.chosen_tokens[index]), int(got.rejected_tokens[index])) == (n_c, n_r)
        ratio_c, ratio_r = policy_c - ref_c, policy_r - ref_r
        if loss_type != "sigmoid":  # length-normalised: per-token means of the log-ratios
            ratio_c, ratio_r = ratio_c / n_c, ratio_r / n_r
        margin = ratio_c - ratio_r
        if loss_type == "ipo":
            expected_losses.append((margin - 1 / (2 * beta)) ** 2)
        else:
            expected_losses.append(-F.logsigmoid(torch.tensor(beta * margin, dtype=torch.float64)).item())
        expected_rewards.append((beta * ratio_c, beta * ratio_r))
    assert loss == pytest.approx(sum(expected_losses) / len(expected_losses), abs=1e-5)
    chosen, rejected = got.rewards(beta, normalised=loss_type != "sigmoid")
    assert chosen.tolist() == pytest.approx([c for c, _ in expected_rewards], abs=1e-5)
    assert rejected.tolist() == pytest.approx([r for _, r in expected_rewards], abs=1e-5)
    # the logged batch metrics are the same rewards
    logged = trainer._metrics["train"]
    assert logged["rewards/chosen"][-1] == pytest.approx(sum(c for c, _ in expected_rewards) / 4, abs=1e-5)
    assert logged["rewards/margins"][-1] == pytest.approx(sum(c - r for c, r in expected_rewards) / 4, abs=1e-5)


# ---- the reference ------------------------------------------------------------------------------------------------


def test_reference_base_is_the_adapter_disabled_and_starts_at_chance(tmp_path, tokenizer, pairs):
    recipe = dpo_recipe(tmp_path)
    trainer = make_preference_trainer(recipe, policy_model(recipe, load_base_model(recipe.model, None)), tokenizer,
                                      pairs.remove_columns("dataset"), {"demo": pairs.select(range(12))
                                                                        .remove_columns("dataset")})
    assert list(trainer.model.peft_config) == ["default"]  # no frozen copy: the base is the reference
    metrics = heldout_preference_metrics(trainer)
    assert metrics["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["eval_rewards/accuracies/demo"] == 0.5 and metrics["eval_rewards/margins"] == 0.0


def test_precomputed_reference_equals_the_live_one_and_is_read_back(tmp_path, tokenizer, pairs, monkeypatch):
    data = pairs.select(range(24)).remove_columns("dataset")
    live_recipe = dpo_recipe(tmp_path)
    cached_recipe = dpo_recipe(tmp_path, dpo={"precompute_reference": True})
    cache = tmp_path / "reference-cache"
    live = make_preference_trainer(live_recipe, trained_policy(live_recipe), tokenizer, data)
    cached = make_preference_trainer(cached_recipe, trained_policy(cached_recipe), tokenizer, data,
                                     cache_folder=cache)
    assert cached.precompute_ref_logps and "ref_chosen_logps" in cached.train_dataset.column_names
    assert len(list(cache.glob("*.safetensors"))) == 1
    for start in range(0, 24, 8):
        examples = [cached.train_dataset[index] for index in range(start, start + 8)]
        batch = cached.data_collator(examples)
        live_loss = float(live.compute_loss(live.model, live._prepare_inputs(
            {key: value for key, value in batch.items() if not key.startswith("ref_")})))
        assert float(cached.compute_loss(cached.model, cached._prepare_inputs(batch))) == pytest.approx(
            live_loss, abs=1e-5)
        assert cached.last_pairs.ref_chosen.tolist() == pytest.approx(live.last_pairs.ref_chosen.tolist(), abs=1e-3)

    def no_reference_forward(*args, **kwargs):
        raise AssertionError("the reference ran again instead of reading the cache")

    monkeypatch.setattr(PreferenceTrainer, "compute_ref_log_probs", no_reference_forward)
    again = make_preference_trainer(cached_recipe, trained_policy(cached_recipe), tokenizer, data, cache_folder=cache)
    assert again.train_dataset["ref_chosen_logps"] == cached.train_dataset["ref_chosen_logps"]


def save_sft_adapter(tmp_path: Path, *, dropout: float) -> Path:
    """An "SFT adapter" on the tiny base: LoRA with non-zero B, saved like a tulu-lite output."""
    sft = dpo_recipe(tmp_path)
    sft.lora.dropout = dropout
    model = trained_policy(sft, seed=3, scale=0.1)
    folder = tmp_path / "sft"
    model.save_pretrained(folder)
    (folder / "base_model.json").write_text(json.dumps({"name_or_path": "tiny-llama"}))
    return folder


@pytest.mark.parametrize("quantized", [False, True])
def test_reference_adapter_first_step_loss_is_log_2(tmp_path, tokenizer, pairs, quantized):
    folder = save_sft_adapter(tmp_path, dropout=0.1)  # dropout must be disabled for policy = reference
    recipe = dpo_recipe(tmp_path, dpo={"reference": "adapter", "adapter": str(folder)}, quantized=quantized,
                        max_steps=2)
    model = policy_model(recipe, load_base_model(recipe.model, recipe.quantization))
    trainer = make_preference_trainer(recipe, model, tokenizer, pairs.select(range(16)).remove_columns("dataset"))
    assert set(trainer.model.peft_config) == {"default", "ref"}
    params = dict(trainer.model.named_parameters())
    for name, param in params.items():
        if ".default." in name and "lora_" in name:
            assert param.dtype == torch.float32 and torch.equal(param, params[name.replace(".default.", ".ref.")])
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and losses[1] != pytest.approx(math.log(2), abs=1e-6)


def test_an_sft_adapter_is_checked(tmp_path):
    recipe = dpo_recipe(tmp_path)
    base = load_base_model(recipe.model, None)
    with pytest.raises(TuluError, match=r"dpo.adapter: .*: not an adapter directory \(no adapter_config.json\)"):
        load_sft_adapter(base, tmp_path, "dpo.adapter", "tiny-llama")
    folder = save_sft_adapter(tmp_path, dropout=0.0)
    with pytest.raises(TuluError, match="was trained on tiny-llama, not on model.name_or_path other/base"):
        load_sft_adapter(base, folder, "dpo.adapter", "other/base")


def test_heldout_batches_of_a_round_have_one_size_on_every_process():
    # TRL gathers per-pair tensors inside its loss: in every round, both processes must hold as many pairs. Batches
    # of 4 over 11 pairs: the two full ones are shared out, the short one runs everywhere and counts once.
    batches = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert _equal_size_share(batches, 4, 0, 2) == [([0, 1, 2, 3], True), ([8, 9, 10], True)]
    assert _equal_size_share(batches, 4, 1, 2) == [([4, 5, 6, 7], True), ([8, 9, 10], False)]
    assert _equal_size_share(batches, 4, 0, 1) == [(batch, True) for batch in batches]
    assert _equal_size_share([[0, 1]], 4, 1, 2) == [([0, 1], False)]

