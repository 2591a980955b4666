"""GPU check: exercise tulu-lite's whole GPU path on this machine in one command, and say what works.

    python benchmarks/gpu_check.py                     # one GPU: ~10 minutes; two GPUs add DDP and FSDP runs
    python benchmarks/gpu_check.py --layers 8 --steps 6   # quicker, smaller model

Nothing is downloaded. The base is LLaMA-shaped and built from a config with seeded random weights (default hidden
2048, MLP 5632, 16 layers, 16 heads: 0.95B parameters, the bundled 32k LLaMA tokenizer), saved to a temporary
directory and loaded like a real base (4-bit nf4 + double quantization, LoRA r=16 on every linear layer, the
dtype `auto` picks). Training data are generated from the bundled demo chats (1-24 turns, long-tailed). Checks:

1. layouts: loss and LoRA gradients of the same examples padded and padding-free agree within the compute dtype's
   tolerance, with sdpa and with each installed flash-attention; sdpa and flash-attention agree; a packed row
   *without* example boundaries (negative control) must differ by far more.
2. training: `tulu_lite.train.train` for each attention x {padding-free token budget, padded}, gradient
   checkpointing on, and padding-free without checkpointing: tokens/s, peak allocated memory, and that peak over
   `tulu-lite plan`'s estimate for the same shape (less the CUDA context, which the allocator does not see);
   padding-free runs must land within 0.7-1.2 of the plan. Checkpointing must lower the peak.
3. preference tuning (DPO): `tulu_lite.train.train` with ``stage: dpo`` (QLoRA, sigmoid DPO, the reference = the
   adapter disabled, gradient checkpointing, padded batches of `--batch-size` pairs) on pairs made from the same
   chats (the last reply of each swapped for another chat's), with the reference forward live and precomputed:
   tokens/s (both sides' tokens), peak allocated memory and that peak over `plan`'s estimate for the same recipe
   (which adds a live reference pass, or none when precomputed); the peak must not exceed 1.2 x the plan.
4. merge: the last adapter merged on the GPU with `tulu_lite.merge.merge` and its logits check.
5. eval: batched greedy generation of a few prompts with the merged model, and batched log-likelihoods equal to
   unbatched ones (left padding done right).
6. with 2 GPUs visible: `accelerate launch --multi_gpu --num_processes 2 -m tulu_lite train` (DDP) and the same with
   recipes/accelerate/fsdp.yaml, for QLoRA (4-bit weights sharded) and for LoRA on the bf16 base, finish and write
   adapters; both FSDP adapters merge. This process itself sees only the first GPU (CUDA_VISIBLE_DEVICES).

Prints a table, writes benchmarks/results/gpu_check.json (`--json`), exits 1 if a check failed (a stage that raises,
an out-of-memory say, is a failed check in the table); without CUDA it says
so in one line and exits 2. `--cpu-dry-run` runs checks 1-5 on a tiny model on the CPU (no memory, flash or
multi-GPU checks): the test suite uses it so that this script keeps working where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FSDP_CONFIG = REPO / "recipes" / "accelerate" / "fsdp.yaml"
PLAN_RATIO = (0.7, 1.2)  # measured peak / plan estimate, padding-free runs


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    figures: dict = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per training run")
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--token-budget", type=int, default=4096, help="tokens per padding-free micro-batch")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per padded micro-batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work directory here")
    parser.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_dry_run:  # a shape the CPU trains in seconds
        args.layers, args.hidden, args.intermediate, args.heads = 2, 64, 128, 4
        args.steps, args.max_seq_length, args.token_budget, args.batch_size = 2, 128, 256, 2
    return args


# ---- the base and the data ---------------------------------------------------------------------------------------


def build_base(directory: Path, args, tokenizer, device: torch.device) -> Path:
    """A seeded random LLaMA of the requested shape, saved like a downloaded checkpoint (dtype as `auto` picks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tulu_lite.model.loading import resolve_dtype

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(resolve_dtype("auto"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return directory


def write_chats(path: Path, count: int, seed: int) -> None:
    """Chats of 1-24 demo turns (P(k turns) ~ 1/k), so lengths spread from a few dozen to ~1,000 tokens."""
    from tulu_lite.data.conversations import read_conversations
    from tulu_lite.json_files import write_jsonl
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER

    demo = BUNDLED_LLAMA_TOKENIZER.parents[1] / "demo" / "train.jsonl"
    turns = [[m for m in record["messages"] if m["role"] != "system"] for record in read_conversations(demo)]
    rng = random.Random(seed)
    weights = [1 / k for k in range(1, 25)]
    records = []
    for index in range(count):
        k = rng.choices(range(1, 25), weights)[0]
        records.append({"id": f"gpu-check-{index}", "messages": [m for turn in rng.sample(turns, k) for m in turn]})
    write_jsonl(records, path)


def make_recipe(workdir: Path, base: Path, chats: Path, args, *, name: str, attention: str = "auto",
                padding_free: bool = True, checkpointing: bool = True):
    from tulu_lite.recipe import Recipe

    training = {"max_steps": args.steps, "learning_rate": 1e-4, "warmup_ratio": 0.0, "logging_steps": 1,
                "save_steps": 10_000, "gradient_checkpointing": checkpointing, "seed": args.seed,
                "per_device_batch_size": args.batch_size}
    if padding_free:
        training["max_tokens_per_batch"] = args.token_budget
    return Recipe.model_validate({
        "model": {"name_or_path": str(base), "attn_implementation": attention},
        "quantization": {"quant_type": "nf4", "double_quant": True},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0},  # no dropout: layouts and kernels compute the same thing
        "data": {"train_files": [str(chats)], "max_seq_length": args.max_seq_length, "padding_free": padding_free},
        "training": training,
        "output_dir": str(workdir / name),
    })


def write_pairs(path: Path, chats: Path, seed: int) -> None:
    """Preference pairs from the generated chats: chosen = a chat, rejected = the same chat with its last assistant
    reply swapped for another chat's last reply (so both sides share every turn but the last, as DPO wants)."""
    from tulu_lite.data.conversations import read_conversations
    from tulu_lite.json_files import write_jsonl

    records = [r for r in read_conversations(chats) if r["messages"][-1]["role"] == "assistant"]
    replies = [r["messages"][-1] for r in records]
    rng = random.Random(seed)
    pairs = []
    for index, record in enumerate(records):
        other = replies[rng.randrange(len(replies))]
        if other["content"] == record["messages"][-1]["content"]:
            continue
        pairs.append({"id": f"gpu-check-pair-{index}", "chosen": record["messages"],
                      "rejected": [*record["messages"][:-1], other]})
    write_jsonl(pairs, path)


def make_dpo_recipe(workdir: Path, base: Path, pairs: Path, args, *, precompute: bool):
    """QLoRA DPO on the check's base: padded batches of `--batch-size` pairs, checkpointing on."""
    from tulu_lite.recipe import Recipe

    return Recipe.model_validate({
        "stage": "dpo",
        "model": {"name_or_path": str(base)},
        "quantization": {"quant_type": "nf4", "double_quant": True},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0},
        "data": {"train_files": [str(pairs)], "max_seq_length": args.max_seq_length, "padding_free": False},
        "training": {"max_steps": args.steps, "learning_rate": 1e-4, "warmup_ratio": 0.0, "logging_steps": 1,
                     "save_steps": 10_000, "gradient_checkpointing": True, "seed": args.seed,
                     "per_device_batch_size": args.batch_size},
        "dpo": {"beta": 0.1, "loss_type": "sigmoid", "reference": "base", "precompute_reference": precompute},
        "output_dir": str(workdir / f"dpo-{'precomputed' if precompute else 'live'}"),
    })


# ---- 1. layouts --------------------------------------------------------------------------------------------------


def loss_and_grads(model, batch: dict, device: torch.device, dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**inputs).loss
    loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
    return loss.item(), grads


def difference(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor]) -> tuple[float, float]:
    """Relative difference of two (loss, gradient) pairs."""
    return abs(a[0] - b[0]) / abs(a[0]), float((a[1] - b[1]).norm() / a[1].norm())


