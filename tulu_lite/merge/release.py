"""What the merge writes: a standard HF checkpoint that prompts and stops the way the model was trained.

The release holds the weights (safetensors, sharded at `--max-shard-size`), the tokenizer with the training chat
template (checked to reload with the training tokenization), a `generation_config.json` whose eos ends an
assistant turn, the training recipe and loss curve, `merge.json` (everything needed to redo the merge, with the
verification figures and library versions) and a model card (README.md).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tulu_lite.data.chat_format import TULU_CHAT_TEMPLATE, ChatFormat
from tulu_lite.errors import TuluError
from tulu_lite.merge.adapter import AdapterDir
from tulu_lite.merge.verify import VERIFY_CONVERSATIONS, Verification
from tulu_lite.merge.weights import dtype_name
from tulu_lite.outputs import atomic_file
from tulu_lite.recipe import ModelSettings

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_SHARD_SIZE = "5GB"


def shard_size(value: str | int) -> str | int:
    """`--max-shard-size` checked before any work: an integer (bytes) or digits with a unit (5GB, 500MB, 2GiB)."""
    from transformers.utils.hub import convert_file_size_to_int

    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    try:
        size = convert_file_size_to_int(value.strip() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        size = None
    if not isinstance(size, int) or size <= 0:
        raise TuluError(f"--max-shard-size: expected a size such as 5GB, 500MB or 2GiB, got {value!r}")
    return value


@dataclass(frozen=True)
class ReleaseInfo:
    """What the written files describe: where the model came from and how it was merged."""

    adapter: AdapterDir
    model_cfg: ModelSettings
    dtype: torch.dtype
    device: str
    max_shard_size: str | int
    tokenizer: object


# ---- the checkpoint -------------------------------------------------------------------------------------------


def save_release(model, release: ReleaseInfo, out: Path) -> None:
    """Weights (safetensors, sharded), tokenizer with chat template, generation config, recipe and loss curve."""
    tokenizer = release_tokenizer(release.tokenizer, release.adapter.recipe.model.chat_template)
    model.generation_config = release_generation_config(model, tokenizer, release.adapter.recipe.model.chat_template)
    model.config.dtype = release.dtype
    model.save_pretrained(out, max_shard_size=release.max_shard_size)
    save_tokenizer(tokenizer, out, trust_remote_code=release.model_cfg.trust_remote_code)
    shutil.copyfile(release.adapter.path / "recipe.yaml", out / "recipe.yaml")
    if (release.adapter.path / "loss.png").is_file():
        shutil.copyfile(release.adapter.path / "loss.png", out / "loss.png")


def release_tokenizer(tokenizer, template: ChatFormat):
    """The tokenizer whose chat template prompts the model the way it was trained.

    ``tulu``: `TULU_CHAT_TEMPLATE`, which renders the exact training text (so `apply_chat_template` and servers
    such as vLLM match training); ``native``: the tokenizer's own template, unchanged.
    """
    if template == "tulu":
        tokenizer.chat_template = TULU_CHAT_TEMPLATE
    elif not tokenizer.chat_template:
        raise TuluError(f"{tokenizer.name_or_path}: native chat format but the tokenizer has no chat_template")
    return tokenizer


def save_tokenizer(tokenizer, out: Path, *, trust_remote_code: bool = False) -> None:
    """Save the tokenizer and check that the copy reloads with the training tokenization.

    `tulu_lite.tokenizer.load_tokenizer` pins what transformers 5.23 would drop on save (LLaMA's `legacy`); the
    check catches any other setting a future version forgets to write.
    """
    tokenizer.save_pretrained(out)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out, trust_remote_code=trust_remote_code, local_files_only=True)
    for messages in VERIFY_CONVERSATIONS:
        text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": "Sure."}], tokenize=False)
        if reloaded(text, add_special_tokens=False).input_ids != tokenizer(text, add_special_tokens=False).input_ids:
            raise TuluError(f"{out}: the saved tokenizer does not reload with the training tokenization "
                            f"(transformers {_version('transformers')}); please report this")


def end_of_turn_ids(tokenizer, template: ChatFormat) -> list[int]:
    """Token ids that end an assistant turn: eos (``</s>``) for tulu; the template's closing token for native.

    For native templates the closing token is found by rendering a probe conversation with the same span logic
    the encoder trains on (e.g. ``<|eot_id|>`` for Llama-3, ``<|im_end|>`` for Qwen); eos is kept as a second
    stop token when it differs.
    """
    if template == "tulu":
        return [tokenizer.eos_token_id]
    from tulu_lite.data.encode import render_native_spans

    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = render_native_spans(probe, tokenizer)
    start, end = rendered.trained[-1]
    closing = tokenizer(rendered.text[start:end], add_special_tokens=False).input_ids[-1]
    return list(dict.fromkeys([closing, tokenizer.eos_token_id]))


def release_generation_config(model, tokenizer, template: ChatFormat):
    """The base's generation settings with an eos that stops at the end of the assistant turn.

    Built fresh rather than copied: a config marked as derived from the model config can be regenerated from
    config.json at `generate()` time, which would lose the end-of-turn token.
    """
    from transformers import GenerationConfig

    settings = {key: value for key, value in model.generation_config.to_diff_dict().items() if not key.startswith("_")}
    settings.pop("transformers_version", None)
    eos = end_of_turn_ids(tokenizer, template)
    settings.update(eos_token_id=eos[0] if len(eos) == 1 else eos, pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id)
    return GenerationConfig(**settings)


# ---- merge.json and the model card ----------------------------------------------------------------------------


def merge_settings(release: ReleaseInfo, verification: Verification | None) -> dict:
    """merge.json: everything needed to redo the merge, plus the verification figures."""
    adapter = release.adapter
    quant = adapter.recipe.quantization
    return {
        "adapter_dir": str(adapter.path.resolve()),
        "base": release.model_cfg.name_or_path,
        "base_record": adapter.base_record,
        "method": "qlora: merged into the dequantized 4-bit weights" if quant else "lora",
        "quantization": quant.model_dump(mode="json") if quant else None,
        "dtype": dtype_name(release.dtype),
        "device": release.device,
        "chat_template": adapter.recipe.model.chat_template,
        "max_shard_size": release.max_shard_size,
        "verification": _verification_json(verification),
        "versions": {name: _version(name) for name in ("tulu-lite", "torch", "transformers", "peft", "bitsandbytes")},
    }


def _verification_json(verification: Verification | None) -> dict | None:
    if verification is None:
        return None
    return {"prompts": len(VERIFY_CONVERSATIONS), "passed": verification.passed, **asdict(verification)}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_model_card(target: Path, release: ReleaseInfo, verification: Verification | None) -> None:
    """README.md: base, data, hyperparameters, final training metrics, merge and verification, usage."""
    with atomic_file(target) as handle:
        handle.write(model_card(release, verification))


def model_card(release: ReleaseInfo, verification: Verification | None) -> str:
    recipe, adapter = release.adapter.recipe, release.adapter
    base = recipe.model.name_or_path
    data = [f"`{item.path.name if item.path else item.label}`" for item in recipe.data.train_files] or [
        f"mixture `{recipe.data.mixture}`"]
    quant = recipe.quantization
    method = (f"QLoRA ({quant.quant_type}, double quant {quant.double_quant}), merged into the dequantized "
              f"4-bit weights" if quant else "LoRA")
    title = Path(adapter.path).name
    stage = ""
    if adapter.checkpoint is not None:
        step, total = adapter.checkpoint.get("step"), adapter.checkpoint.get("max_steps")
        title = f"{recipe.output_dir.name}, checkpoint at step {step} of {total}"
        stage = f" This is the training checkpoint at step {step} of {total}, not the run's final adapter."
    lines = [
        "---",
        "library_name: transformers",
        "tags: [tulu-lite, instruction-tuning, lora]",
        "---",
        f"# {title} (merged)",
        "",
        f"Instruction-tuned with tulu-lite in the `{recipe.model.chat_template}` chat format.{stage}",
        "",
        f"- **Base:** `{base}`" + (" (embedded tiny LLaMA, built from its seed)" if recipe.model.is_tiny else ""),
        f"- **Data:** {', '.join(data)} (max length {recipe.data.max_seq_length})",
        f"- **Method:** {method}; saved in {dtype_name(release.dtype)}",
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| lora.{key} | {value} |" for key, value in recipe.lora.model_dump(mode="json").items()],
        *[f"| training.{key} | {value} |" for key, value in recipe.training.model_dump(mode="json").items()],
        "",
        "The full training recipe is `recipe.yaml` (rerun with `tulu-lite train recipe.yaml`).",
        "",
        *_metrics_lines(adapter.metrics),
        *_verification_lines(verification),
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True,',
        '                                    return_tensors="pt", return_dict=True)',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))",
        "```",
        "",
    ]
    return "\n".join(lines)


def _metrics_lines(metrics: dict) -> list[str]:
    scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}
    if not scalars:
        return []
    rows = [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in scalars.items()]
    return ["## Final training metrics", "", "| metric | value |", "|---|---|", *rows, ""]


def _verification_lines(verification: Verification | None) -> list[str]:
    if verification is None:
        return ["## Verification", "", "Skipped (`--no-verify`).", ""]
    lines = [
        "## Verification",
        "",
        f"Logits on {len(VERIFY_CONVERSATIONS)} prompts, merged model vs the adapter model as trained:",
        (f"max |diff| {verification.merged.max_abs:.3g} (tolerance {verification.tolerance:.3g}), "
         f"top-1 agreement {verification.merged.top1_agreement:.1%}."),
    ]
    if verification.naive is not None:
        lines.append(f"A naive merge into the original (not dequantized) weights would differ by "
                     f"{verification.naive.max_abs:.3g} (top-1 agreement {verification.naive.top1_agreement:.1%}).")
    return [*lines, ""]
