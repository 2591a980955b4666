"""Plan: what a recipe will train on and how much GPU memory it needs, before any weights are loaded.

`plan(recipe)` encodes the data (the same Arrow-cached encoding `train` uses, so nothing is done twice) and reads
only the model's config. `estimate_memory` is a closed formula over that config; all sizes are per GPU (a
data-parallel launch replicates everything on every GPU).

Notation: L layers, h hidden size, i intermediate (MLP) size, kv = key/value width (num_key_value_heads x
head_dim), V vocabulary, r LoRA rank, T tokens in one micro-batch, a bytes per activation element (2 for
bf16/fp16, 4 for fp32).

    linear params       P_lin = L (2 h^2 + 2 h kv + 3 h i)        (q, o: h x h; k, v: h x kv; gate, up, down: h x i)
    other params        P_oth = V h (embeddings) + V h (lm_head, unless tied) + (2L + 1) h (norms)

    weights, 4-bit      P_lin x (0.5 + c) bytes, c = 4/64 (one fp32 absmax per 64-weight block)
                        or c = 1/64 + 4/(64 x 256) with double quantization (8-bit absmax, fp32 per 256 blocks),
                        + P_oth x 4 bytes (prepare_model_for_kbit_training upcasts them to fp32)
    weights, no quant   (P_lin + P_oth) x bytes(model dtype)
    LoRA params         P_lora = L x sum over target modules of r (in + out)
    LoRA training       P_lora x 16 bytes: fp32 weights 4 + fp32 gradients 4 + AdamW moments 8
    activations / layer A = a x T x (7h + 3kv + 4i + D), D = sum of the inputs' widths of the LoRA targets when
                        lora.dropout > 0 (dropout keeps a copy of each input), else 0.
                        Attention: residual h, normed h, q/k/v h + 2kv, rotated q/k h + kv, output h; MLP:
                        residual h, normed h, gate/up/act/product 4i. With SDPA / flash attention there is no
                        T^2 score matrix to keep.
    activations         without gradient checkpointing: L x A
                        with gradient checkpointing:   L x a x T x h (each layer's input) + A (one layer recomputed)
    LM head             a x T x h: TRL computes the log-probabilities in chunks, so the T x V logits are never held
                        at once on a GPU
    CUDA overhead       0.75 GiB (context, cuBLAS workspace, allocator slack); a rough constant

T is the worst case of one micro-batch: per_device_batch_size x max_seq_length, or training.max_tokens_per_batch
when set. Real peaks also depend on fragmentation and kernels; treat the total as a planning figure (+-20%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from tulu_lite.config import Recipe
from tulu_lite.errors import TuluError

GIB = 1024**3
CUDA_OVERHEAD = int(0.75 * GIB)
LORA_BYTES_PER_PARAM = 16


@dataclass
class Shapes:
    """The numbers of a causal LM config that the estimate needs."""

    layers: int
    hidden: int
    intermediate: int
    kv: int
    vocab: int
    tied: bool

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each LLaMA-style linear layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.module_dims().values())

    @property
    def other_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden


@dataclass
class MemoryEstimate:
    rows: list[tuple[str, int, str]]  # (component, bytes, how it was computed)
    lora_params: int
    tokens_per_micro_batch: int
    total_without_checkpointing: int
    total_with_checkpointing: int


@dataclass
class DataStats:
    examples: int
    dropped: dict[str, int]
    tokens: int
    trained_tokens: int
    max_tokens: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    tokens_per_step: float


@dataclass
class Plan:
    recipe: Recipe
    shapes: Shapes
    memory: MemoryEstimate
    data: DataStats | None = None
    notes: list[str] = field(default_factory=list)


def plan(recipe: Recipe, *, with_data: bool = True) -> Plan:
    """Token counts (when `with_data`) and the memory estimate for `recipe`, reading only the model's config."""
    from tulu_lite.model import load_recipe_tokenizer

    shapes = model_shapes(recipe)
    result = Plan(recipe=recipe, shapes=shapes, memory=estimate_memory(shapes, recipe))
    if with_data:
        from tulu_lite.train import encode_training_data

        dataset, report = encode_training_data(recipe, load_recipe_tokenizer(recipe.model))
        result.data = data_stats(recipe, [len(ids) for ids in dataset["input_ids"]], report)
    return result