def layout_checks(recipe, examples: list[dict], attentions: list[str], device: torch.device) -> list[Check]:
    from tulu_lite.model.loading import compute_dtype, load_recipe_tokenizer
    from tulu_lite.train import build_model
    from tulu_lite.train.collate import AssistantOnlyCollator

    dtype = compute_dtype(recipe.model, recipe.quantization)
    tolerance = 2e-2 if dtype != torch.float32 else 1e-4
    pad = load_recipe_tokenizer(recipe.model).pad_token_id
    model = build_model(recipe, device_map={"": device.index or 0} if device.type == "cuda" else None).train()
    torch.manual_seed(1)
    for name, param in model.named_parameters():  # LoRA B starts at 0, which would leave A without a gradient
        if "lora_B" in name:
            param.data.normal_(std=0.02)
    padded = AssistantOnlyCollator(pad, padding_free=False)(examples)
    packed = AssistantOnlyCollator(pad, padding_free=True)(examples)
    leaky = {"input_ids": packed["input_ids"], "labels": packed["labels"], "use_cache": False}
    checks, packed_results = [], {}
    for attention in attentions:
        model.base_model.model.set_attn_implementation(attention)
        reference = loss_and_grads(model, padded, device, dtype)
        packed_results[attention] = loss_and_grads(model, packed, device, dtype)
        loss_diff, grad_diff = difference(reference, packed_results[attention])
        _, control = difference(reference, loss_and_grads(model, leaky, device, dtype))
        ok = loss_diff <= tolerance and grad_diff <= tolerance and control > 10 * tolerance
        checks.append(Check(f"padded == padding-free ({attention})", ok,
                            f"loss {loss_diff:.1e}, grads {grad_diff:.1e} (tolerance {tolerance:.0e}); "
                            f"without boundaries {control:.1e}",
                            {"loss_rel": loss_diff, "grad_rel": grad_diff, "no_boundaries_grad_rel": control}))
    for attention in attentions[1:]:
        loss_diff, grad_diff = difference(packed_results[attentions[0]], packed_results[attention])
        checks.append(Check(f"{attentions[0]} == {attention} (padding-free)",
                            loss_diff <= tolerance and grad_diff <= tolerance,
                            f"loss {loss_diff:.1e}, grads {grad_diff:.1e}", {"loss_rel": loss_diff,
                                                                             "grad_rel": grad_diff}))
    del model
    free_memory()
    return checks


