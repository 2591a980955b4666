"""Progress bars for the long steps of an evaluation (generation, scoring, running tests, classifying), and
one-line notices (a task skipped or resumed)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# stderr, so the summary table on stdout can be piped or captured on its own.
console = Console(stderr=True)


def progress(description: str, total: int) -> Progress:
    """A rich progress bar counting examples; use as a context manager and advance task 0."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
                   # In Jupyter a live bar needs ipywidgets, else it warns and leaves an empty output behind.
                   disable=console.is_jupyter)
    bar.add_task(description, total=total)
    return bar


def notice(message: str) -> None:
    """One line on stderr, e.g. that a finished task was skipped."""
    console.print(f"[cyan]{escape(message)}[/]", highlight=False, soft_wrap=True)
