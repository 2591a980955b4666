"""Plan: what a recipe will train on and how much GPU memory it needs, before any weights are loaded.

`plan(recipe, gpus=N)` encodes the data (the same Arrow-cached encoding `train` uses, so nothing is done twice) and
reads only the model's config. `estimate_memory` is a closed formula over that config, per GPU: one GPU, or each GPU
of a data-parallel launch (which replicates everything), or with `gpus` > 1 each GPU of an FSDP launch
(recipes/accelerate/fsdp.yaml), which divides what FSDP shards.

Notation: L layers, h hidden size, i intermediate (MLP) size, kv = key/value width (num_key_value_heads x
head_dim), V vocabulary, r LoRA rank, T tokens in one micro-batch, W the width of an attention row (T for a
padding-free row, max_seq_length for padded rows), N GPUs. Bytes: c of the compute dtype (2 for bf16/fp16), m of the
model dtype, s of the hidden states flowing between layers.

    linear params       P_lin = L (2 h^2 + 2 h kv + 3 h i)        (q, o: h x h; k, v: h x kv; gate, up, down: h x i)
    other params        P_oth = V h (embeddings) + V h (lm_head, unless tied) + (2L + 1) h (norms)

    weights, 4-bit      P_lin x (0.5 + q), q = 4/64 (one fp32 absmax per 64-weight block) or, with double
                        quantization, 1/64 + 4/(64 x 256) (8-bit absmax, one fp32 per 256 blocks);
                        + P_oth x 4: PEFT's `prepare_model_for_kbit_training` upcasts everything not 4-bit to fp32
    weights, no quant   (P_lin + P_oth) x m
    LoRA params         P_lora = L x sum over target modules of r (in + out)
    LoRA training       P_lora x 16 bytes: fp32 weights 4 + fp32 gradients 4 + AdamW moments 8
                        + P_lora x c: autocast keeps a compute-dtype copy of every fp32 weight it casts (its cast
                        cache lives as long as the forward)
    hidden states       s = 4 under QLoRA: the upcast embeddings and norms make the stream fp32, and bitsandbytes'
                        Linear4bit returns its input's dtype (bitsandbytes/nn/modules.py, `Linear4bit.forward`);
                        s = m without quantization (and under FSDP, where nothing is upcast)
    activations / layer A = T x (s (5h + 2kv + 4i) + c (2h + kv) + D d): in the stream's dtype the residual h,
                        normed h, q/k/v h + 2kv, MLP residual h, normed h, gate/up/act/product 4i; in the compute
                        dtype (the attention kernel casts under autocast) rotated q/k h + kv and the attention output
                        h. D = sum of the LoRA targets' input widths: lora_A keeps its own copy of its input when it
                        differs from the layer's (d = c + 1 with dropout: the dropped-out input in c bytes + a 1-byte
                        mask; d = c without dropout when s != c, the autocast copy; else 0)
                        eager attention adds heads x T x W x (4 + c) (fp32 softmax kept + its cast)
    activations         without gradient checkpointing: L x A
                        with gradient checkpointing:   L x s x T x h (each layer's input) + A (one layer recomputed)
    attention mask      sdpa / eager on a padding-free or padded batch: transformers builds a boolean T x W mask
                        (masking_utils.sdpa_mask) and torch's SDPA turns it into an additive one in the compute
                        dtype for the memory-efficient kernel (aten convert_boolean_attn_mask): T x W x (1 + c).
                        flash-attention (and flex) need none: `auto` counts as sdpa unless flash-attention is
                        installed on this machine's GPU
    LM head             TRL's chunked log-probabilities (trl/kernels/chunked_logprob.py) keep the final hidden
                        states (T x h x s), build an fp32 gradient for them (T x h x 4), a tile buffer of
                        min(T, 4096) x 32768 logits plus the hidden chunk (x c), and a compute-dtype copy of the
                        lm_head weight (min(V, 32768) x h x c) when lm_head is stored in another dtype (fp32 under
                        QLoRA)
    CUDA overhead       0.75 GiB (context, cuBLAS workspace, allocator slack); a rough constant

With FSDP over N GPUs (N > 1) the 4-bit weights are stored in the model dtype and nothing is upcast (s = m), FSDP
divides the weights (not the 4-bit constants, which live outside the parameters), the LoRA weights, gradients and
AdamW state by N, computes LoRA in the compute dtype on gathered copies (no autocast copies), and adds two gathered
decoder layers (the one computing and the one prefetched). A 4-bit base is quantized whole on every GPU before
FSDP shards it (transformers only loads on process 0 alone for unquantized models: modeling_utils.py,
`_move_missing_keys_from_meta_to_device`), so the plan's total is the larger of training and that loading peak.

T is the worst case of one micro-batch: per_device_batch_size x max_seq_length, or training.max_tokens_per_batch
when set. Preference tuning (``stage: dpo``) runs every pair's chosen and rejected side in one padded batch, so T =
2 x per_device_batch_size x max_seq_length, plus its reference: unless ``dpo.precompute_reference``, a no-grad
reference forward over the same rows runs while the policy's activations are held (one layer's activations and
the LM head's tile at a time), and ``reference: adapter`` keeps a frozen copy of the adapter (P_lora x 4 B);
precomputed, the reference costs no GPU memory during training (its log-probs are read from the cache).
Real peaks also depend on fragmentation and kernels; treat the total as a planning figure (+-20%).
benchmarks/gpu_check.py measures the peak on a real GPU against this estimate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from tulu_lite.errors import TuluError, first_line
from tulu_lite.recipe import Recipe

GIB = 1024**3
CUDA_OVERHEAD = int(0.75 * GIB)
LORA_BYTES_PER_PARAM = 16
# TRL's chunked log-prob head: tokens per tile (trl/kernels/chunked_logprob.py, TOKEN_CHUNK_SIZE) and vocabulary
# columns per tile (trl/trainer/utils.py, _CHUNKED_LOGPROB_CHUNK_SIZE).
HEAD_TOKEN_TILE = 4096
HEAD_VOCAB_TILE = 32768
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Shapes:
    """The numbers of a causal LM config that the estimate needs."""

    layers: int
    hidden: int
    intermediate: int
    kv: int
    vocab: int
    tied: bool
    head_dim: int = 128

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
    rows: list[tuple[str, int, str]]  # (component, bytes per GPU, how it was computed)
    lora_params: int
    tokens_per_micro_batch: int
    total_without_checkpointing: int
    total_with_checkpointing: int
    gpus: int = 1
    attention: str = "sdpa"
    loading_peak: int = 0  # FSDP + 4-bit: the whole quantized base on every GPU before sharding


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
    sides: tuple[int, int] | None = None  # preference pairs: trained tokens of the chosen and the rejected sides


@dataclass
class Plan:
    recipe: Recipe
    shapes: Shapes
    memory: MemoryEstimate
    data: DataStats | None = None
    notes: list[str] = field(default_factory=list)


def plan(recipe: Recipe, *, with_data: bool = True, gpus: int = 1) -> Plan:
    """Token counts (when `with_data`) and the memory estimate for `recipe` on `gpus` GPUs (FSDP when > 1),
    reading only the model's config."""
    if gpus < 1:
        raise TuluError(f"--gpus: expected a positive number of GPUs, got {gpus}")
    check_hub_model(recipe)  # before torch and transformers load: an unreachable hub model fails in a second
    from tulu_lite.model.loading import load_recipe_tokenizer

    shapes = model_shapes(recipe)
    attention = planned_attention(recipe)
    memory = estimate_memory(shapes, recipe, gpus=gpus, attention=attention)
    result = Plan(recipe=recipe, shapes=shapes, memory=memory)
    if with_data:
        from tulu_lite.train.data import encode_training_data

        dataset, report = encode_training_data(recipe, load_recipe_tokenizer(recipe.model))
        if recipe.stage == "dpo":  # a pair's tokens: both sides; its rows: each side
            rows = [len(ids) for column in ("chosen_input_ids", "rejected_input_ids") for ids in dataset[column]]
            lengths = [len(c) + len(r) for c, r in zip(dataset["chosen_input_ids"], dataset["rejected_input_ids"])]
        else:
            rows = lengths = [len(ids) for ids in dataset["input_ids"]]
        result.data = data_stats(recipe, lengths, report, gpus=gpus)
        longest = max(rows, default=0)
        if 0 < longest < recipe.data.max_seq_length and recipe.training.max_tokens_per_batch is None:
            # Batches are padded to their longest example, so no batch of this data is wider than `longest`.
            result.memory = estimate_memory(shapes, recipe, gpus=gpus, attention=attention, sequence_length=longest)
            result.notes.append(f"data.max_seq_length is {recipe.data.max_seq_length:,} but the longest example "
                                f"is {longest:,} tokens: the estimate is for batches of that length (the padding "
                                f"collator pads to the longest example of a batch)")
    return result