# ---- 2, 3. training runs: SFT, DPO -------------------------------------------------------------------------------


def train_run(recipe, device: torch.device) -> dict:
    """Train the recipe; tokens/s (median over logged steps after the first), peak memory, plan's estimate."""
    from transformers import TrainerCallback

    from tulu_lite.plan import CUDA_OVERHEAD, estimate_memory, model_shapes
    from tulu_lite.train import train

    class Peak(TrainerCallback):
        peak = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

        def on_train_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                self.peak = torch.cuda.max_memory_allocated(device)

    peak = Peak()
    from tulu_lite.model.loading import resolve_attention

    attention = resolve_attention(recipe.model, recipe.quantization)
    result = train(recipe, force=True, callbacks=[peak])
    history = result.metrics["log_history"]
    rates = [entry["tokens_per_second"] for entry in history[1:]] or [history[-1]["tokens_per_second"]]
    estimate = estimate_memory(model_shapes(recipe), recipe, attention=attention)
    planned = estimate.total_with_checkpointing if recipe.training.gradient_checkpointing else \
        estimate.total_without_checkpointing
    figures = {"attention": attention, "padding_free": recipe.data.padding_free,
               "checkpointing": recipe.training.gradient_checkpointing, "tokens_per_s": statistics.median(rates),
               "peak_gib": peak.peak / 2**30, "plan_gib": (planned - CUDA_OVERHEAD) / 2**30,
               "final_loss": result.metrics["final_loss"], "output_dir": str(result.output_dir)}
    figures["plan_ratio"] = figures["peak_gib"] / figures["plan_gib"] if peak.peak else None
    if recipe.stage == "dpo":
        figures["precompute_reference"] = recipe.dpo.precompute_reference
    free_memory()
    return figures


def training_checks(runs: list[dict]) -> list[Check]:
    checks = []
    low, high = PLAN_RATIO
    for run in runs:
        layout = "padding-free" if run["padding_free"] else "padded"
        name = f"train {run['attention']}, {layout}, checkpointing {'on' if run['checkpointing'] else 'off'}"
        finite = run["final_loss"] is not None and math.isfinite(run["final_loss"])
        detail = f"{run['tokens_per_s']:,.0f} tok/s, loss {run['final_loss']:.3f}"
        ok = finite
        if run["plan_ratio"] is not None:
            detail += f", peak {run['peak_gib']:.2f} GiB = {run['plan_ratio']:.2f} x plan"
            if run["padding_free"]:
                ok = ok and low <= run["plan_ratio"] <= high
        checks.append(Check(name, ok, detail, run))
    on = [r for r in runs if r["padding_free"] and r["checkpointing"]]
    off = [r for r in runs if r["padding_free"] and not r["checkpointing"]]
    if on and off and on[0]["peak_gib"]:
        checks.append(Check("checkpointing lowers the peak", off[0]["peak_gib"] > on[0]["peak_gib"],
                            f"{off[0]['peak_gib']:.2f} GiB off, {on[0]['peak_gib']:.2f} GiB on"))
    free_runs = {r["attention"]: r for r in runs if r["padding_free"] and r["checkpointing"]}
    for run in runs:
        if not run["padding_free"] and run["attention"] in free_runs:
            ratio = free_runs[run["attention"]]["tokens_per_s"] / run["tokens_per_s"]
            checks.append(Check(f"padding-free / padded tokens/s ({run['attention']})", None, f"{ratio:.2f}x",
                                {"ratio": ratio}))
    return checks


