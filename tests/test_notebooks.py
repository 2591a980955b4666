"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (nbclient), with small parameters.

Convention for notebooks: the first code cell is tagged ``parameters`` and sets ``RUN_DIR`` (where everything is
written; None means a temporary directory) and the notebook's size knobs. The test inserts a cell after it that
sets ``RUN_DIR`` in ``tmp_path`` and the small values of ``PARAMETERS`` below, runs the notebook in a kernel, then
runs the notebook's check (a function below, sent to the kernel as source) in the namespace the notebook left.
The committed notebooks carry the outputs of a run at their own parameters (``python notebooks/execute.py``).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TEST_STEPS = 8

# Small values for the test run, per notebook (RUN_DIR is always added).
PARAMETERS = {
    "datasets_change_the_model": {"STEPS": TEST_STEPS},
    "explore_the_data": {"MAX_LENGTHS": [64, 256]},
    "mixture_proportions": {"STEPS": 12, "PROPORTIONS": [0.2, 0.8], "EXAMPLES": 100},
    "preferences_change_the_model": {"STEPS": 12, "SHOW": 2},
}


# ---- per-notebook checks, run inside the kernel: each gets the notebook's globals, its run dir and parameters --


def check_datasets_change_the_model(namespace: dict, run_dir, parameters: dict) -> None:
    import math
    from pathlib import Path

    from tulu_lite.data.conversations import read_conversations

    run_dir = Path(run_dir)
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
        assert namespace["metrics"][name]["steps"] == parameters["STEPS"]
    # The split is honest: no held-out question is trained on, and A and B share no topic.
    topic_of = namespace["topic_of"]
    topics = {}
    for name in ("A", "B"):
        train = list(read_conversations(run_dir / "data" / f"{name}_train.jsonl"))
        held_out = list(read_conversations(run_dir / "data" / f"{name}_held_out.jsonl"))
        assert train and held_out
        assert not {r["id"] for r in train} & {r["id"] for r in held_out}
        topics[name] = {topic_of(m["content"]) for r in train + held_out for m in r["messages"]
                        if m["role"] == "assistant"}
    assert topics == {"A": {"capitals", "colours"}, "B": {"animal sounds", "opposites"}}
    # Even after 8 steps each specialist is clearly better on its own topics than the other specialist
    # (measured: about 2 nats per answer token apart); this is what the notebook is about.
    assert scores["A"]["A"]["loss"] < scores["B"]["A"]["loss"]
    assert scores["B"]["B"]["loss"] < scores["A"]["B"]["loss"]
    figure = run_dir / "datasets_change_the_model.png"
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_explore_the_data(namespace: dict, run_dir, parameters: dict) -> None:
    from pathlib import Path

    from tulu_lite.data.sources import SOURCES

    run_dir = Path(run_dir)
    files = namespace["files"]
    # Every TÜLU source's sample release was converted, plus the demo chats; Table 1 covers each of them.
    assert [path.stem for path in files] == [*SOURCES, "demo"]
    assert [Path(stats.path).stem for stats in namespace["stats"]] == [path.stem for path in files]
    assert all(stats.instances > 0 for stats in namespace["stats"])
    # Trained share: part of every source's tokens, never all (prompts and templates are not trained).
    shares = namespace["trained_share"]
    assert set(shares) == {path.stem for path in files} and all(0 < share < 1 for share in shares.values())
    mixture_shares = namespace["mixture_share"]
    assert abs(sum(mixture_shares.values()) - 1) < 1e-9
    # Truncation: a longer limit never keeps fewer trained tokens; the full length keeps them all.
    kept = namespace["kept"]
    lengths = parameters["MAX_LENGTHS"]
    for name, by_length in kept.items():
        values = [by_length[length] for length in lengths]
        assert values == sorted(values) and all(0 <= value <= 1 for value in values), (name, values)
    assert any(kept[name][lengths[0]] < 1 for name in kept)  # the shortest limit cuts something
    # The highlighted conversation shows trained and masked tokens.
    assert 0 < namespace["example_trained"] < namespace["example_tokens"]
    for name in ("lengths.png", "trained_share.png", "truncation.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def check_mixture_proportions(namespace: dict, run_dir, parameters: dict) -> None:
    import math
    from pathlib import Path

    run_dir = Path(run_dir)
    results = namespace["results"]
    assert list(results) == parameters["PROPORTIONS"]
    for share, result in results.items():
        metrics = result["metrics"]
        assert metrics["steps"] == parameters["STEPS"]
        # eval_fraction held out examples of both mixture sources, named by the mixture.
        assert list(metrics["heldout"]["sources"]) == list(namespace["SOURCE_NAMES"].values())
        for name, loss in result["heldout"].items():
            assert math.isfinite(loss) and loss > 0, (share, name, loss)
        # The mixture really had the asked proportion (of the examples trained on plus held out).
        sizes = {name: size["examples"] for name, size in metrics["heldout"]["sources"].items()}
        assert sum(sizes.values()) + metrics["examples"] == parameters["EXAMPLES"]
    a, b = namespace["SOURCE_NAMES"].values()
    low, high = parameters["PROPORTIONS"][0], parameters["PROPORTIONS"][-1]
    # More of source A in the mixture: A's held-out loss gains on B's (what the notebook is about).
    gap = {share: results[share]["heldout"][a] - results[share]["heldout"][b] for share in (low, high)}
    assert gap[high] < gap[low], gap
    assert (run_dir / "mixture_proportions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_preferences_change_the_model(namespace: dict, run_dir, parameters: dict) -> None:
    import math
    from pathlib import Path

    from tulu_lite.data.pairs import read_pairs

    run_dir = Path(run_dir)
    metrics = namespace["metrics"]
    assert metrics["steps"] == parameters["STEPS"]
    # The split is honest: no held-out pair is trained on, and every kind is held out.
    train = {pair["id"] for pair in read_pairs(run_dir / "data" / "train.jsonl")}
    held_out = list(read_pairs(run_dir / "data" / "held_out.jsonl"))
    assert held_out and not train & {pair["id"] for pair in held_out}
    kinds = namespace["kinds"]
    assert set(kinds) == {pair["dataset"] for pair in held_out} and len(kinds) >= 2
    before, after = namespace["results"]["before"], namespace["results"]["after"]
    # Before the first step the policy is the reference: every reward is 0, a tie, so accuracy is chance.
    assert before["step"] == 0 and before["reward_accuracy"] == 0.5 and abs(before["reward_margin"]) < 1e-6
    # After a few steps the chosen replies win on held-out pairs of every kind (what the notebook is about).
    assert after["reward_accuracy"] > 0.5 and after["reward_margin"] > 0
    for kind in kinds:
        assert after["sources_reward_margin"][kind] > before["sources_reward_margin"][kind], kind
    # Side by side: a generation before and after for each shown pair, and finite preferences.
    shown = namespace["shown"]
    assert 0 < len(shown) <= parameters["SHOW"]
    for when in ("before", "after"):
        assert len(namespace["generated"][when]) == len(shown)
        assert all(math.isfinite(value) for value in namespace["preferred"][when])
    assert sum(namespace["preferred"]["after"]) > sum(namespace["preferred"]["before"])
    assert (run_dir / "preferences_change_the_model.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHECKS = {"datasets_change_the_model": check_datasets_change_the_model,
          "explore_the_data": check_explore_the_data,
          "mixture_proportions": check_mixture_proportions,
          "preferences_change_the_model": check_preferences_change_the_model}


# ---- the runner ----------------------------------------------------------------------------------------------


def execute(path: Path, parameters: dict, check, run_dir: Path, timeout: int = 900):
    """Run the notebook in a fresh python3 kernel with `parameters` injected, then `check` in its namespace."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    assignments = "\n".join(f"{name} = {value!r}" for name, value in {**parameters, "RUN_DIR": str(run_dir)}.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(assignments,
                                                               metadata={"tags": ["injected-parameters"]}))
    call = f"{check.__name__}(globals(), {str(run_dir)!r}, {parameters!r})"
    notebook.cells.append(nbformat.v4.new_code_cell(f"{inspect.getsource(check)}\n{call}"))
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(run_dir.parent)}}).execute()
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert path.stem in CHECKS, f"{path.name}: add a check of its results to CHECKS in {Path(__file__).name}"
    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path / "cache"))  # the kernel builds the tiny base here
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    notebook = execute(path, PARAMETERS[path.stem], CHECKS[path.stem], tmp_path / "run")
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_committed_notebook_carries_the_outputs_of_a_full_run(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell is not 'parameters'"
    # Run top to bottom in one kernel, at the notebook's own parameters (no injected test values).
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1)), path.name
    assert not any("injected-parameters" in cell["metadata"].get("tags", []) for cell in code)
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"], path.name
    assert any("image/png" in output.get("data", {}) for output in outputs), f"{path.name}: no figure"


# An absolute path of the machine the notebook ran on (a run directory, a cache, the checkout, a library's source in
# a warning): outputs name files relative to the run directory, or by name only.
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|root|tmp|home|Users|private|var|opt|usr|mnt|scratch)/")
# What a kernel without ipywidgets, or a library's own progress bar, leaves in the outputs.
WIDGET_NOISE = ("IProgress not found", "ipywidgets", "TqdmWarning", "Loading weights", "Generating train split",
                "it/s]")


def output_texts(output: dict) -> list[str]:
    """The text an output shows: a stream's, or every text representation of a display or result (not images)."""
    if output["output_type"] == "stream":
        return ["".join(output["text"])]
    if output["output_type"] == "error":
        return ["\n".join(output["traceback"])]
    return ["".join(value) for kind, value in output.get("data", {}).items() if kind.startswith("text/")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_committed_outputs_hold_no_machine_paths_or_widget_noise(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            texts = output_texts(output)
            for text in texts:
                assert not MACHINE_PATH.search(text), (path.name, index, MACHINE_PATH.search(text).group(0), text[:300])
                assert not [noise for noise in WIDGET_NOISE if noise in text], (path.name, index, text[:300])
            # A live display (a progress bar) in a kernel without widgets leaves an empty output behind.
            assert "image/png" in output.get("data", {}) or any(text.strip() for text in texts), (path.name, index)


def test_notebooks_are_found() -> None:
    # Guards against the parametrized tests silently running nothing (a moved folder, a renamed extension).
    assert {path.stem for path in NOTEBOOKS} == set(CHECKS), f"notebooks in {NOTEBOOK_DIR}: {NOTEBOOKS}"
