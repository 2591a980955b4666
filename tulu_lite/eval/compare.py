"""One table across models in the layout of the paper's Table 4, and a grouped bar chart.

Each argument is an `OUT_DIR` written by `tulu-lite eval`; a row per model (named after the evaluated model
directory), a column per benchmark with that task's headline number. The average uses every benchmark that all
compared models have a number for, with ToxiGen counted as 100 - % toxic so that higher is better throughout.
Numbers of different protocols (tulu-v1 / tulu-lite) or different TruthfulQA metrics are not comparable: the
table says so in its caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from tulu_lite.errors import TuluError
from tulu_lite.eval.runner import TASK_MODULES
from tulu_lite.json_files import read_json_file
from tulu_lite.outputs import atomic_file

# Table 4 column order: (task, column header)
COLUMNS = (
    ("mmlu", "MMLU\n0-shot"), ("gsm", "GSM\n8-shot CoT"), ("bbh", "BBH\n3-shot CoT"), ("tydiqa", "TydiQA\n1-shot F1"),
    ("codex_humaneval", "Codex-Eval\nP@10"), ("alpaca_eval", "AlpacaEval\nwin %"),
    ("toxigen", "ToxiGen\n% toxic ↓"), ("truthfulqa", "TruthfulQA"),
)


@dataclass(frozen=True)
class ModelRow:
    name: str
    scores: dict[str, float]  # task -> headline number
    labels: dict[str, str] = field(default_factory=dict)  # task -> what the number is
    protocols: frozenset[str] = frozenset()

    def average(self, tasks: list[str]) -> float | None:
        values = [100.0 - self.scores[t] if t == "toxigen" else self.scores[t] for t in tasks]
        return sum(values) / len(values) if values else None


def read_results(out_dir: Path) -> ModelRow:
    """The headline number of every task found in one eval output folder."""
    if not out_dir.is_dir():
        raise TuluError(f"{out_dir}: eval output folder not found")
    scores, labels, protocols, name = {}, {}, set(), None
    for task, module in TASK_MODULES.items():
        metrics_file = out_dir / task / "metrics.json"
        if not metrics_file.is_file():
            continue
        metrics = read_json_file(metrics_file)
        settings_file = out_dir / task / "settings.json"
        settings = read_json_file(settings_file) if settings_file.is_file() else {}
        value = module.headline(metrics)
        if value is not None:
            scores[task] = value
            labels[task] = module.headline_label(metrics)
        protocols.add(metrics.get("protocol", "tulu-lite"))  # results written before protocols were tulu-lite's
        model_dir = settings.get("settings", {}).get("model_dir")
        name = name or (Path(model_dir).name if model_dir else None)
    if not any((out_dir / task / "metrics.json").is_file() for task in TASK_MODULES):
        raise TuluError(f"{out_dir}: no task results (expected <task>/metrics.json written by tulu-lite eval)")
    return ModelRow(name or out_dir.name, scores, labels, frozenset(protocols))


def common_tasks(rows: list[ModelRow]) -> list[str]:
    return [task for task, _ in COLUMNS if all(task in row.scores for row in rows)]


def caption(rows: list[ModelRow]) -> str:
    notes = ["Average: benchmarks every model has; ToxiGen counted as 100 - % toxic"]
    protocols = sorted(set().union(*(row.protocols for row in rows)))
    if len(protocols) > 1:
        notes.append(f"NOT comparable: the results come from different protocols ({', '.join(protocols)})")
    for task, _ in COLUMNS:
        kinds = {row.labels[task] for row in rows if task in row.labels}
        if len(kinds) > 1:
            notes.append(f"NOT comparable: {task} reports different metrics ({'; '.join(sorted(kinds))})")
    return "\n".join(notes)


def header(task: str, default: str, rows: list[ModelRow]) -> str:
    if task != "truthfulqa":
        return default
    kinds = {row.labels.get(task, "") for row in rows if task in row.scores}
    return default + ("\n% true×info" if kinds == {truthfulqa_judged_label()} else "\nMC2")


def truthfulqa_judged_label() -> str:
    return TASK_MODULES["truthfulqa"].JUDGED_LABEL


def compare_table(rows: list[ModelRow]) -> Table:
    shown = [(task, header(task, title, rows)) for task, title in COLUMNS if any(task in row.scores for row in rows)]
    table = Table(title="tulu-lite eval compare", caption=caption(rows))
    table.add_column("Model")
    for _, title in shown:
        table.add_column(title, justify="right")
    table.add_column("Average", justify="right")
    averaged = common_tasks(rows)
    for row in rows:
        cells = [f"{row.scores[task]:.1f}" if task in row.scores else "—" for task, _ in shown]
        average = row.average(averaged)
        table.add_row(row.name, *cells, "—" if average is None else f"{average:.1f}")
    return table


def bar_chart(rows: list[ModelRow], target: Path) -> Path:
    """Grouped bars: one group per benchmark, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(task, header(task, title, rows).replace("\n", " ")) for task, title in COLUMNS
             if any(task in r.scores for r in rows)]
    width = 0.8 / max(len(rows), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(shown) + 2), 4.5))
    for index, row in enumerate(rows):
        xs = [i + index * width for i, (task, _) in enumerate(shown) if task in row.scores]
        ys = [row.scores[task] for task, _ in shown if task in row.scores]
        bars = axes.bar(xs, ys, width=width, label=row.name)
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(shown))])
    axes.set_xticklabels([title for _, title in shown], rotation=20, ha="right")
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 100)
    axes.legend()
    figure.tight_layout()
    with atomic_file(target, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    return target


def compare(out_dirs: list[Path]) -> list[ModelRow]:
    if not out_dirs:
        raise TuluError("eval compare: give at least one OUT_DIR written by tulu-lite eval")
    return [read_results(Path(d)) for d in out_dirs]