def dpo_checks(runs: list[dict]) -> list[Check]:
    """One row per DPO run: tokens/s and peak against the plan (the peak may not exceed the plan's upper bound)."""
    checks = []
    for run in runs:
        reference = "precomputed reference" if run["precompute_reference"] else "live reference"
        finite = run["final_loss"] is not None and math.isfinite(run["final_loss"])
        detail = f"{run['tokens_per_s']:,.0f} tok/s, loss {run['final_loss']:.3f}"
        ok = finite
        if run["plan_ratio"] is not None:
            detail += f", peak {run['peak_gib']:.2f} GiB = {run['plan_ratio']:.2f} x plan"
            ok = ok and run["plan_ratio"] <= PLAN_RATIO[1]
        checks.append(Check(f"DPO (QLoRA) steps, {reference}", ok, detail, run))
    if len(runs) == 2 and all(run["peak_gib"] for run in runs):
        live, pre = sorted(runs, key=lambda run: run["precompute_reference"])
        ratio = live["peak_gib"] / pre["peak_gib"]
        checks.append(Check("DPO peak memory, live / precomputed reference", None, f"{ratio:.2f}x",
                            {"ratio": ratio}))
    return checks


# ---- 4, 5. merge and eval ----------------------------------------------------------------------------------------


def merge_check(adapter: Path, out: Path, device: torch.device) -> tuple[Check, Path]:
    from tulu_lite.merge import merge

    started = time.perf_counter()
    result = merge(adapter, out, force=True)
    seconds = time.perf_counter() - started
    v = result.verification  # merge raises (and writes nothing) when the merged logits miss the tolerance
    ok = v is not None and v.passed and result.device.startswith(device.type)
    return Check("merge on the GPU, verified" if device.type == "cuda" else "merge, verified", ok,
                 f"{result.dtype} on {result.device}, max |diff| {v.merged.max_abs:.2g} (tolerance "
                 f"{v.tolerance:.2g}), {seconds:.0f}s", {"device": result.device, "dtype": result.dtype,
                                                        "max_abs_diff": v.merged.max_abs}), out


def eval_check(model_dir: Path) -> Check:
    from tulu_lite.data.chat_format import generation_prompt
    from tulu_lite.eval.generate import LanguageModel, load_model
    from tulu_lite.eval.prompts import Prompt

    model, tokenizer = load_model(model_dir)
    questions = ["What is the capital of France?", "Name three colours.", "What sound does a cow make?",
                 "What is the opposite of hot?", "Write one sentence about the sea.", "Count to five."]
    prompts = [Prompt(generation_prompt([{"role": "user", "content": q}], tokenizer, "tulu"), True) for q in questions]
    batched = LanguageModel(model, tokenizer, batch_size=4)
    started = time.perf_counter()
    outputs = batched.generate(prompts, max_new_tokens=32)
    seconds = time.perf_counter() - started
    pairs = [(p, " Paris is the answer.") for p in prompts]
    together = batched.continuation_logprobs(pairs)
    alone = LanguageModel(model, tokenizer, batch_size=1).continuation_logprobs(pairs)
    worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(together, alone))
    tolerance = 2e-2 if next(model.parameters()).dtype != torch.float32 else 1e-4
    ok = len(outputs) == len(prompts) and all(isinstance(o, str) for o in outputs) and worst <= tolerance
    del model
    free_memory()
    return Check("eval: batched generation + log-likelihoods", ok,
                 f"{len(outputs)} prompts in {seconds:.1f}s; batched vs one-by-one log-likelihood {worst:.1e} "
                 f"(tolerance {tolerance:.0e})", {"seconds": seconds, "logprob_rel": worst})


# ---- 6. two GPUs -------------------------------------------------------------------------------------------------


