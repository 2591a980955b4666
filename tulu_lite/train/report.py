"""What a run reports: the logger it reports to, metrics.json, the output directory, where the base came from, what
is printed after training (the held-out table), the loss curve, and the one-line device summary the CLI prints
first."""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import torch
from rich.console import Console

from tulu_lite.errors import TuluError, first_line
from tulu_lite.json_files import write_json
from tulu_lite.model.loading import compute_dtype, fsdp_launch, resolve_attention
from tulu_lite.outputs import atomic_dir, write_errors
from tulu_lite.recipe import Recipe, save_recipe

# ---- the logger (training.report_to) ------------------------------------------------------------------------------

# What `report_to` needs importable, in the order transformers' callbacks try them.
_LOGGER_MODULES = {"tensorboard": ("torch.utils.tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_logger(recipe: Recipe) -> None:
    """Refuse a `training.report_to` whose package is missing (or broken) before anything is loaded."""
    name = recipe.training.report_to
    if name == "none":
        return
    reasons = []
    for module in _LOGGER_MODULES[name]:
        try:
            importlib.import_module(module)
            return
        except Exception as exc:  # a half-installed package fails in many ways; any of them means "not usable"
            reasons.append(first_line(exc))
    raise TuluError(f"{recipe.where('training', 'report_to')}: {name} is not installed ({reasons[0]}); "
                    f'install it with: pip install "tulu-lite[{name}]"')


# ---- metrics.json -------------------------------------------------------------------------------------------------


def summarise(trainer) -> dict:
    """metrics.json: the per-step log, first/final loss, held-out losses, the best step, totals, what was dropped."""
    run = trainer.run
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    final = next((entry for entry in reversed(trainer.state.log_history) if "train_runtime" in entry), {})
    last = history[-1] if history else {}
    heldout = _heldout_summary(trainer)
    metrics = {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        "train_loss": final.get("train_loss"),
        "train_runtime_s": final.get("train_runtime"),
        "tokens": last.get("tokens"),
        "trained_tokens": last.get("trained_tokens"),
        "world_size": trainer.accelerator.num_processes,
        "examples": len(run.data.train),
        "dropped": run.data.report.dropped,
        # Which step's adapter the output holds: the best evaluation's with held-out data, else the last step's.
        "output_step": trainer.best.step if trainer.best.step is not None else trainer.state.global_step,
        "best_step": trainer.best.step,
        "best_eval_loss": trainer.best.loss if trainer.best.step is not None else None,
        "stopped_early_at": trainer.stopped_early_at,
        "resumed": _resume_history(trainer),
        "heldout": heldout,
        "log_history": history,
    }
    if trainer.run.recipe.stage == "dpo":  # what the loss is, for readers of metrics.json and the plot
        metrics["stage"] = "dpo"
        metrics["loss_type"] = trainer.run.recipe.dpo.loss_types
    return metrics


def _heldout_summary(trainer) -> dict | None:
    """Sizes of the held-out sets, every evaluation, and the sizes dropped by truncation."""
    from dataclasses import asdict

    from tulu_lite.train.heldout import eval_history, source_sizes

    data = trainer.run.data
    if not data.heldout:
        return None
    history = [asdict(record) for record in eval_history(trainer.state.log_history, data.heldout)]
    if trainer.run.recipe.stage == "dpo":
        from tulu_lite.train.preference import preference_history

        history = preference_history(history, trainer.state.log_history, data.heldout)
    return {
        "source": "data.eval_files" if trainer.run.recipe.data.eval_files else "data.eval_fraction",
        "sources": {name: asdict(size) for name, size in source_sizes(data.heldout).items()},
        "dropped": data.heldout_report.dropped if data.heldout_report is not None else {},
        "history": history,
    }


def _resume_history(trainer) -> list[dict]:
    """Every resume of this run so far, with the recipe changes it accepted (carried from checkpoint to checkpoint)."""
    start = trainer.run.start
    if start.checkpoint is None:
        return []
    changes = {key: {"before": old, "after": new} for key, (old, new) in start.changes.items()}
    return [*start.resumed, {"from": Path(start.checkpoint).name, "changes": changes}]


# ---- the output directory -----------------------------------------------------------------------------------------


def write_output(
    recipe: Recipe, trainer, tokenizer, metrics: dict, *, force: bool, adapter: dict | None = None
) -> None:
    """Adapter, tokenizer, resolved recipe, base record, metrics and loss curve, all at once or not at all.

    `adapter` is the LoRA state gathered from FSDP shards (`gathered_adapter`); None means the model holds it.
    """
    with atomic_dir(recipe.output_dir, force=force) as tmp, write_errors(recipe.output_dir, "the adapter"):
        # Only the trained adapter: with dpo.reference adapter the model also holds the frozen reference copy.
        trainer.model.save_pretrained(tmp, state_dict=adapter, selected_adapters=["default"])
        tokenizer.save_pretrained(tmp)
        save_recipe(recipe, tmp / "recipe.yaml")
        write_json(tmp / "base_model.json", trainer.run.base or base_record(recipe, trainer.model))
        write_json(tmp / "metrics.json", metrics)
        plot_loss(metrics, tmp / "loss.png", title=recipe.output_dir.name)
        write_model_card(recipe, metrics, tmp / "README.md")


def write_model_card(recipe: Recipe, metrics: dict, target: Path) -> None:
    """README.md of an adapter or checkpoint folder: base, data, recipe and metrics of this run.

    Replaces the card PEFT's `save_pretrained` writes, an empty template ("[More Information Needed]") whose
    `base_model` is the local cache path the base was loaded from. The card's `base_model` field is for the hub, so
    it is set only when the base is a hub id (a local folder's path would be a machine path, the tiny base no model).
    """
    name = recipe.model.name_or_path
    hub_base = not recipe.model.is_tiny and not Path(name).is_absolute() and name.count("/") == 1
    header = ["---", "library_name: peft", *([f"base_model: {name}"] if hub_base else []),
              "tags: [lora, tulu-lite]", "---", ""]
    kind = f"QLoRA (4-bit {recipe.quantization.quant_type} base)" if recipe.quantization is not None else "LoRA"
    data = recipe.data
    sources = ([f"mixture `{data.mixture.name}`"] if data.mixture is not None
               else [f"`{Path(source.label).name if source.path is not None else source.label}`"
                     for source in data.train_files])
    lines = [
        f"# {recipe.output_dir.name}", "",
        f"A {kind} adapter trained by tulu-lite (TÜLU-style instruction tuning, loss on the assistant turns only).",
        "",
        f"- base: `{Path(name).name if Path(name).is_absolute() else name}`",
        f"- data: {', '.join(sources)}: {metrics['examples']:,} training examples, max {data.max_seq_length} tokens",
        f"- recipe: `recipe.yaml` in this folder (rerun: `tulu-lite train recipe.yaml`); r={recipe.lora.r}, "
        f"alpha={recipe.lora.alpha:g}, learning rate {recipe.training.learning_rate:g}",
        f"- training: {metrics['steps']} of {metrics['max_steps']} steps ({metrics['epochs'] or 0:.2f} epochs), "
        + (f"loss {_fmt(metrics['first_loss'])} -> {_fmt(metrics['final_loss'])}" if metrics["first_loss"] is not None
           else f"mean loss {_fmt(metrics['train_loss'])}"),
    ]
    if metrics.get("best_step") is not None:
        lines.append(f"- held-out loss: {_fmt(metrics['best_eval_loss'])} at step {metrics['best_step']} "
                     f"(this folder holds the adapter of step {metrics['output_step']})")
    lines += ["", "Everything measured is in `metrics.json` (the loss curve in `loss.png`); where the base came from "
              "in `base_model.json`. Fold the adapter into its base with `tulu-lite merge THIS_FOLDER -o MERGED`, "
              "then `tulu-lite eval MERGED`.", ""]
    target.write_text("\n".join(header + lines), encoding="utf-8")


def base_record(recipe: Recipe, model) -> dict:
    """Where the base weights came from, and a fingerprint `merge` checks the base against.

    Any other base: `tulu_lite.model.files.base_fingerprint` (safetensors headers and samples of every tensor, cheap
    even for 65B; a hub base is fingerprinted in its cache snapshot). The tiny LLaMA, which merge rebuilds from
    its seed: the full weights hash.
    """
    from tulu_lite.model.files import base_fingerprint, model_files_dir
    from tulu_lite.model.tiny import weights_sha256

    loaded_from = model.peft_config["default"].base_model_name_or_path
    record = {"name_or_path": recipe.model.name_or_path, "loaded_from": loaded_from}
    if recipe.model.is_tiny:
        record["weights_sha256"] = weights_sha256(loaded_from)
    else:
        directory = model_files_dir(loaded_from)
        record["fingerprint"] = base_fingerprint(directory) if directory is not None else None
    return record


# ---- after training, on screen ------------------------------------------------------------------------------------


def report_run(metrics: dict, console: Console) -> None:
    """After training: the held-out table, early stopping, and what encoding dropped (one line each)."""
    heldout = metrics["heldout"]
    if heldout is not None:
        console.print(heldout_table(metrics))
        if metrics.get("stage") == "dpo":
            from tulu_lite.train.preference import reward_table

            console.print(reward_table(metrics))
        if metrics["stopped_early_at"] is not None:
            console.print(f"early stopping at step {metrics['stopped_early_at']}: no lower held-out loss since step "
                          f"{metrics['best_step']}", highlight=False)
        if metrics["best_step"] is not None:
            console.print(f"output: the adapter of step {metrics['output_step']} (lowest held-out loss "
                          f"{metrics['best_eval_loss']:.4f})", highlight=False)
    _report_dropped("training", metrics["examples"], metrics["dropped"], console)
    if heldout is not None:
        kept = sum(size["examples"] for size in heldout["sources"].values())
        _report_dropped("held-out", kept, heldout["dropped"], console)


def _report_dropped(what: str, kept: int, dropped: dict[str, int], console: Console) -> None:
    for reason, count in dropped.items():
        console.print(f"[yellow]dropped {count:,} of {kept + count:,} {what} examples: {reason}[/]", highlight=False)


def heldout_table(metrics: dict):
    """Held-out loss per source: before training, at the best evaluation, at the last one."""
    from rich.markup import escape
    from rich.table import Table

    heldout = metrics["heldout"]
    history = heldout["history"]
    best = next((entry for entry in history if entry["step"] == metrics["best_step"]), None)
    columns = [("step 0", next((entry for entry in history if entry["step"] == 0), None)),
               (f"best: {metrics['best_step']}", best), (f"last: {history[-1]['step']}", history[-1])]
    columns = [(title, entry) for title, entry in columns if entry is not None]
    unit = "DPO loss per pair" if metrics.get("stage") == "dpo" else "nats per trained token"
    table = Table(title=f"held-out loss by step ({unit})")
    for title in ("source", "examples", "tokens", *(title for title, _ in columns)):
        table.add_column(title, justify="left" if title == "source" else "right")
    for name, size in heldout["sources"].items():
        table.add_row(escape(name), f"{size['examples']:,}", f"{size['trained_tokens']:,}",
                      *(_fmt(entry["sources"].get(name)) for _, entry in columns))
    table.add_section()
    examples = sum(size["examples"] for size in heldout["sources"].values())
    tokens = sum(size["trained_tokens"] for size in heldout["sources"].values())
    table.add_row("overall", f"{examples:,}", f"{tokens:,}", *(_fmt(entry["loss"]) for _, entry in columns))
    return table


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# ---- the loss curve -----------------------------------------------------------------------------------------------


def plot_loss(metrics: dict, target: Path, *, title: str) -> None:
    """Training loss, and with held-out data the overall held-out loss and one curve per source."""
    # A bare Figure, not pyplot: switching pyplot's backend here would stop a notebook from showing its figures.
    from matplotlib.figure import Figure

    history = metrics["log_history"]
    steps = [entry["step"] for entry in history]
    losses = [entry["loss"] for entry in history]
    figure = Figure(figsize=(7, 4) if metrics["heldout"] else (6, 3.5), dpi=120)
    axis = figure.subplots()
    axis.plot(steps, losses, marker="o" if len(steps) < 30 else None, linewidth=1.5, label="training")
    values = list(losses)
    if metrics["heldout"]:
        values += _plot_heldout(axis, metrics)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("DPO loss (per pair)" if metrics.get("stage") == "dpo" else "loss (assistant tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if metrics["heldout"]:
        axis.legend(fontsize=7, loc="best")
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(target)


def _plot_heldout(axis, metrics: dict) -> list[float]:
    history = metrics["heldout"]["history"]
    steps = [entry["step"] for entry in history]
    overall = [entry["loss"] for entry in history]
    names = list(metrics["heldout"]["sources"])
    label = "held-out, all sources" if len(names) > 1 else f"held-out ({names[0]})"
    axis.plot(steps, overall, color="black", linestyle="--", linewidth=2, marker="s", markersize=3, label=label)
    values = list(overall)
    for name in names if len(names) > 1 else []:
        curve = [entry["sources"].get(name) for entry in history]
        axis.plot(steps, curve, linewidth=1, marker=".", alpha=0.8, label=f"held-out {name}")
        values += curve
    if metrics["best_step"] is not None:
        axis.axvline(metrics["best_step"], color="grey", linestyle=":", linewidth=1, label="best held-out step")
    return values


# ---- where training runs ------------------------------------------------------------------------------------------


def device_summary(recipe: Recipe | None = None) -> str:
    """One line for the CLI: where training runs and, for a recipe, in which dtype with which attention kernel."""
    if torch.cuda.is_available():
        where = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)"
    else:
        where = f"cpu ({os.cpu_count()} cores)"
    if recipe is None:
        return where
    dtype = str(compute_dtype(recipe.model, recipe.quantization)).removeprefix("torch.")
    sharding = ", FSDP" if fsdp_launch() else ""
    return f"{where}{sharding}, {dtype}, attention {resolve_attention(recipe.model, recipe.quantization)}"
