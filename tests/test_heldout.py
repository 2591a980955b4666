"""Held-out data: the split per source, the per-source loss against an independent computation, early stopping
that keeps the best adapter, mixture sources, and what training prints at the end."""

from __future__ import annotations

import io
import json
import math
import random
import warnings

import pytest
import torch
from datasets import Dataset
from rich.console import Console
from safetensors.torch import load_file
from tiny_runs import DEMO, read_demo, tiny_cache, topic, write_jsonl, write_recipe  # noqa: F401
from transformers import TrainerCallback

from tulu_lite.recipe import load_recipe
from tulu_lite.train import train
from tulu_lite.train.heldout import eval_batches, process_share, split_heldout

# ---- the split ---------------------------------------------------------------------------------------------------


def encoded(sizes: dict[str, int]) -> Dataset:
    rows = [(name, n) for name, count in sizes.items() for n in range(count)]
    random.Random(0).shuffle(rows)
    return Dataset.from_dict({"dataset": [name for name, _ in rows], "input_ids": [[1, 2, n] for _, n in rows],
                              "labels": [[-100, 2, n] for _, n in rows]})


def test_split_takes_a_seeded_share_of_every_source():
    dataset = encoded({"big": 40, "small": 5, "single": 1})
    rest, held = split_heldout(dataset, 0.2, seed=7)
    # Every source with more than one example is represented, even the small one; one example is never held out.
    assert {name: len(part) for name, part in held.items()} == {"big": 8, "small": 1}
    assert len(rest) == 46 - 9
    assert sorted(rest["dataset"]).count("single") == 1
    # Disjoint and complete: the held-out rows plus the rest are the input rows.
    def rows(ds):
        return [(source, tuple(ids)) for source, ids in zip(ds["dataset"], ds["input_ids"])]

    held_rows = [row for part in held.values() for row in rows(part)]
    assert not set(held_rows) & set(rows(rest))
    assert sorted(held_rows + rows(rest)) == sorted(rows(dataset))
    assert all(set(part["dataset"]) == {name} for name, part in held.items())
    # Seeded: the same seed draws the same examples, another seed others.
    again = split_heldout(dataset, 0.2, seed=7)[1]
    other = split_heldout(dataset, 0.2, seed=8)[1]
    assert rows(again["big"]) == rows(held["big"])
    assert rows(other["big"]) != rows(held["big"])


@pytest.mark.parametrize("batch_size, max_tokens", [(3, None), (100, 10)])
def test_eval_batches_cover_every_example_once(batch_size, max_tokens):
    lengths = [5, 1, 4, 4, 2, 9, 3, 1]
    batches = eval_batches(lengths, batch_size, max_tokens)
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= batch_size
        assert max_tokens is None or sum(lengths[i] for i in batch) <= max_tokens or len(batch) == 1


def test_every_process_runs_as_many_batches_and_each_counts_once():
    # 5 batches over 2 processes: rank 1 repeats the first batch once without counting it, so both run 3 forwards
    # (FSDP gathers weights in every forward: a process that stopped after 2 would leave the other waiting).
    batches = [[0], [1, 2], [3], [4, 5], [6]]
    assert process_share(batches, 0, 2) == [([0], True), ([3], True), ([6], True)]
    assert process_share(batches, 1, 2) == [([1, 2], True), ([4, 5], True), ([0], False)]
    assert process_share(batches, 0, 1) == [(batch, True) for batch in batches]
    assert process_share([], 1, 2) == []


# ---- the loss, end to end ----------------------------------------------------------------------------------------


def long_chat(dataset: str | None) -> dict:
    """A chat whose answer starts after 128 tokens: truncation leaves it nothing to train on."""
    record = {"messages": [{"role": "user", "content": "Please read this. " * 60},
                           {"role": "assistant", "content": "Done."}]}
    return {**record, "dataset": dataset} if dataset else record


@torch.no_grad()
def reference_losses(adapter_dir, recipe, chats_by_source: dict[str, list[dict]]) -> dict[str, tuple[float, int]]:
    """Summed NLL and count of the trained tokens per source, one chat at a time, from a freshly loaded adapter."""
    from peft import PeftModel

    import tulu_lite
    from tulu_lite.model.loading import load_base_model, load_recipe_tokenizer

    tokenizer = load_recipe_tokenizer(recipe.model)
    model = PeftModel.from_pretrained(load_base_model(recipe.model, recipe.quantization), adapter_dir).eval()
    sums = {}
    for source, chats in chats_by_source.items():
        nll, count = 0.0, 0
        for chat in chats:
            example = tulu_lite.encode(chat["messages"], tokenizer, max_seq_length=recipe.data.max_seq_length)
            logits = model(input_ids=torch.tensor([example["input_ids"]])).logits[0].double()
            targets = torch.tensor(example["labels"][1:])
            trained = targets != -100
            log_probs = logits[:-1].log_softmax(-1)[trained]
            nll -= float(log_probs.gather(1, targets[trained][:, None]).sum())
            count += int(trained.sum())
        sums[source] = (nll, count)
    return sums