def multi_gpu_checks(workdir: Path, recipe, device: torch.device, gpus: list[str]) -> list[Check]:
    from tulu_lite.recipe import save_recipe

    checks = []
    fsdp = ["--config_file", str(FSDP_CONFIG)]
    launches = (("ddp", ["--multi_gpu"], recipe), ("fsdp", fsdp, recipe),
                ("fsdp-lora", fsdp, recipe.model_copy(update={"quantization": None})))  # bf16 LoRA, not 4-bit
    for name, launch, run_recipe in launches:
        path = workdir / f"{name}.yaml"
        save_recipe(run_recipe.model_copy(update={"output_dir": workdir / f"{name}-2gpu"}), path)
        command = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", "2",
                   "--num_machines", "1", "--dynamo_backend", "no", "-m", "tulu_lite", "train", str(path), "--force"]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}  # this process itself sees only the first
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        metrics_file = workdir / f"{name}-2gpu" / "metrics.json"
        ok = done.returncode == 0 and metrics_file.is_file()
        metrics = json.loads(metrics_file.read_text()) if ok else {}
        ok = ok and metrics.get("world_size") == 2
        tail = "" if ok else " | " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        checks.append(Check(f"{name.upper()} on 2 GPUs", ok, f"{seconds:.0f}s, final loss "
                            f"{metrics.get('final_loss', float('nan')):.3f}{tail}", {"seconds": seconds}))
        if name.startswith("fsdp") and ok:
            merged, _ = merge_check(workdir / f"{name}-2gpu", workdir / f"{name}-merged", device)
            checks.append(Check(f"{name.upper()} adapter merges, verified", merged.ok, merged.detail, merged.figures))
    return checks


# ---- driver ------------------------------------------------------------------------------------------------------


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def usable_flash_attention(device: torch.device) -> list[str]:
    """The installed flash kernels this GPU runs: those `auto` would pick if each were the only one installed."""
    from tulu_lite.model.loading import choose_attention, installed_flash_attention

    if device.type != "cuda":
        return []
    capability = torch.cuda.get_device_capability(device)
    return [kernel for kernel in sorted(installed_flash_attention())
            if choose_attention("auto", cuda=True, dtype=torch.bfloat16, capability=capability,
                                installed={kernel}) == kernel]


def environment(device: torch.device) -> dict:
    import bitsandbytes
    import peft
    import transformers
    import trl

    from tulu_lite.model.loading import installed_flash_attention, native_bf16

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__, "bitsandbytes": bitsandbytes.__version__,
            "device": "cpu"}
    if device.type == "cuda":
        info.update(device=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability()),
                    gpus=torch.cuda.device_count(), memory_gib=torch.cuda.get_device_properties(device).total_memory
                    / 2**30, bf16_native=native_bf16(), flash_attention=sorted(installed_flash_attention()),
                    flash_attention_usable=usable_flash_attention(device))
    return info


def guarded(name: str, stage, *args):
    """Run one stage; an exception becomes a failed check (with its last line) so the table and report still appear."""
    try:
        return stage(*args)
    except Exception as error:  # noqa: BLE001 (an OOM, a failed merge verification, a launch that died: all reported)
        message = (str(error).strip().splitlines() or [""])[-1][:300]
        return Check(name, False, f"raised {type(error).__name__}: {message}")


