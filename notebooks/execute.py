"""Run notebooks top to bottom in a fresh Jupyter kernel at their own parameters and save them with their outputs.

    python notebooks/execute.py                      # every notebook in this folder
    python notebooks/execute.py mixture_proportions  # one (by name, without .ipynb)

This is what the committed outputs come from; tests/test_notebooks.py runs the same notebooks at small parameters.
Needs nbclient and ipykernel (pip install "tulu-lite[test]").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute_in_place(path: Path, timeout: int = 1800) -> float:
    """Execute `path` (cwd: this folder) and write it back with its outputs; return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(notebook, path)
    return time.perf_counter() - start


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(path.stem for path in HERE.glob("*.ipynb"))
    for name in names:
        seconds = execute_in_place(HERE / f"{name}.ipynb")
        print(f"{name}: {seconds:.0f} s")
