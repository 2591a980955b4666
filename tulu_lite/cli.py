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

from tulu_lite.errors import TuluError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="TÜLU-style instruction tuning on one GPU (or a laptop CPU).")
data_app = typer.Typer(no_args_is_help=True, help="Convert, mix and describe instruction datasets.")
app.add_typer(data_app, name="data")
console = Console()


# ---- foundation: inspect -------------------------------------------------------------------------------------

SAMPLE_CONVERSATIONS = Path(__file__).parent / "assets" / "samples" / "chat.jsonl"


@app.command()
def inspect(
    file: Path = typer.Argument(SAMPLE_CONVERSATIONS, help="Conversation JSONL file (default: bundled samples)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer dir (default: bundled LLaMA)."),
    template: str = typer.Option("tulu", "--template", help="Chat format: tulu or native."),
    n: int = typer.Option(3, "-n", help="How many examples to show."),
    max_seq_length: int = typer.Option(2048, "--max-seq-length", help="Truncate to this many tokens."),
) -> None:
    """Show each example's tokens with the trained ones highlighted, plus totals."""
    from rich.table import Table

    from tulu_lite.data.inspect import inspect_file
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

    if template not in ("tulu", "native"):
        raise TuluError(f"--template: expected tulu or native, got {template!r}")
    tok = load_tokenizer(tokenizer or BUNDLED_LLAMA_TOKENIZER)
    totals = inspect_file(file, tok, template, max_seq_length, show=n)
    for index, text in enumerate(totals.shown):
        console.rule(f"example {index + 1}  [black on green] trained [/] [grey62 on grey15] masked [/]")
        console.print(text)
    table = Table(title=f"{file} ({template}, {Path(tok.name_or_path).name} tokenizer, max {max_seq_length})")
    for column in ("examples", "tokens", "trained tokens", "trained %", "truncated", "dropped"):
        table.add_column(column, justify="right")
    share = 100 * totals.trained_tokens / totals.tokens if totals.tokens else 0.0
    table.add_row(f"{totals.examples:,}", f"{totals.tokens:,}", f"{totals.trained_tokens:,}", f"{share:.1f}",
                  f"{totals.truncated:,}", f"{totals.dropped:,}")
    console.print(table)


# ---- datasets: data convert / mix / stats --------------------------------------------------------------------

from tulu_lite.data.sources import SOURCES, ConvertOptions  # noqa: E402  (light: option defaults live there)


def _bytes_progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


@data_app.command("convert")
def data_convert(
    source: str = typer.Argument(..., help=f"Source name: {', '.join(SOURCES)}."),
    raw_path: Path = typer.Argument(..., help="The raw file as released (or its folder; super_ni: the repo folder)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output conversation JSONL."),
    seed: int = typer.Option(ConvertOptions.seed, "--seed", help="Seed for templates and sampling."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", help="Keep N examples (seeded sample)."),
    top_k_reply: Optional[int] = typer.Option(None, "--top-k-reply", help="oasst1: K best replies per node."),
    zero_shot_per_task: int = typer.Option(ConvertOptions.zero_shot_per_task, help="super_ni: zero-shot per task."),
    few_shot_per_task: int = typer.Option(ConvertOptions.few_shot_per_task, help="super_ni: few-shot per task."),
    n_few_shot: int = typer.Option(ConvertOptions.n_few_shot, help="super_ni: examples in a few-shot prompt."),
    split_max_tokens: Optional[int] = typer.Option(None, help="sharegpt: split conversations to N tokens."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="sharegpt: tokenizer dir for splitting."),
) -> None:
    """Convert a raw TÜLU source release into the conversation format."""
    from tulu_lite.data.sources import convert, report_table, total_input_size

    options = ConvertOptions(seed=seed, max_examples=max_examples, top_k_reply=top_k_reply,
                             zero_shot_per_task=zero_shot_per_task, few_shot_per_task=few_shot_per_task,
                             n_few_shot=n_few_shot, split_max_tokens=split_max_tokens,
                             tokenizer=str(tokenizer) if tokenizer else None)
    total = total_input_size(source, raw_path)
    with _bytes_progress() as progress:
        task = progress.add_task(f"converting {source}", total=total or None)
        report = convert(source, raw_path, out, options, on_progress=lambda n: progress.advance(task, n))
    console.print(report_table(report, out))


@data_app.command("mix")
def data_mix(
    mixture: Path = typer.Argument(..., help="Mixture YAML ({path, max_examples | fraction} per source, seed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output conversation JSONL."),
) -> None:
    """Mix converted files reproducibly (capped, subsampled, shuffled) into one file."""
    from tulu_lite.data.mix import input_size, load_mixture, mix, summary_table

    total = input_size(load_mixture(mixture))
    with _bytes_progress() as progress:
        task = progress.add_task("indexing sources", total=total or None)
        report = mix(mixture, out, on_bytes=lambda n: progress.advance(task, n))
    console.print(summary_table(report))


@data_app.command("stats")
def data_stats(
    files: list[Path] = typer.Argument(..., help="Conversation JSONL files."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer dir (default: bundled LLaMA)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the statistics as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG of the length distributions."),
) -> None:
    """The TÜLU paper's Table-1 columns per file: instances, rounds, prompt and completion lengths."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from tulu_lite.data.stats import file_stats, plot_lengths, stats_table, write_stats_json
    from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer

    tokenizer_dir = tokenizer or BUNDLED_LLAMA_TOKENIZER
    loaded = load_tokenizer(tokenizer_dir)
    results = []
    with Progress(SpinnerColumn(), TextColumn("{task.description} {task.completed:,} examples"),
                  console=console, transient=True) as progress:
        for path in files:
            task = progress.add_task(f"tokenizing {path.name}")
            results.append(file_stats(path, loaded, on_examples=lambda n, t=task: progress.advance(t, n)))
    name = Path(tokenizer_dir).name
    console.print(stats_table(results, name))
    if json_out is not None:
        write_stats_json(results, name, json_out)
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot_lengths(results, plot)
        console.print(f"wrote {plot}")



# ---- training: train / plan ----------------------------------------------------------------------------------


# ---- merge ---------------------------------------------------------------------------------------------------


# ---- eval ----------------------------------------------------------------------------------------------------


def main() -> None:
    """Entry point: run the app and turn user errors into one red line (exit code 2)."""
    try:
        app()
    except TuluError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        sys.exit(130)
