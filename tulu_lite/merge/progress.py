"""The merge's progress lines: a spinner while a stage runs, then a tick with how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def stage(console: Console, description: str) -> Iterator[None]:
    """A spinner while a stage runs, then a tick with its duration."""
    start = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"[green]✓[/] {description} [dim]({time.perf_counter() - start:.1f}s)[/]", highlight=False)
