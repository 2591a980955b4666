"""The collator: exact layouts (literal token lists), and padding-free == padded in loss and gradients."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import tulu_lite.tokenizer
from tulu_lite.data.conversations import read_conversations
from tulu_lite.data.encode import encode
from tulu_lite.errors import TuluError
from tulu_lite.train.collate import (
    IGNORE_INDEX,
    AssistantOnlyCollator,
    TokenBudgetBatchSampler,
    token_budget_batches,
)

DEMO_CONVERSATIONS = Path(tulu_lite.tokenizer.__file__).parent / "assets" / "demo" / "train.jsonl"

X = IGNORE_INDEX
# "<|user|>\nWhat is 2+2?\n<|assistant|>\n4</s>" and "<|user|>\nName a colour.\n<|assistant|>\nBlue.</s>"
# cut short, LLaMA ids (BOS 1, EOS 2, pad = unk 0); loss only on the answer and its EOS.
FIRST = {
    "input_ids": [1, 529, 13, 5618, 13, 29958, 13, 29871, 29946, 2],
    "labels": [X, X, X, X, X, X, X, 29871, 29946, 2],
}
SECOND = {"input_ids": [1, 1170, 13, 29958, 13, 10924, 29889, 2], "labels": [X, X, X, X, X, 10924, 29889, 2]}
THIRD = {"input_ids": [1, 13, 2], "labels": [X, 13, 2]}


def test_padded_layout_pads_right_and_masks_padding():
    batch = AssistantOnlyCollator(pad_token_id=0, padding_free=False)([SECOND, THIRD, FIRST])

    assert batch["input_ids"].tolist() == [
        [1, 1170, 13, 29958, 13, 10924, 29889, 2, 0, 0],
        [1, 13, 2, 0, 0, 0, 0, 0, 0, 0],
        [1, 529, 13, 5618, 13, 29958, 13, 29871, 29946, 2],
    ]
    assert batch["labels"].tolist() == [
        [X, X, X, X, X, 10924, 29889, 2, X, X],
        [X, 13, 2, X, X, X, X, X, X, X],
        [X, X, X, X, X, X, X, 29871, 29946, 2],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ]
    assert set(batch) == {"input_ids", "labels", "attention_mask"}


def test_padding_free_layout_concatenates_with_restarting_positions():
    batch = AssistantOnlyCollator(pad_token_id=0, padding_free=True)([SECOND, THIRD, FIRST])

    assert batch["input_ids"].tolist() == [
        [1, 1170, 13, 29958, 13, 10924, 29889, 2] + [1, 13, 2] + [1, 529, 13, 5618, 13, 29958, 13, 29871, 29946, 2]
    ]
    assert batch["labels"].tolist() == [
        [X, X, X, X, X, 10924, 29889, 2] + [X, 13, 2] + [X, X, X, X, X, X, X, 29871, 29946, 2]
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7] + [0, 1, 2] + [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 8, 11, 21]
    assert batch["max_length_q"] == batch["max_length_k"] == 10
    assert batch["use_cache"] is False
    assert "attention_mask" not in batch  # a mask would switch off transformers' packed-sequence detection


def test_first_token_of_every_example_is_never_a_target():
    # A labelled first token would, in a packed row, be predicted from the previous example's last token.
    leaky = {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}
    packed = AssistantOnlyCollator(pad_token_id=0, padding_free=True)([leaky, leaky])
    padded = AssistantOnlyCollator(pad_token_id=0, padding_free=False)([leaky, leaky])

    assert packed["labels"].tolist() == [[X, 6, 7, X, 6, 7]]
    assert padded["labels"].tolist() == [[X, 6, 7], [X, 6, 7]]


def test_labels_never_come_from_the_pad_id():
    # With eos reused as pad, the real end-of-turn eos keeps its label and only padding is masked.
    batch = AssistantOnlyCollator(pad_token_id=2, padding_free=False)([SECOND, THIRD])

    assert batch["input_ids"][1].tolist() == [1, 13, 2, 2, 2, 2, 2, 2]
    assert batch["labels"][1].tolist() == [X, 13, 2, X, X, X, X, X]
    assert batch["labels"][0].tolist()[-1] == 2


def test_trainer_token_count_is_the_same_in_both_layouts():
    # transformers' Trainer normalizes the loss by `labels[..., 1:] != -100` summed over accumulated batches.
    examples = [FIRST, SECOND, THIRD]
    packed = AssistantOnlyCollator(pad_token_id=0, padding_free=True)(examples)
    padded = AssistantOnlyCollator(pad_token_id=0, padding_free=False)(examples)
    targets = sum(sum(label != X for label in example["labels"][1:]) for example in examples)

    assert int(packed["labels"][..., 1:].ne(X).sum()) == int(padded["labels"][..., 1:].ne(X).sum()) == targets == 8


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([], "empty batch"),
        ([{"input_ids": [1, 2]}], "example 0 has no labels"),
        ([FIRST, {"input_ids": [1, 2, 3], "labels": [X, 2]}], "example 1 has 3 input_ids but 2 labels"),
        ([{"input_ids": [], "labels": []}], "example 0 is empty"),
    ],
)
def test_bad_features_are_one_clear_error(features, message):
    for padding_free in (False, True):
        with pytest.raises(TuluError, match=message):
            AssistantOnlyCollator(pad_token_id=0, padding_free=padding_free)(features)


# ---- the same examples, padded vs padding-free, through a real model --------------------------------------------


def _examples(tokenizer, count: int, seed: int) -> list[dict[str, list[int]]]:
    """Length-diverse chats (1-4 turns of the bundled demo conversations), encoded by the real encoder."""
    rng = random.Random(seed)
    records = list(read_conversations(DEMO_CONVERSATIONS))
    chats = [[m for r in rng.sample(records, rng.randint(1, 4)) for m in r["messages"]] for _ in range(count)]
    return [encode(messages, tokenizer, "tulu") for messages in chats]


def _tiny_llama(tokenizer, attn: str):
    from tulu_lite.model.tiny import build_tiny_llama

    model = build_tiny_llama(tokenizer, seed=0)
    model.set_attn_implementation(attn)
    return model


def _lora(model):
    from peft import LoraConfig, get_peft_model

    # Random A and B (not PEFT's zero B) so that every LoRA matrix gets a non-zero gradient to compare.
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return get_peft_model(model, config)


def _nf4_lora(model_dir):
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=quantization, device_map="cpu", dtype=torch.float32
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return _lora(model)


def _loss_and_grads(model, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**{"use_cache": False, **batch}).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.item(), grads


def _assert_same_loss_and_grads(model, examples):
    padded = AssistantOnlyCollator(pad_token_id=0, padding_free=False)(examples)
    packed = AssistantOnlyCollator(pad_token_id=0, padding_free=True)(examples)
    assert (padded["attention_mask"] == 0).sum() > 20  # lengths differ: the padded layout really pads
    padded_loss, padded_grads = _loss_and_grads(model, padded)
    packed_loss, packed_grads = _loss_and_grads(model, packed)

    assert padded_loss == pytest.approx(packed_loss, rel=1e-5)
    assert padded_grads.keys() == packed_grads.keys() and padded_grads
    for name, grad in padded_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_equals_padded_full_finetune(llama_tokenizer, attn):
    model = _tiny_llama(llama_tokenizer, attn).train()
    _assert_same_loss_and_grads(model, _examples(llama_tokenizer, 6, seed=1))


def test_padding_free_equals_padded_with_lora(llama_tokenizer):
    model = _lora(_tiny_llama(llama_tokenizer, "sdpa")).train()
    _assert_same_loss_and_grads(model, _examples(llama_tokenizer, 6, seed=2))
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)


def test_padding_free_equals_padded_with_4bit_nf4_lora(tiny_model_dir, llama_tokenizer):
    import bitsandbytes as bnb

    model = _nf4_lora(tiny_model_dir).train()
    assert any(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())
    _assert_same_loss_and_grads(model, _examples(llama_tokenizer, 5, seed=3))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_attention_across_packed_examples(llama_tokenizer, attn):
    # flex_attention passes too but compiles for ~50 s on CPU; flash-attention (GPU only) reads the same
    # boundaries from cu_seq_lens_* instead of a mask.
    model = _tiny_llama(llama_tokenizer, attn).eval()
    examples = _examples(llama_tokenizer, 3, seed=4)
    with torch.no_grad():
        packed = model(**AssistantOnlyCollator(pad_token_id=0, padding_free=True)(examples)).logits[0]
        alone = [model(torch.tensor([e["input_ids"]]), use_cache=False).logits[0] for e in examples]

    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_over_unequal_batches_is_exact(llama_tokenizer):
    # Token-budget batches differ in size; normalizing each micro-batch by the total count (what Trainer passes as
    # `num_items_in_batch`) makes the accumulated gradient that of the whole batch.
    model = _lora(_tiny_llama(llama_tokenizer, "sdpa")).train()
    collate = AssistantOnlyCollator(pad_token_id=0, padding_free=True)
    examples = _examples(llama_tokenizer, 8, seed=5)
    budget = max(len(e["input_ids"]) for e in examples) + 40
    batches = token_budget_batches([len(e["input_ids"]) for e in examples], budget, seed=0)
    micro = [collate([examples[i] for i in batch]) for batch in batches]
    assert len(micro) > 1 and len({int(b["labels"].ne(X).sum()) for b in micro}) > 1
    total = sum(b["labels"][..., 1:].ne(X).sum() for b in micro)

    model.zero_grad(set_to_none=True)
    accumulated = sum(model(**batch, num_items_in_batch=total).loss for batch in micro)
    accumulated.backward()
    accumulated_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    whole_loss, whole_grads = _loss_and_grads(model, collate(examples))

    assert accumulated.item() == pytest.approx(whole_loss, rel=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(accumulated_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# ---- token-budget batches ------------------------------------------------------------------------------------------


def test_token_budget_batches_use_every_example_once_within_budget():
    lengths = torch.randint(5, 200, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = token_budget_batches(lengths, 512, seed=3, megabatch_size=64)

    assert sorted(i for batch in batches for i in batch) == list(range(500))
    assert all(sum(lengths[i] for i in batch) <= 512 for batch in batches)
    # rows are full: less than 10% of the budget is left unused
    assert sum(lengths) / (len(batches) * 512) > 0.9
    assert TokenBudgetBatchSampler(lengths, 512, seed=3, megabatch_size=64).fill == sum(lengths) / (len(batches) * 512)


def test_token_budget_sampler_is_seeded_and_reshuffles_per_epoch():
    lengths = torch.randint(5, 200, (300,), generator=torch.Generator().manual_seed(1)).tolist()
    sampler = TokenBudgetBatchSampler(lengths, 400, seed=7)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)

    assert first == list(TokenBudgetBatchSampler(lengths, 400, seed=7))
    assert len(first) == len(second) == len(sampler)
    assert first != second and sorted(map(sorted, first)) == sorted(map(sorted, second))
    assert first != list(TokenBudgetBatchSampler(lengths, 400, seed=8))


def test_token_budget_smaller_than_an_example_is_a_clear_error():
    with pytest.raises(TuluError, match="example 1 has 300 tokens, more than the budget of 256"):
        token_budget_batches([10, 300], 256, seed=0)


def test_sampler_feeds_a_dataloader_over_an_arrow_dataset():
    from datasets import Dataset
    from torch.utils.data import DataLoader

    examples = [FIRST, SECOND, THIRD] * 4
    dataset = Dataset.from_list(examples)
    sampler = TokenBudgetBatchSampler([len(e["input_ids"]) for e in examples], 32, seed=0)
    collate = AssistantOnlyCollator(pad_token_id=0, padding_free=True)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    rows = list(loader)

    assert len(rows) == len(sampler)
    assert sum(row["input_ids"].shape[1] for row in rows) == sum(len(e["input_ids"]) for e in examples)
    assert all(row["input_ids"].shape[1] <= 32 for row in rows)


def test_epoch_reaches_the_sampler_under_data_parallel_resume():
    """After `--resume` in epoch >= 1 of a data-parallel run, accelerate has wrapped the sampler twice
    (SkipBatchSampler(BatchSamplerShard(ours))) and its `set_epoch` no longer reaches it; SamplerEpoch does.
    (tests/test_distributed.py checks the whole thing with two processes.)"""
    from accelerate.data_loader import (
        BatchSamplerShard,
        DataLoaderShard,
        SkipBatchSampler,
    )
    from transformers import TrainerControl, TrainerState

    from tulu_lite.train.callbacks import SamplerEpoch

    lengths = torch.randint(5, 60, (40,), generator=torch.Generator().manual_seed(2)).tolist()
    sampler = TokenBudgetBatchSampler(lengths, 120, seed=3)
    reference = TokenBudgetBatchSampler(lengths, 120, seed=3)
    reference.set_epoch(1)
    epoch_1 = list(reference)
    resumed = SkipBatchSampler(BatchSamplerShard(sampler, num_processes=2, process_index=0), skip_batches=1)
    loader = DataLoaderShard(list(range(40)), batch_sampler=resumed, collate_fn=lambda rows: rows)

    loader.set_epoch(1)  # what Trainer does: accelerate stops one level short
    assert sampler.epoch == 0
    SamplerEpoch(sampler).on_epoch_begin(None, TrainerState(epoch=1.4), TrainerControl())
    assert sampler.epoch == 1
    # process 0 takes every other epoch-1 batch, after the one it trained before the crash
    assert list(loader) == epoch_1[0::2][1:]
