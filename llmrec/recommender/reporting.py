"""Tables and figures of training results: summary.md, comparison tables, the curve.

Every table says which protocol produced it, so numbers selected on the test
set ("paper") are never mistaken for held-out ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmrec.artifacts import atomic_path

TABLE_METRICS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50", "precision@20", "hit@20")


def mean_and_std(per_seed: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of every numeric metric."""
    keys = [key for key, value in per_seed[0].items() if isinstance(value, float)]
    mean = {key: float(np.mean([row[key] for row in per_seed])) for key in keys}
    std = {
        key: float(np.std([row[key] for row in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0 for key in keys
    }
    return mean, std


def metrics_table(rows: list[tuple[str, dict[str, float], dict[str, float] | None]]) -> str:
    """Markdown table: one row per (label, mean metrics, std metrics or None for a single run)."""
    lines = ["| model | " + " | ".join(TABLE_METRICS) + " |", "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for label, mean, std in rows:
        cells = []
        for key in TABLE_METRICS:
            if key not in mean:
                cells.append("-")
            elif std is not None:
                cells.append(f"{mean[key]:.4f} ± {std[key]:.4f}")
            else:
                cells.append(f"{mean[key]:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(doc: dict[str, Any]) -> str:
    """summary.md of one trained model: test table, per-seed rows, how it was selected."""
    test_rows = [(f"seed {run['seed']}", run["test"], None) for run in doc["runs"]]
    if len(doc["runs"]) > 1:
        test_rows.append((f"mean ± std ({len(doc['runs'])} seeds)", doc["test_mean"], doc["test_std"]))
    selection_rows = [(f"seed {run['seed']} (epoch {run['best_epoch']})", run["selection"], None) for run in doc["runs"]]
    return "\n".join([
        f"# {doc['name']} ({doc['model']})",
        "",
        f"Protocol: {doc['protocol_label']}",
        f"Engine: {doc['engine']}; device: {doc['device']}; "
        f"train time {doc['timings']['train_seconds']:.1f} s over {len(doc['runs'])} seed(s)",
        "",
        "## Test",
        "",
        metrics_table(test_rows),
        "",
        f"## Selection split ({doc['selection_split']}) at the best epoch",
        "",
        metrics_table(selection_rows),
        "",
    ])


def write_training_curve(path: Path, runs: list[dict[str, Any]], title: str) -> None:
    """Loss and selection Recall@20 per epoch, one line per seed (matplotlib Agg, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        history = run["history"]
        loss_axis.plot([row["epoch"] for row in history], [row["loss"] for row in history], label=f"seed {run['seed']}")
        evaluated = [row for row in history if "recall@20" in row]
        recall_axis.plot([row["epoch"] for row in evaluated], [row["recall@20"] for row in evaluated],
                         label=f"seed {run['seed']}")
        recall_axis.axvline(run["best_epoch"], linestyle=":", linewidth=0.8)
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    recall_axis.set(xlabel="epoch", ylabel="Recall@20", title="selection Recall@20")
    recall_axis.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
