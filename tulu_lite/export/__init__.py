"""Export: a merged model (or any LLaMA, Mistral, Qwen2 or Qwen3 HF checkpoint) to one GGUF file, verified.

llama.cpp (and Ollama, LM Studio) run GGUF files. A GGUF that loads but was converted wrongly (q/k not permuted,
scores that tokenize differently, a missing tied embedding) runs and talks worse than the model it came from, and
nothing says so. `export` writes the file with the `gguf` package and then reads it back the independent way --
transformers' GGUF reader -- and compares it with MODEL_DIR before the file counts as written.

Stages, in order (inside `atomic_file`: an interruption or a failed check leaves no FILE.gguf):

1. check the inputs before loading anything: the type, the output (not a directory, not over an input, --force
   to replace), MODEL_DIR (a loadable checkpoint of a supported architecture, a tokenizer llama.cpp can express);
2. load MODEL_DIR in float32 and write the file: hyper-parameters (`gguf_file`), tokenizer, chat template and the
   model card's name/description (`vocab`), tensors renamed, permuted and converted to the type (`gguf_file`);
3. verify it (`verify`): logits as written, logits vs the original within the type's bound, tokenizer ids;
4. write the figures beside it (FILE.verification.json), then move the file into place.
"""

from __future__ import annotations

import gc
import importlib.metadata
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from tulu_lite.errors import TuluError, first_line
from tulu_lite.export.gguf_file import GGUF_TYPES, Hyperparameters, read_hyperparameters
from tulu_lite.export.verify import VERIFY_CONVERSATIONS, Verification
from tulu_lite.export.vocab import ModelCard, Vocabulary

__all__ = ["GGUF_TYPES", "ExportResult", "ExportFailed", "export", "check_gguf_type", "report_path",
           "verification_table"]


@dataclass(frozen=True)
class ExportResult:
    out: Path
    gguf_type: str
    architecture: str
    bytes: int
    report: Path  # the verification JSON beside the file
    verification: Verification


class ExportFailed(TuluError):
    """The written file failed verification (nothing was kept); `verification` has the figures."""

    def __init__(self, message: str, verification: Verification):
        super().__init__(message)
        self.verification = verification


def export(model_dir: str | Path, out: str | Path, gguf_type: str = "f16", *, force: bool = False,
           console: Console | None = None) -> ExportResult:
    """Write MODEL_DIR as a GGUF file of `gguf_type` at `out`, verified (see the module docstring).

    Raises `TuluError` (one line, nothing written) for bad input and `ExportFailed` when the file fails a check.
    """
    console = console or Console(quiet=True)
    model_dir, out = Path(model_dir), Path(out)
    check_gguf_type(gguf_type)
    _check_out(out, model_dir, force=force)
    from tulu_lite.model.files import check_model_dir

    check_model_dir(model_dir)
    config = _load_config(model_dir)
    hp = read_hyperparameters(config, model_dir)
    tokenizer = _load_tokenizer(model_dir)
    from tulu_lite.export.vocab import (
        chat_template_for,
        read_model_card,
        read_vocabulary,
    )

    chat_template = chat_template_for(tokenizer, model_dir)
    vocab = read_vocabulary(tokenizer, hp.vocab_size, chat_template, model_dir)
    card = read_model_card(model_dir)
    with _stage(console, f"loading {model_dir}"):
        model = _load_model(model_dir)
    from tulu_lite.export.verify import reference_logits, verify_file
    from tulu_lite.json_files import write_json
    from tulu_lite.outputs import atomic_file, write_errors

    with atomic_file(out, "wb") as handle:
        with _stage(console, f"writing {out} ({gguf_type})"), write_errors(out, "the GGUF file"):
            tensor_types = write_gguf(handle, model.state_dict(), hp, vocab, card, gguf_type)
        with _stage(console, "verifying: reading the file back through transformers"):
            reference = reference_logits(model, tokenizer, hp, gguf_type, chat_template)
            del model  # MODEL_DIR and the file are never in memory together
            gc.collect()
            verification = verify_file(reference, tokenizer, Path(handle.name), gguf_type)
        if not verification.passed:
            console.print(verification_table(verification))
            raise ExportFailed(f"verification failed: {'; '.join(verification.failures())}; nothing was written",
                               verification)
        size = Path(handle.name).stat().st_size
        report = report_path(out)
        with write_errors(report, "the verification report"):
            write_json(report, export_record(model_dir, out, hp, vocab, card, tensor_types, size, verification))
    return ExportResult(out, gguf_type, hp.architecture, size, report, verification)


# ---- inputs ---------------------------------------------------------------------------------------------------


def check_gguf_type(gguf_type: str, option: str = "--type") -> None:
    if gguf_type not in GGUF_TYPES:
        raise TuluError(f"{option}: expected one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")


def report_path(out: Path) -> Path:
    """FILE.verification.json beside FILE.gguf."""
    return out.with_name(f"{out.stem if out.suffix == '.gguf' else out.name}.verification.json")


