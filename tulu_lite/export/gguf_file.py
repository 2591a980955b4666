"""The GGUF file itself: architecture and hyper-parameters, tensor names and tensor types, written with `gguf`.

Everything llama.cpp needs to run a checkpoint is in one file: key/value metadata (the architecture's
hyper-parameters under ``ARCH.*``, the tokenizer under ``tokenizer.ggml.*``, see `tulu_lite.export.vocab`) and the
tensors under llama.cpp's names (``blk.N.attn_q.weight``, from gguf's `TensorNameMap`, the same table llama.cpp's
own converter and transformers' GGUF reader use).

Two facts of the format that a converter has to get right and that nothing checks at load time:

- LLaMA-family q/k projections are stored *permuted*. Hugging Face's LLaMA applies rotary embeddings to the two
  halves of each head (``rotate_half``); llama.cpp's ``llama`` architecture rotates adjacent pairs. So the rows of
  each head are reordered from ``[x0..x(d/2-1), y0..y(d/2-1)]`` to ``[x0, y0, x1, y1, ...]`` (llama.cpp's
  converter, ``LlamaModel.permute``); transformers' reader undoes it (`modeling_gguf_pytorch_utils`,
  ``LlamaTensorProcessor._reverse_permute_weights``). Forgetting it gives a file that loads and talks nonsense.
  Qwen2/Qwen3 are run with NeoX-style rotation in llama.cpp and are stored unpermuted.
- Quantised types work on blocks of 32 consecutive values of a row (the input dimension). Norms and other 1-D
  tensors stay float32, as llama.cpp's converter and quantiser keep them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from tulu_lite.errors import TuluError

# Output types: the GGUF tensor type of the 2-D weights (1-D tensors are always F32).
GGUF_TYPES: tuple[str, ...] = ("f16", "bf16", "q8_0", "q4_0")

# model_type (config.json) -> llama.cpp architecture name. Mistral (v0.1-style, no sliding window in llama.cpp)
# is written as `llama`, as llama.cpp's converter does. Qwen2/Qwen3 are run by llama.cpp as their own
# architectures; transformers reads them back (qwen2, qwen3 in its GGUF config mapping).
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# The architectures whose q/k rows are permuted for llama.cpp's rotary layout (see the module docstring).
PERMUTED_QK = {"llama"}


@dataclass(frozen=True)
class Hyperparameters:
    """What the file states about the model's shape, read from config.json."""

    model_type: str
    architecture: str  # llama.cpp's name
    vocab_size: int
    context_length: int
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tied_embeddings: bool


def read_hyperparameters(config, where: Path) -> Hyperparameters:
    """The supported architecture's hyper-parameters, or one line saying what this file can't express."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        architectures = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
        raise TuluError(f"{where}: architecture {model_type!r} ({architectures}) is not supported by export "
                        f"(supported: {', '.join(ARCHITECTURES)})")
    rope = _rope_parameters(config)
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    if rope_type != "default":
        # llama.cpp would need its own scaling metadata (rope_freqs for llama3, yarn/linear keys), and
        # transformers' GGUF reader restores none of it for these architectures: the file could not be verified.
        raise TuluError(f"{where}: rope scaling {rope_type!r} is not supported by export (only unscaled rotary "
                        f"embeddings)")
    # Mistral's sliding window is not written: llama.cpp runs Mistral as `llama` without it, which is the same
    # model for contexts up to `sliding_window` tokens (4,096 for Mistral-7B-v0.1).
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Hyperparameters(
        model_type=model_type,
        architecture=ARCHITECTURES[model_type],
        vocab_size=config.vocab_size,
        context_length=config.max_position_embeddings,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        layers=config.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
        rms_norm_eps=float(config.rms_norm_eps),
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )


def _rope_parameters(config) -> dict:
    """transformers 5 keeps rotary settings in `rope_parameters`; older configs in rope_theta/rope_scaling."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        return params
    return dict(getattr(config, "rope_scaling", None) or {})