def model_shapes(recipe: Recipe) -> Shapes:
    """Read the model's config (config.json only, no weights); tiny-llama uses its embedded config."""
    if recipe.model.is_tiny:
        from tulu_lite.model import load_recipe_tokenizer, tiny_llama_config

        tiny = recipe.model.tiny
        vocab = len(load_recipe_tokenizer(recipe.model))
        config = tiny_llama_config(vocab, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers)
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(recipe.model.name_or_path,
                                                trust_remote_code=recipe.model.trust_remote_code)
        except (OSError, ValueError) as exc:
            where = recipe.model.name_or_path
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TuluError(f"model.name_or_path: {where}: could not read its config ({first_line})") from exc
    return shapes_from_config(config)


def shapes_from_config(config) -> Shapes:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return Shapes(layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
                  kv=kv_heads * head_dim, vocab=config.vocab_size, tied=bool(config.tie_word_embeddings))


def lora_param_count(shapes: Shapes, recipe: Recipe) -> int:
    dims = shapes.module_dims()
    unknown = [name for name in recipe.lora.target_modules if name not in dims]
    if unknown:
        raise TuluError(f"lora.target_modules: plan knows LLaMA-style layers only, not {', '.join(unknown)}")
    return shapes.layers * sum(recipe.lora.r * sum(dims[name]) for name in recipe.lora.target_modules)


def estimate_memory(shapes: Shapes, recipe: Recipe) -> MemoryEstimate:
    """The formula of the module docstring, row by row."""
    quant = recipe.quantization
    act_bytes = 4 if _compute_dtype(recipe) == "float32" else 2
    rows: list[tuple[str, int, str]] = []
    if quant is not None:
        constants = (1 / 64 + 4 / (64 * 256)) if quant.double_quant else 4 / 64
        rows.append((f"base weights, 4-bit {quant.quant_type}", int(shapes.linear_params * (0.5 + constants)),
                     f"{_count(shapes.linear_params)} linear params x {0.5 + constants:.3f} B"))
        rows.append(("embeddings, lm_head, norms (fp32)", shapes.other_params * 4,
                     f"{_count(shapes.other_params)} params x 4 B"))
    else:
        width = 4 if _model_dtype(recipe) == "float32" else 2
        total = shapes.linear_params + shapes.other_params
        rows.append((f"base weights ({_model_dtype(recipe)})", total * width, f"{_count(total)} params x {width} B"))
    lora = lora_param_count(shapes, recipe)
    rows.append(("LoRA weights + grads + AdamW", lora * LORA_BYTES_PER_PARAM, f"{_count(lora)} params x 16 B"))
    tokens = _micro_batch_tokens(recipe)
    dims = shapes.module_dims()
    dropout_copies = sum(dims[name][0] for name in recipe.lora.target_modules) if recipe.lora.dropout > 0 else 0
    per_layer = act_bytes * tokens * (7 * shapes.hidden + 3 * shapes.kv + 4 * shapes.intermediate + dropout_copies)
    checkpointed = shapes.layers * act_bytes * tokens * shapes.hidden + per_layer
    head = act_bytes * tokens * shapes.hidden
    rows.append(("LM head (chunked log-probs)", head, f"{tokens:,} tokens x h"))
    rows.append(("CUDA context + workspace", CUDA_OVERHEAD, "constant"))
    fixed = sum(size for _, size, _ in rows)
    return MemoryEstimate(
        rows=rows + [("activations, no checkpointing", shapes.layers * per_layer, f"L x {_bytes(per_layer)}"),
                     ("activations, checkpointing", checkpointed, "layer inputs + one layer")],
        lora_params=lora,
        tokens_per_micro_batch=tokens,
        total_without_checkpointing=fixed + shapes.layers * per_layer,
        total_with_checkpointing=fixed + checkpointed,
    )


def _micro_batch_tokens(recipe: Recipe) -> int:
    if recipe.training.max_tokens_per_batch is not None:
        return recipe.training.max_tokens_per_batch
    return recipe.training.per_device_batch_size * recipe.data.max_seq_length


def _model_dtype(recipe: Recipe) -> str:
    # Planning is for the GPU the recipe will run on: "auto" means bfloat16 there.
    return "bfloat16" if recipe.model.dtype == "auto" else recipe.model.dtype