def planned_attention(recipe: Recipe) -> str:
    """The recipe's attention, with ``auto`` resolved as it would be on this machine's GPU (sdpa without one)."""
    choice = recipe.model.attn_implementation
    if choice != "auto":
        return choice
    import torch

    if not torch.cuda.is_available():
        return "sdpa"
    from tulu_lite.model.loading import resolve_attention

    return resolve_attention(recipe.model, recipe.quantization)


def model_shapes(recipe: Recipe) -> Shapes:
    """Read the model's config (config.json only, no weights); tiny-llama uses its embedded config."""
    if recipe.model.is_tiny:
        from tulu_lite.model.loading import load_recipe_tokenizer
        from tulu_lite.model.tiny import tiny_llama_config

        tiny = recipe.model.tiny
        vocab = len(load_recipe_tokenizer(recipe.model))
        config = tiny_llama_config(vocab, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers)
    else:
        from transformers import AutoConfig

        from tulu_lite.recipe import local_model_dir

        where = recipe.model.name_or_path
        local_model_dir(where, "model.name_or_path")  # a missing path is not a hub lookup
        try:
            config = AutoConfig.from_pretrained(where, trust_remote_code=recipe.model.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise TuluError(f"model.name_or_path: {where}: could not read its config ({first_line(exc)})") from exc
    return shapes_from_config(config)


def check_hub_model(recipe: Recipe) -> None:
    """A hub model whose config is not in the local cache needs the hub: when offline mode is on or the hub can't
    be reached, say so at once, before anything heavy is imported.

    huggingface_hub retries an unreachable host five times with back-off (about 25 s of "Retrying in 8s" lines)
    before failing; one TCP connection attempt tells the same in a moment. Behind a proxy a direct attempt says
    nothing, so it is skipped there.
    """
    from tulu_lite.recipe import local_model_dir

    name = recipe.model.name_or_path
    if recipe.model.is_tiny or local_model_dir(name, "model.name_or_path") is not None:
        return
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # cached: no network needed
    advice = f"download it where there is network (hf download {name}) or give a local model folder"
    if constants.HF_HUB_OFFLINE:
        raise TuluError(f"model.name_or_path: {name}: not in the local Hugging Face cache and offline mode is on "
                        f"(HF_HUB_OFFLINE=1); {advice}")
    if any(os.environ.get(variable) for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=5).close()
    except OSError as exc:
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        raise TuluError(f"model.name_or_path: {name}: not in the local Hugging Face cache and the hub can't be "
                        f"reached ({endpoint.hostname}: {reason}); {advice}") from None


def shapes_from_config(config) -> Shapes:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return Shapes(layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
                  kv=kv_heads * head_dim, vocab=config.vocab_size, tied=bool(config.tie_word_embeddings),
                  head_dim=head_dim)


def lora_param_count(shapes: Shapes, recipe: Recipe) -> int:
    dims = shapes.module_dims()
    unknown = [name for name in recipe.lora.target_modules if name not in dims]
    if unknown:
        raise TuluError(f"lora.target_modules: plan knows LLaMA-style layers only, not {', '.join(unknown)}")
    return shapes.layers * sum(recipe.lora.r * sum(dims[name]) for name in recipe.lora.target_modules)


def estimate_memory(shapes: Shapes, recipe: Recipe, *, gpus: int = 1, attention: str = "sdpa",
                    sequence_length: int | None = None) -> MemoryEstimate:
    """The formula of the module docstring, row by row, per GPU (FSDP over `gpus` when more than one).

    `sequence_length` is the longest example a padded batch can hold (default: data.max_seq_length; `plan` gives
    the data's longest example when that is shorter).
    """
    fsdp = gpus > 1
    quant = recipe.quantization
    c = DTYPE_BYTES[_compute_dtype(recipe)]
    m = DTYPE_BYTES[_model_dtype(recipe)]
    s = 4 if quant is not None and not fsdp else m  # the hidden-state stream (see the module docstring)
    length = sequence_length or recipe.data.max_seq_length
    tokens, width = _micro_batch_tokens(recipe, length), _attention_width(recipe, length)
    lora = lora_param_count(shapes, recipe)
    rows = _weight_rows(shapes, recipe, gpus, m)
    rows.append(("LoRA weights + grads + AdamW", lora * LORA_BYTES_PER_PARAM // gpus,
                 f"{_count(lora)} params x 16 B" + (f" / {gpus} GPUs" if fsdp else "")))
    if fsdp:
        rows.append(("FSDP: 2 gathered decoder layers", 2 * _layer_bytes(shapes, recipe, m, lora),
                     "the layer computing + the one prefetched"))
    elif c < 4:
        rows.append(("LoRA weights cast by autocast", lora * c, f"{_count(lora)} params x {c} B"))
    lm_head_bytes = 4 if quant is not None and not fsdp else m
    rows.append(("LM head (TRL chunked log-probs)", _head_bytes(shapes, tokens, s, c, lm_head_bytes),
                 f"{tokens:,} tokens: hidden + fp32 grad + tiles"))
    if attention in ("sdpa", "eager"):
        rows.append((f"attention mask ({attention})", tokens * width * (1 + c), f"{tokens:,} x {width:,} x {1 + c} B"))
    rows.append(("CUDA context + workspace", CUDA_OVERHEAD, "constant"))
    per_layer = _layer_activations(shapes, recipe, tokens, width, s, c, attention)
    rows += _reference_rows(shapes, recipe, tokens, per_layer, lora, c)
    checkpointed = shapes.layers * s * tokens * shapes.hidden + per_layer
    fixed = sum(size for _, size, _ in rows)
    loading = _loading_peak(shapes, recipe, m) if fsdp and quant is not None else 0
    return MemoryEstimate(
        rows=rows + [("activations, no checkpointing", shapes.layers * per_layer, f"L x {_bytes(per_layer)}"),
                     ("activations, checkpointing", checkpointed, f"layer inputs ({s} B) + one layer")],
        lora_params=lora,
        tokens_per_micro_batch=tokens,
        total_without_checkpointing=max(fixed + shapes.layers * per_layer, loading),
        total_with_checkpointing=max(fixed + checkpointed, loading),
        gpus=gpus,
        attention=attention,
        loading_peak=loading,
    )


def _reference_rows(shapes: Shapes, recipe: Recipe, tokens: int, per_layer: int, lora: int, c: int) -> list:
    """DPO's reference (module docstring): nothing when precomputed, else its forward's transients (+ the frozen
    adapter copy with ``reference: adapter``)."""
    dpo = recipe.dpo
    if recipe.stage != "dpo" or dpo is None:
        return []
    if dpo.precompute_reference:
        return [("reference (precomputed, cached)", 0, "read from the cache: no reference forward")]
    tile = min(tokens, HEAD_TOKEN_TILE) * (HEAD_VOCAB_TILE + shapes.hidden) * c
    rows = [("reference forward (no grad)", per_layer + tile, f"{tokens:,} tokens: one layer + LM head tile")]
    if dpo.reference == "adapter":
        rows.append(("reference adapter (frozen copy)", lora * 4, f"{_count(lora)} params x 4 B"))
    return rows


def _quant_constants(recipe: Recipe) -> float:
    """Bytes of quantization constants per 4-bit weight (absmax per 64-weight block, optionally quantized again)."""
    return (1 / 64 + 4 / (64 * 256)) if recipe.quantization.double_quant else 4 / 64


def _weight_rows(shapes: Shapes, recipe: Recipe, gpus: int, m: int) -> list[tuple[str, int, str]]:
    """The frozen base: 4-bit linear weights (+ constants) and the rest, or everything in the model dtype."""
    quant, share = recipe.quantization, (f" / {gpus} GPUs" if gpus > 1 else "")
    if quant is None:
        total = shapes.linear_params + shapes.other_params
        return [(f"base weights ({_model_dtype(recipe)})", total * m // gpus, f"{_count(total)} params x {m} B{share}")]
    constants = _quant_constants(recipe)
    if gpus == 1:
        packed = int(shapes.linear_params * (0.5 + constants))
        how = f"{_count(shapes.linear_params)} linear params x {0.5 + constants:.3f} B"
        return [(f"base weights, 4-bit {quant.quant_type}", packed, how),
                ("embeddings, lm_head, norms (fp32)", shapes.other_params * 4,
                 f"{_count(shapes.other_params)} params x 4 B")]
    # Under FSDP the packed weights are sharded; their constants (bitsandbytes' quant_state) are not parameters.
    packed = int(shapes.linear_params * 0.5) // gpus + int(shapes.linear_params * constants)
    how = f"{_count(shapes.linear_params)} x (0.5 B / {gpus} + {constants:.3f} B)"
    return [(f"base weights, 4-bit {quant.quant_type}", packed, how),
            (f"embeddings, lm_head, norms ({_model_dtype(recipe)})", shapes.other_params * m // gpus,
             f"{_count(shapes.other_params)} params x {m} B{share}")]


def _layer_bytes(shapes: Shapes, recipe: Recipe, m: int, lora: int) -> int:
    """One decoder layer's parameters as FSDP gathers them (4-bit packed in the model dtype, LoRA in fp32)."""
    linear = shapes.linear_params // shapes.layers
    weights = linear * 0.5 if recipe.quantization is not None else linear * m
    return int(weights + 2 * shapes.hidden * m + lora // shapes.layers * 4)


def _loading_peak(shapes: Shapes, recipe: Recipe, m: int) -> int:
    """The whole 4-bit base on one GPU (every process quantizes it before FSDP shards it) + CUDA overhead."""
    packed = int(shapes.linear_params * (0.5 + _quant_constants(recipe)))
    return packed + shapes.other_params * m + CUDA_OVERHEAD


def _head_bytes(shapes: Shapes, tokens: int, s: int, c: int, lm_head_bytes: int) -> int:
    """TRL's chunked log-prob head: kept hidden states, their fp32 gradient, one tile, the cast lm_head chunk."""
    tile = min(tokens, HEAD_TOKEN_TILE) * (HEAD_VOCAB_TILE + shapes.hidden) * c
    cast = min(shapes.vocab, HEAD_VOCAB_TILE) * shapes.hidden * c if lm_head_bytes != c else 0
    return tokens * shapes.hidden * (s + 4) + tile + cast


def _layer_activations(shapes: Shapes, recipe: Recipe, tokens: int, width: int, s: int, c: int, attention: str) -> int:
    """A: what one decoder layer keeps for its backward pass (module docstring)."""
    dims = shapes.module_dims()
    lora_inputs = sum(dims[name][0] for name in recipe.lora.target_modules)
    if recipe.lora.dropout > 0:
        copy = c + 1
    else:
        copy = c if s != c else 0
    stream = 5 * shapes.hidden + 2 * shapes.kv + 4 * shapes.intermediate
    attention_part = 2 * shapes.hidden + shapes.kv  # rotated q/k and the attention output, in the kernel's dtype
    per_layer = tokens * (s * stream + c * attention_part + lora_inputs * copy)
    if attention == "eager":
        heads = shapes.hidden // max(1, shapes.head_dim)
        per_layer += heads * tokens * width * (4 + c)
    return per_layer


def _attention_width(recipe: Recipe, length: int) -> int:
    """How many keys one query row spans: the whole packed row, or one padded example."""
    if recipe.data.padding_free:
        return _micro_batch_tokens(recipe, length)
    return length


def _micro_batch_tokens(recipe: Recipe, length: int) -> int:
    if recipe.training.max_tokens_per_batch is not None:
        return recipe.training.max_tokens_per_batch
    rows = 2 if recipe.stage == "dpo" else 1  # a pair: its chosen and its rejected row
    return rows * recipe.training.per_device_batch_size * length


def _model_dtype(recipe: Recipe) -> str:
    # Planning is for the GPU the recipe will run on: "auto" means bfloat16 there.
    return "bfloat16" if recipe.model.dtype == "auto" else recipe.model.dtype


def _compute_dtype(recipe: Recipe) -> str:
    if recipe.quantization is not None:
        return "bfloat16" if recipe.quantization.compute_dtype == "auto" else recipe.quantization.compute_dtype
    return _model_dtype(recipe)


def data_stats(recipe: Recipe, lengths: list[int], report, *, gpus: int = 1) -> DataStats:
    """Examples, tokens and optimizer steps per epoch on `gpus` processes (each takes every gpus-th micro-batch,
    and accelerate gives every process the same number: accelerate/data_loader.py, `BatchSamplerShard`)."""
    t = recipe.training
    if t.max_tokens_per_batch is not None:
        from tulu_lite.train.collate import token_budget_batches

        micro = len(token_budget_batches(lengths, t.max_tokens_per_batch, seed=t.seed))
    else:
        micro = math.ceil(len(lengths) / t.per_device_batch_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(micro / gpus) / t.gradient_accumulation_steps))
    total = t.max_steps if t.max_steps is not None else math.ceil(t.epochs * steps_per_epoch)
    return DataStats(
        examples=len(lengths), dropped=dict(report.dropped), tokens=sum(lengths), trained_tokens=report.trained_tokens,
        max_tokens=max(lengths), micro_batches_per_epoch=micro, steps_per_epoch=steps_per_epoch, total_steps=total,
        tokens_per_step=sum(lengths) / steps_per_epoch,
        sides=(report.chosen_trained_tokens, report.rejected_trained_tokens) if recipe.stage == "dpo" else None,
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
        unit = (f"{t.per_device_batch_size} pairs (x 2 rows) per micro-batch" if recipe.stage == "dpo"
                else f"{t.per_device_batch_size} examples per micro-batch")
    gpus = result.memory.gpus
    if gpus == 1:
        gpu_text = "x number of GPUs"
    else:
        gpu_text = f"x {gpus} GPUs"
        if t.max_tokens_per_batch is None:
            gpu_text += f" = {t.per_device_batch_size * t.gradient_accumulation_steps * gpus} examples"
    console.print(f"effective batch: {unit} x {t.gradient_accumulation_steps} accumulation steps {gpu_text}",
                  highlight=False)
    if result.data is not None:
        console.print(_data_table(result.data))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(_memory_table(result.memory, recipe))


def _data_table(data: DataStats) -> Table:
    table = Table(title="data", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    dropped = sum(data.dropped.values())
    what = "pairs" if data.sides is not None else "examples"
    table.add_row(f"{what} (dropped)", f"{data.examples:,} ({dropped:,})")
    table.add_row("tokens / trained (assistant) tokens", f"{data.tokens:,} / {data.trained_tokens:,}")
    if data.sides is not None:
        table.add_row("trained tokens: chosen / rejected", f"{data.sides[0]:,} / {data.sides[1]:,}")
    table.add_row("mean / max tokens per example", f"{data.tokens / data.examples:,.0f} / {data.max_tokens:,}")
    table.add_row("micro-batches / optimizer steps per epoch",
                  f"{data.micro_batches_per_epoch:,} / {data.steps_per_epoch:,}")
    table.add_row("optimizer steps in total", f"{data.total_steps:,}")
    table.add_row("tokens per optimizer step (mean)", f"{data.tokens_per_step:,.0f}")
    return table


def _memory_table(memory: MemoryEstimate, recipe: Recipe) -> Table:
    where = "per GPU" if memory.gpus == 1 else f"per GPU, FSDP over {memory.gpus} GPUs"
    table = Table(title=f"GPU memory estimate {where} ({memory.tokens_per_micro_batch:,} tokens per micro-batch, "
                        f"attention {memory.attention})")
    table.add_column("component")
    table.add_column("size", justify="right")
    table.add_column("how")
    for name, size, how in memory.rows:
        table.add_row(name, _bytes(size), how)
    if memory.loading_peak:
        table.add_row("peak while loading", _bytes(memory.loading_peak),
                      "whole 4-bit base on each GPU before FSDP shards it")
    table.add_section()
    chosen = recipe.training.gradient_checkpointing
    for label, total, mine in (("total with gradient checkpointing", memory.total_with_checkpointing, chosen),
                               ("total without", memory.total_without_checkpointing, not chosen)):
        notes = ["<- this recipe"] if mine else []
        if total == memory.loading_peak:
            notes.append("(the loading peak)")
        table.add_row(label, _bytes(total), " ".join(notes))
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