@pytest.mark.slow
def test_per_source_heldout_loss_equals_an_independent_computation(tmp_path):
    demo = read_demo()
    held = [chat for chat in demo if len(chat["messages"]) <= 3][:12]
    held_ids = {chat["id"] for chat in held}
    train_chats = [chat for chat in demo if chat["id"] not in held_ids] + [long_chat("demo")]
    # Two sources by their dataset field; a record without one belongs to its file's name ("heldout").
    eval_chats = [{**chat, "dataset": topic(chat)} if topic(chat) in ("capitals", "sounds")
                  else {k: v for k, v in chat.items() if k != "dataset"} for chat in held] + [long_chat("capitals")]
    write_jsonl(tmp_path / "train.jsonl", train_chats)
    write_jsonl(tmp_path / "heldout.jsonl", eval_chats)
    data = {"train_files": ["train.jsonl"], "eval_files": ["heldout.jsonl"], "max_seq_length": 128}
    recipe = load_recipe(write_recipe(tmp_path, data=data, max_steps=4, eval_steps=2,
                                      max_tokens_per_batch=512))
    buffer = io.StringIO()
    result = train(recipe, console=Console(file=buffer, width=150))
    metrics = result.metrics

    by_source = {"capitals": [], "sounds": [], "heldout": []}
    for chat in eval_chats[:-1]:
        by_source[chat.get("dataset", "heldout")].append(chat)
    heldout = metrics["heldout"]
    assert list(heldout["sources"]) == sorted(by_source)
    assert {name: size["examples"] for name, size in heldout["sources"].items()} == \
        {name: len(chats) for name, chats in by_source.items()}
    assert [entry["step"] for entry in heldout["history"]] == [0, 2, 4]
    # The output is the best evaluation's adapter: its losses, computed independently, are the recorded ones.
    best = next(entry for entry in heldout["history"] if entry["step"] == metrics["best_step"])
    assert metrics["output_step"] == metrics["best_step"] and best["loss"] == metrics["best_eval_loss"]
    assert best["loss"] == min(entry["loss"] for entry in heldout["history"] if entry["step"] > 0)
    reference = reference_losses(result.output_dir, recipe, by_source)
    for name, (nll, count) in reference.items():
        assert heldout["sources"][name]["trained_tokens"] == count
        assert best["sources"][name] == pytest.approx(nll / count, rel=1e-5), name
    overall = sum(nll for nll, _ in reference.values()) / sum(count for _, count in reference.values())
    assert best["loss"] == pytest.approx(overall, rel=1e-5)  # token-weighted, as a training batch
    assert heldout["history"][0]["loss"] > best["loss"] + 0.5  # training on the same topics helps

    # Logged for loggers under eval_loss and eval_loss/SOURCE; printed as lines and a table; dropped examples named.
    logged = json.loads((recipe.checkpoint_dir / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    last_eval = [entry for entry in logged if "eval_loss" in entry][-1]
    assert {"eval_loss", "eval_loss/capitals", "eval_loss/sounds", "eval_loss/heldout"} <= set(last_eval)
    assert last_eval["step"] == 4
    printed = buffer.getvalue()
    assert "held-out    2/4  loss" in printed and "capitals" in printed
    assert "held-out loss by step" in printed and "overall" in printed
    assert f"dropped 1 of {len(train_chats)} training examples: no trained token within max_seq_length (128)" \
        in printed
    assert f"dropped 1 of {len(eval_chats)} held-out examples" in printed
    assert metrics["dropped"] and heldout["dropped"]


class Weights(TrainerCallback):
    """The trainable weights after every optimizer step."""

    def __init__(self):
        self.by_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = {name.replace(".default", ""): p.detach().clone()
                                           for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_step(tmp_path):
    # Held-out answers of random words: learning the demo chats soon makes them less likely, so the held-out loss
    # turns up after a step or two while the training loss keeps falling.
    rng = random.Random(0)
    words = "zebra quartz violin nebula pickle harbor velvet comet walnut".split()
    write_jsonl(tmp_path / "odd.jsonl", [
        {"dataset": "odd", "messages": [{"role": "user", "content": "Say something."},
                                        {"role": "assistant", "content": " ".join(rng.choices(words, k=6))}]}
        for _ in range(6)])
    data = {"train_files": [str(DEMO)], "eval_files": ["odd.jsonl"], "max_seq_length": 128}
    recipe = load_recipe(write_recipe(tmp_path, data=data, max_steps=12, eval_steps=1, logging_steps=1,
                                      early_stopping_patience=2))
    weights = Weights()
    buffer = io.StringIO()
    metrics = train(recipe, callbacks=[weights], console=Console(file=buffer, width=150)).metrics

    history = [entry for entry in metrics["heldout"]["history"] if entry["step"] > 0]
    stopped, best = metrics["stopped_early_at"], metrics["best_step"]
    assert stopped is not None and stopped < 12 and metrics["steps"] == stopped
    assert stopped - best == 2  # two evaluations without improvement, one per step
    losses = {entry["step"]: entry["loss"] for entry in history}
    assert losses[best] == min(losses.values()) == metrics["best_eval_loss"]
    assert all(losses[step] >= losses[best] for step in range(best + 1, stopped + 1))
    # The output adapter is the one of the best step, not the last one.
    assert metrics["output_step"] == best
    saved = load_file(recipe.output_dir / "adapter_model.safetensors")
    for name, value in saved.items():
        assert torch.equal(value, weights.by_step[best][name]), name
    assert any(not torch.equal(value, weights.by_step[stopped][name]) for name, value in saved.items())
    written = json.loads((recipe.output_dir / "metrics.json").read_text())
    assert written["best_step"] == best and written["stopped_early_at"] == stopped
    assert f"early stopping at step {stopped}: no lower held-out loss since step {best}" in buffer.getvalue()


@pytest.mark.slow
def test_eval_fraction_of_a_qlora_mixture_is_reported_per_mixture_source(tmp_path):
    demo = read_demo()
    write_jsonl(tmp_path / "capitals.jsonl", [chat for chat in demo if topic(chat) == "capitals"])
    write_jsonl(tmp_path / "others.jsonl", [chat for chat in demo if topic(chat) != "capitals"])
    (tmp_path / "mix.yaml").write_text("seed: 1\nsources:\n  - {path: capitals.jsonl, name: caps}\n"
                                       "  - {path: others.jsonl, fraction: 0.5, name: half-of-the-rest}\n")
    data = {"mixture": "mix.yaml", "eval_fraction": 0.2, "max_seq_length": 128}
    recipe = load_recipe(write_recipe(tmp_path, quantized=True, data=data, max_steps=3, eval_steps=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(recipe, console=Console(file=io.StringIO())).metrics
    # Named by the mixture's sources (the records' dataset field is "demo" for all of them).
    sizes = {name: size["examples"] for name, size in metrics["heldout"]["sources"].items()}
    capitals = sum(topic(chat) == "capitals" for chat in demo)
    others = round(0.5 * (len(demo) - capitals))
    assert sizes == {"caps": round(0.2 * capitals), "half-of-the-rest": round(0.2 * others)}
    assert metrics["examples"] == capitals + others - sum(sizes.values())
    assert all(math.isfinite(loss) for entry in metrics["heldout"]["history"] for loss in entry["sources"].values())
    # Evaluating a 4-bit model must not switch bitsandbytes to its inference-only kernel (no autograd) for training.
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    # loss.png: the training curve, the overall held-out curve and one per mixture source, at the evaluated steps.
    lines = plotted_lines(metrics, tmp_path / "again.png")
    history = metrics["heldout"]["history"]
    assert lines["training"] == [entry["loss"] for entry in metrics["log_history"]]
    assert lines["held-out, all sources"] == [entry["loss"] for entry in history]
    for name in ("caps", "half-of-the-rest"):
        assert lines[f"held-out {name}"] == [entry["sources"][name] for entry in history]
    assert (recipe.output_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def plotted_lines(metrics: dict, target) -> dict[str, list[float]]:
    """label -> y values of the curves `plot_loss` draws (the figure is caught as it is saved)."""
    from matplotlib.figure import Figure

    from tulu_lite.train.report import plot_loss

    saved = []
    original = Figure.savefig
    Figure.savefig = lambda figure, *args, **kwargs: (saved.append(figure), original(figure, *args, **kwargs))
    try:
        plot_loss(metrics, target, title="check")
    finally:
        Figure.savefig = original
    return {line.get_label(): [float(y) for y in line.get_ydata()] for line in saved[0].axes[0].get_lines()
            if not line.get_label().startswith("_")}
