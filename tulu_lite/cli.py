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


# ---- datasets: data convert / mix / stats --------------------------------------------------------------------


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