def _check_out(out: Path, model_dir: Path, *, force: bool) -> None:
    """Fail before loading anything: the output is a file name, replaces no input, and no output without --force."""
    from tulu_lite.outputs import ensure_writable

    if out.is_dir():
        raise TuluError(f"{out}: is a directory; give the file to write, e.g. {out / 'model.gguf'}")
    replaces_input = out.exists() and out.suffix != ".gguf" and out.resolve().parent == model_dir.resolve()
    if replaces_input:
        raise TuluError(f"{out}: the output would replace a file of MODEL_DIR; choose another -o")
    if out.exists() and not force:
        raise TuluError(f"{out}: already exists (pass --force to overwrite)")
    ensure_writable(out, "-o")


def _load_config(model_dir: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:  # an unknown model_type, a config transformers can't parse: one line
        raise TuluError(f"{model_dir}/config.json: could not be read as a model config "
                        f"({type(exc).__name__}: {first_line(exc, '')})") from exc


def _load_tokenizer(model_dir: Path):
    """MODEL_DIR's tokenizer, loaded as training loads it (`tulu_lite.tokenizer.load_tokenizer`)."""
    from tulu_lite.tokenizer import load_tokenizer

    if not any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise TuluError(f"{model_dir}: no tokenizer (tokenizer.json); a GGUF file must carry the tokenizer")
    return load_tokenizer(model_dir)


def _load_model(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    from tulu_lite.export.verify import quiet_loading

    try:
        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    except Exception as exc:
        raise TuluError(f"{model_dir}: could not load the model ({type(exc).__name__}: {first_line(exc, '')})") \
            from exc


# ---- writing --------------------------------------------------------------------------------------------------


def write_gguf(handle, state_dict: dict, hp: Hyperparameters, vocab: Vocabulary, card: ModelCard,
               gguf_type: str) -> dict[str, str]:
    """The whole file into `handle`: metadata, tokenizer, tensors. Returns tensor name -> GGUF type name."""
    from tulu_lite.export.gguf_file import (
        add_hyperparameters,
        add_tensors,
        new_writer,
        write_file,
    )
    from tulu_lite.export.vocab import add_vocabulary

    writer = new_writer(handle, hp.architecture)
    writer.add_type("model")
    writer.add_name(card.name)
    if card.description:
        writer.add_description(card.description)
    add_hyperparameters(writer, hp, gguf_type)
    add_vocabulary(writer, vocab)
    tensor_types = add_tensors(writer, state_dict, hp, gguf_type)
    write_file(writer)
    return tensor_types


def export_record(model_dir: Path, out: Path, hp: Hyperparameters, vocab: Vocabulary, card: ModelCard,
                  tensor_types: dict[str, str], size: int, verification: Verification) -> dict:
    """FILE.verification.json: what was written from what, and the verification figures."""
    counts: dict[str, int] = {}
    for name in tensor_types.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        "file": out.name,
        "bytes": size,
        "model_dir": str(model_dir.resolve()),
        "type": verification.gguf_type,
        "architecture": hp.architecture,
        "model_type": hp.model_type,
        "name": card.name,
        "tensor_types": counts,
        "tokenizer": {"model": vocab.model, "pre": vocab.pre, "tokens": len(vocab.tokens),
                      "bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "unk_id": vocab.unk_id, "pad_id": vocab.pad_id,
                      "add_bos": vocab.add_bos, "chat_template": bool(vocab.chat_template)},
        "verification": {"passed": verification.passed, "prompts": len(VERIFY_CONVERSATIONS),
                         **asdict(verification)},
        "versions": {name: _version(name) for name in ("tulu-lite", "gguf", "torch", "transformers")},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- output ---------------------------------------------------------------------------------------------------


def verification_table(verification: Verification):
    """A rich table of the verification figures (what the CLI prints, on success and on failure)."""
    from rich.table import Table

    v = verification
    table = Table(title=f"{v.gguf_type} file read back by transformers vs MODEL_DIR: logits on {v.prompts} prompts "
                        f"({v.positions} positions), tokenizer on {v.tokenizer.texts} texts",
                  caption=f"tolerances relative to the largest |logit| ({v.reference_scale:.3g}); as written: the "
                          f"model with its weights rounded to what the file stores")
    for column in ("check", "max |diff|", "mean |diff|", "top-1", "allowed", "result"):
        table.add_column(column, justify="left" if column in ("check", "result") else "right")
    ok, failed = "[green]ok[/]", "[red]FAILED[/]"
    written = v.as_written
    table.add_row("logits as written", f"{written.max_abs:.3g}", f"{written.mean_abs:.3g}",
                  f"{written.top1_agreement:.1%}", f"≤ {v.as_written_tolerance:.3g}",
                  ok if written.max_abs <= v.as_written_tolerance else failed)
    original = v.original
    within = original.max_abs <= v.original_bound and original.top1_agreement >= v.top1_minimum
    table.add_row(f"logits vs original ({v.gguf_type})", f"{original.max_abs:.3g}", f"{original.mean_abs:.3g}",
                  f"{original.top1_agreement:.1%}", f"≤ {v.original_bound:.3g}, top-1 ≥ {v.top1_minimum:.0%}",
                  ok if within else failed)
    check = v.tokenizer
    table.add_row("tokenizer ids", f"{check.differing} of {check.texts} differ", "", "",
                  "identical, same special ids", ok if check.passed else failed)
    return table


@contextmanager
def _stage(console: Console, description: str) -> Iterator[None]:
    """A spinner while a stage runs, then a tick with its duration."""
    start = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"[green]✓[/] {description} [dim]({time.perf_counter() - start:.1f}s)[/]", highlight=False)
