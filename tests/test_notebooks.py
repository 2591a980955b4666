"""Every notebook in notebooks/ runs top to bottom, in-process, with small parameters, and shows its results.

Convention for notebooks: the first code cell is tagged ``parameters`` and sets ``STEPS`` (training steps) and
``RUN_DIR`` (where everything is written; None means a temporary directory). The test runs the code cells in
order in one namespace with ``STEPS = 8`` and ``RUN_DIR`` in ``tmp_path`` appended to that cell, then applies
the notebook's own checks (``CHECKS`` below) to the namespace it left behind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # before pyplot is imported by any notebook cell

import matplotlib.pyplot as plt  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TEST_STEPS = 8


def code_cells(path: Path) -> list[tuple[str, bool]]:
    """(source, is the parameters cell) of each code cell, in order."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cells.append((source, "parameters" in cell.get("metadata", {}).get("tags", [])))
    return cells


def run_notebook(path: Path, overrides: str) -> dict:
    """Execute the code cells like a kernel would (one namespace, in order); `overrides` follow the parameters."""
    cells = code_cells(path)
    assert any(is_parameters for _, is_parameters in cells), f"{path.name}: no code cell tagged 'parameters'"
    namespace: dict = {"__name__": "__main__"}
    for index, (source, is_parameters) in enumerate(cells):
        if is_parameters:
            source += "\n" + overrides
        exec(compile(source, f"{path.name}[code cell {index}]", "exec"), namespace)  # noqa: S102
    return namespace


# ---- per-notebook checks --------------------------------------------------------------------------------------


def check_datasets_change_the_model(namespace: dict, run_dir: Path) -> None:
    from tulu_lite.data.conversations import read_conversations

    scores = namespace["scores"]
    # 3 adapters x 2 held-out sets, every score a finite number.
    assert list(scores) == ["A", "B", "A + B"]
    for model, row in scores.items():
        assert list(row) == ["A", "B"], model
        for held, result in row.items():
            assert math.isfinite(result["loss"]) and result["loss"] > 0, (model, held, result)
            assert 0 <= result["exact_match"] <= 100, (model, held, result)
    # Each adapter was trained and written with its recipe.
    for name, adapter in namespace["adapters"].items():
        assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "recipe.yaml").is_file(), name
        assert namespace["metrics"][name]["steps"] == TEST_STEPS
    # The split is honest: no held-out question is trained on, and A and B share no topic.
    data = run_dir / "data"
    topic_of = namespace["topic_of"]
    topics = {}
    for name in ("A", "B"):
        train = list(read_conversations(data / f"{name}_train.jsonl"))
        held_out = list(read_conversations(data / f"{name}_held_out.jsonl"))
        assert train and held_out
        assert not {r["id"] for r in train} & {r["id"] for r in held_out}
        topics[name] = {topic_of(m["content"]) for r in train + held_out for m in r["messages"]
                        if m["role"] == "assistant"}
    assert topics == {"A": {"capitals", "colours"}, "B": {"animal sounds", "opposites"}}
    # Even after 8 steps each specialist is clearly better on its own topics than the other specialist
    # (measured: about 2 nats per answer token apart); this is what the notebook is about.
    assert scores["A"]["A"]["loss"] < scores["B"]["A"]["loss"]
    assert scores["B"]["B"]["loss"] < scores["A"]["B"]["loss"]
    # The figure was drawn and saved.
    figure = run_dir / "datasets_change_the_model.png"
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHECKS = {"datasets_change_the_model": check_datasets_change_the_model}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert path.stem in CHECKS, f"{path.name}: add a check of its results to CHECKS in {Path(__file__).name}"
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path / "cache"))  # the tiny base is built here, not in ~/.cache
    run_dir = tmp_path / "run"
    try:
        namespace = run_notebook(path, f"STEPS = {TEST_STEPS}\nRUN_DIR = {str(run_dir)!r}")
    finally:
        plt.close("all")
    assert namespace["STEPS"] == TEST_STEPS and Path(namespace["run_dir"]) == run_dir
    CHECKS[path.stem](namespace, run_dir)


def test_notebooks_are_found() -> None:
    # Guards against the parametrized test silently running nothing (a moved folder, a renamed extension).
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