def pin_one_gpu() -> list[str]:
    """Show this process GPU 0 only and return every visible GPU, for the DDP/FSDP launches.

    Plain `tulu-lite train` refuses several visible GPUs in one process (transformers would wrap the model in
    nn.DataParallel, which TRL refuses), so the single-process checks must see one. This has to happen before CUDA
    initialises: the runtime reads CUDA_VISIBLE_DEVICES once. `torch.cuda.device_count()` asks NVML before that
    and does not initialise CUDA (torch/cuda/__init__.py, device_count -> _device_count_nvml).
    """
    count = torch.cuda.device_count()
    if count < 2:
        return [str(index) for index in range(count)]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [gpu.strip() for gpu in listed.split(",")][:count] if listed else [str(index) for index in range(count)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    return gpus


def run_checks(args, workdir: Path, device: torch.device, gpus: list[str]) -> tuple[list[Check], dict]:
    from tulu_lite.data.conversations import read_conversations
    from tulu_lite.data.encode import encode
    from tulu_lite.model.loading import load_recipe_tokenizer
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

    tokenizer = load_tokenizer(BUNDLED_LLAMA_TOKENIZER)
    base = build_base(workdir / "base", args, tokenizer, device)
    chats = workdir / "chats.jsonl"
    write_chats(chats, 400 if not args.cpu_dry_run else 60, args.seed)
    attentions = ["sdpa"] + usable_flash_attention(device)
    recipe = make_recipe(workdir, base, chats, args, name="layouts")
    examples = [encode(record["messages"], load_recipe_tokenizer(recipe.model), max_seq_length=256)
                for record in list(read_conversations(chats))[:8]]
    layouts = guarded("padded == padding-free", layout_checks, recipe, examples, attentions, device)
    checks = layouts if isinstance(layouts, list) else [layouts]

    runs, failed_runs = [], []
    best = attentions[-1]
    plans = [(attention, padding_free, True) for attention in attentions for padding_free in (True, False)]
    for attention, padding_free, checkpointing in [*plans, (best, True, False)]:
        name = f"{attention}-{'pf' if padding_free else 'padded'}{'' if checkpointing else '-nockpt'}"
        run = guarded(f"train {name}", train_run, make_recipe(
            workdir, base, chats, args, name=name, attention=attention, padding_free=padding_free,
            checkpointing=checkpointing), device)
        (failed_runs if isinstance(run, Check) else runs).append(run)
    checks += training_checks(runs) + failed_runs

    pairs = workdir / "pairs.jsonl"
    write_pairs(pairs, chats, args.seed)
    dpo_runs, failed_dpo = [], []
    for precompute in (False, True):
        run = guarded(f"DPO (QLoRA) steps, {'precomputed' if precompute else 'live'} reference", train_run,
                      make_dpo_recipe(workdir, base, pairs, args, precompute=precompute), device)
        (failed_dpo if isinstance(run, Check) else dpo_runs).append(run)
    checks += dpo_checks(dpo_runs) + failed_dpo

    merged = guarded("merge, verified", merge_check, workdir / f"{best}-pf", workdir / "merged", device)
    checks.append(merged[0] if isinstance(merged, tuple) else merged)
    if isinstance(merged, tuple):
        checks.append(guarded("eval: batched generation + log-likelihoods", eval_check, merged[1]))
    if device.type == "cuda" and len(gpus) >= 2:
        multi = guarded("DDP and FSDP on 2 GPUs", multi_gpu_checks, workdir,
                        make_recipe(workdir, base, chats, args, name="multi"), device, gpus[:2])
        checks += multi if isinstance(multi, list) else [multi]
    else:
        checks.append(Check("DDP and FSDP on 2 GPUs", None, "skipped: fewer than 2 GPUs visible"))
    return checks, {"runs": runs, "dpo_runs": dpo_runs}


def report(checks: list[Check], info: dict, args, extra: dict) -> dict:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tulu-lite GPU check: {info['device']} (torch {info['torch']}, CUDA {info['cuda']})")
    table.add_column("check")
    table.add_column("result")
    table.add_column("figures")
    for check in checks:
        if check.ok is None:
            result = "[dim]skipped[/]" if check.detail.startswith("skipped") else "[dim]info[/]"
        else:
            result = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
        table.add_row(check.name, result, check.detail)
    Console().print(table)
    failed = [c.name for c in checks if c.ok is False]
    return {"environment": info, "shape": {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "heads",
                                                                          "steps", "max_seq_length", "token_budget",
                                                                          "batch_size")},
            "checks": [asdict(c) for c in checks], **extra, "failed": failed, "ok": not failed}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    gpus = pin_one_gpu()  # before anything initialises CUDA
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print(f"gpu_check: no CUDA GPU visible (torch {torch.__version__}); run it on a machine with an NVIDIA GPU")
        return 2
    from tulu_lite.json_files import write_json

    if not args.cpu_dry_run and torch.cuda.device_count() > 1:  # no NVML: CUDA started with every GPU visible
        print(f"gpu_check: {torch.cuda.device_count()} GPUs visible and NVML could not narrow them; run "
              f"CUDA_VISIBLE_DEVICES=0 python benchmarks/gpu_check.py (one GPU; the DDP/FSDP checks need NVML)")
        return 2
    device = torch.device("cuda", 0) if not args.cpu_dry_run else torch.device("cpu")
    info = environment(device)
    with tempfile.TemporaryDirectory(prefix="tulu-gpu-check-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TULU_LITE_CACHE", str(workdir / "cache"))
        checks, extra = run_checks(args, workdir, device, gpus)
    result = report(checks, info, args, extra)
    write_json(args.json, result)
    print(f"report written to {args.json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