def _compute_dtype(recipe: Recipe) -> str:
    if recipe.quantization is not None:
        return "bfloat16" if recipe.quantization.compute_dtype == "auto" else recipe.quantization.compute_dtype
    return _model_dtype(recipe)


def data_stats(recipe: Recipe, lengths: list[int], report) -> DataStats:
    """Examples, tokens and optimizer steps per epoch, as one process would run the recipe."""
    t = recipe.training
    if t.max_tokens_per_batch is not None:
        from tulu_lite.collate import token_budget_batches

        micro = len(token_budget_batches(lengths, t.max_tokens_per_batch, seed=t.seed))
    else:
        micro = math.ceil(len(lengths) / t.per_device_batch_size)
    steps_per_epoch = max(1, math.ceil(micro / t.gradient_accumulation_steps))
    total = t.max_steps if t.max_steps is not None else math.ceil(t.epochs * steps_per_epoch)
    return DataStats(
        examples=len(lengths), dropped=dict(report.dropped), tokens=sum(lengths), trained_tokens=report.trained_tokens,
        max_tokens=max(lengths), micro_batches_per_epoch=micro, steps_per_epoch=steps_per_epoch, total_steps=total,
        tokens_per_step=sum(lengths) / steps_per_epoch,
    )


# ---- output ---------------------------------------------------------------------------------------------------


def render_plan(result: Plan, console: Console) -> None:
    """Print the data and memory tables."""
    recipe, shapes = result.recipe, result.shapes
    t = recipe.training
    console.print(
        f"[bold]{recipe.model.name_or_path}[/]: {shapes.layers} layers, hidden {shapes.hidden}, MLP "
        f"{shapes.intermediate}, vocab {shapes.vocab}, {_count(shapes.linear_params + shapes.other_params)} params; "
        f"LoRA r={recipe.lora.r} on {len(recipe.lora.target_modules)} modules: "
        f"{result.memory.lora_params:,} trainable",
        highlight=False,
    )
    if t.max_tokens_per_batch is not None:
        unit = f"{t.max_tokens_per_batch:,} tokens per micro-batch (padding-free)"
    else:
        unit = f"{t.per_device_batch_size} examples per micro-batch"
    console.print(
        f"effective batch: {unit} x {t.gradient_accumulation_steps} accumulation steps x number of GPUs",
        highlight=False,
    )
    if result.data is not None:
        console.print(_data_table(result.data))
    console.print(_memory_table(result.memory, recipe))


def _data_table(data: DataStats) -> Table:
    table = Table(title="data", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    dropped = sum(data.dropped.values())
    table.add_row("examples (dropped)", f"{data.examples:,} ({dropped:,})")
    table.add_row("tokens / trained (assistant) tokens", f"{data.tokens:,} / {data.trained_tokens:,}")
    table.add_row("mean / max tokens per example", f"{data.tokens / data.examples:,.0f} / {data.max_tokens:,}")
    table.add_row("micro-batches / optimizer steps per epoch",
                  f"{data.micro_batches_per_epoch:,} / {data.steps_per_epoch:,}")
    table.add_row("optimizer steps in total", f"{data.total_steps:,}")
    table.add_row("tokens per optimizer step (mean)", f"{data.tokens_per_step:,.0f}")
    return table


def _memory_table(memory: MemoryEstimate, recipe: Recipe) -> Table:
    table = Table(title=f"GPU memory estimate per GPU ({memory.tokens_per_micro_batch:,} tokens per micro-batch)")
    table.add_column("component")
    table.add_column("size", justify="right")
    table.add_column("how")
    for name, size, how in memory.rows:
        table.add_row(name, _bytes(size), how)
    table.add_section()
    chosen = recipe.training.gradient_checkpointing
    table.add_row("total with gradient checkpointing", _bytes(memory.total_with_checkpointing),
                  "<- this recipe" if chosen else "")
    table.add_row("total without", _bytes(memory.total_without_checkpointing), "" if chosen else "<- this recipe")
    return table


def _bytes(size: int) -> str:
    if size >= GIB / 10:
        return f"{size / GIB:.2f} GiB"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 / 10 else f"{size / 1024:.1f} KiB"


def _count(number: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if number >= scale:
            return f"{number / scale:.2f}{unit}"
    return f"{number:.0f}"