def add_hyperparameters(writer, hp: Hyperparameters, gguf_type: str) -> None:
    """The ``ARCH.*`` keys llama.cpp reads for these architectures, plus the file type."""
    import gguf

    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_block_count(hp.layers)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_head_count(hp.heads)
    writer.add_head_count_kv(hp.kv_heads)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    writer.add_vocab_size(hp.vocab_size)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
    writer.add_file_type(file_types[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


# ---- tensors --------------------------------------------------------------------------------------------------


def gguf_name(hf_name: str, hp: Hyperparameters, name_map) -> str:
    """llama.cpp's name for a transformers parameter (``model.layers.0.self_attn.q_proj.weight`` ->
    ``blk.0.attn_q.weight``); a parameter the architecture has no name for is one line."""
    name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise TuluError(f"tensor {hf_name}: no GGUF name for it in the {hp.architecture} architecture "
                        f"(a model with extra modules is not supported by export)")
    return name


def tensor_name_map(hp: Hyperparameters):
    import gguf

    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == hp.architecture)
    return gguf.get_tensor_name_map(arch, hp.layers)


def permute_qk(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face rotary layout (halves) -> llama.cpp's ``llama`` layout (adjacent pairs), per head.

    `heads` is the number of heads this projection has: attention heads for q, key/value heads for k.
    """
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def llama_cpp_layout(hf_name: str, weights: np.ndarray, hp: Hyperparameters) -> np.ndarray:
    """The tensor as llama.cpp expects it: q/k permuted for the ``llama`` architecture, everything else as is."""
    if hp.architecture not in PERMUTED_QK:
        return weights
    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_qk(weights, hp.heads)
    if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_qk(weights, hp.kv_heads)
    return weights


def tensor_type(name: str, shape: tuple[int, ...], gguf_type: str):
    """The GGUF type a tensor is stored in.

    1-D tensors (norms, biases): F32. 2-D: the chosen type; a quantised type needs rows that are whole blocks of
    32 (otherwise F16, as llama.cpp's converter falls back). q4_0 keeps the output projection in Q8_0: it maps
    every hidden state to the vocabulary and is the tensor most sensitive to 4-bit rounding (llama.cpp's quantiser
    keeps it above 4 bits as well).
    """
    import gguf

    kind = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return kind.F32
    chosen = {"f16": kind.F16, "bf16": kind.BF16, "q8_0": kind.Q8_0, "q4_0": kind.Q4_0}[gguf_type]
    if chosen == kind.Q4_0 and name == "output.weight":
        chosen = kind.Q8_0
    block = gguf.GGML_QUANT_SIZES[chosen][0]
    if shape[-1] % block:
        return kind.F16
    return chosen


def encode_tensor(weights: np.ndarray, qtype) -> np.ndarray:
    """`weights` (float32) in GGUF type `qtype`: float arrays for F32/F16, raw block bytes otherwise."""
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return weights.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return weights.astype(np.float16)
    return gguf.quants.quantize(weights.astype(np.float32), qtype)


def as_written(weights: np.ndarray, qtype) -> np.ndarray:
    """`weights` after the round trip through `qtype` (what a reader of the file gets back), as float32.

    Quantisation blocks run along rows, so this commutes with the q/k row permutation: it can be applied to the
    Hugging Face layout directly (verification builds the model "as written" this way).
    """
    import gguf

    encoded = encode_tensor(weights, qtype)
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return encoded.astype(np.float32)
    return gguf.quants.dequantize(encoded, qtype).reshape(weights.shape)


def model_tensors(state_dict: dict, hp: Hyperparameters) -> Iterator[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 array) for each tensor the file stores, in the model's order.

    A tied output projection is not stored: llama.cpp (and transformers' reader) reuse ``token_embd`` when there
    is no ``output.weight``.
    """
    for name, tensor in state_dict.items():
        if hp.tied_embeddings and name == "lm_head.weight":
            continue
        yield name, tensor.detach().float().cpu().numpy()


def add_tensors(writer, state_dict: dict, hp: Hyperparameters, gguf_type: str) -> dict[str, str]:
    """Add every tensor (renamed, permuted, converted); return GGUF name -> type name for the report."""
    name_map = tensor_name_map(hp)
    written = {}
    for hf_name, weights in model_tensors(state_dict, hp):
        name = gguf_name(hf_name, hp, name_map)
        qtype = tensor_type(name, weights.shape, gguf_type)
        data = encode_tensor(llama_cpp_layout(hf_name, weights, hp), qtype)
        if data.dtype == np.uint8:  # quantised blocks: the writer needs the logical shape
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)
        written[name] = qtype.name
    return written


# ---- the writer -----------------------------------------------------------------------------------------------


def new_writer(handle: IO[bytes], architecture: str):
    """A `gguf.GGUFWriter` that writes into an already open file (the atomic temporary) instead of opening one.

    `GGUFWriter` opens its output by path; `open_output_file` is its one place that does, so that is the method
    replaced. Everything else (header, key/values, alignment, tensor data) is the library's.
    """
    import gguf

    class HandleWriter(gguf.GGUFWriter):
        def open_output_file(self, path: Path | None = None) -> None:
            if self.state is gguf.gguf_writer.WriterState.EMPTY:
                return
            self.fout = [handle]
            self.state = gguf.gguf_writer.WriterState.EMPTY

    return HandleWriter(None, architecture)


def write_file(writer) -> None:
    """Header, metadata and tensors, in the order the format lays them out."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    for handle in writer.fout or []:
        handle.flush()
    writer.fout = None  # the caller's handle: `atomic_file` closes it (GGUFWriter.close would do it early)
