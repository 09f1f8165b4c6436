"""Checks that the numbers a run's markdown reports print are the numbers on disk.

report.md, model/comparison.md and model/ablation.md print a metrics table
(`| model | recall@10 | recall@20 | ... |`, one row per model) and report.md a
dataset line. These helpers read the rows back and compare every printed cell
with the files the numbers come from: each model's own `model/<name>/metrics.json`
(per-seed test metrics) and the run's parquet tables. Not a test module (pytest
does not rewrite its asserts), so every assert names what differs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd


def metric_rows(markdown: str) -> dict[str, dict[str, str]]:
    """Every row of the metrics tables in `markdown`: label -> {metric column: printed cell}."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| model |"):
            header = cells[1:]
        elif header is not None and line.startswith("|---"):
            continue
        elif header is not None and line.startswith("| "):
            assert len(cells) == len(header) + 1, f"{len(cells)} cells under {len(header) + 1} columns: {line}"
            assert cells[0] not in rows, f"two rows labelled {cells[0]!r}"
            rows[cells[0]] = dict(zip(header, cells[1:]))
        else:
            header = None
    return rows


def _seed_metrics(run_dir: Path, name: str) -> list[dict[str, float]]:
    """The test metrics of each seed in `model/<name>/metrics.json`."""
    doc = json.loads((run_dir / "model" / name / "metrics.json").read_text())
    runs = [run["test"] for run in doc["runs"]]
    assert runs, f"model/{name}/metrics.json holds no seed"
    return runs


def _expected_cell(per_seed: list[dict[str, float]], metric: str) -> str:
    if metric not in per_seed[0]:
        return "-"
    values = [run[metric] for run in per_seed]
    if len(values) == 1:  # one seed: the value alone, no "± 0"
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def assert_metrics_table(markdown: str, run_dir: Path, models: dict[str, str], seeds: int) -> None:
    """The table holds exactly the rows `models` (label -> the model folder whose numbers it shows), in that
    order, and every metric cell of a row is its model's test mean (± std over `seeds` seeds) from metrics.json."""
    rows = metric_rows(markdown)
    assert list(rows) == list(models), f"table rows {list(rows)}, expected {list(models)}"
    for label, name in models.items():
        per_seed = _seed_metrics(run_dir, name)
        assert len(per_seed) == seeds, f"model/{name}/metrics.json: {len(per_seed)} seeds, expected {seeds}"
        row = rows[label]
        assert row.get("recall@20", "-") != "-", f"{label}: no Recall@20 printed ({row})"
        for metric, cell in row.items():
            assert cell == _expected_cell(per_seed, metric), (
                f"{label}: {metric} printed {cell}, model/{name}/metrics.json says {_expected_cell(per_seed, metric)}")


#: report.md's dataset line, "- 8 users, 244 items; train / val / test interactions 232 / 28 / 28".
DATASET_LINE = re.compile(r"^- (\S+) users, (\S+) items; train / val / test interactions (\S+) / (\S+) / (\S+)$",
                          re.MULTILINE)


def assert_dataset_counts(markdown: str, run_dir: Path) -> None:
    """report.md's user, item and interaction counts are the row counts of the run's parquet tables."""
    found = DATASET_LINE.findall(markdown)
    assert len(found) == 1, "report.md has no (or more than one) dataset line"
    tables = ("users", "items", "train", "val", "test")
    counts = {table: len(pd.read_parquet(run_dir / f"{table}.parquet")) for table in tables}
    assert all(counts.values()), f"an empty table: {counts}"
    printed = dict(zip(tables, found[0]))
    assert printed == {table: str(count) for table, count in counts.items()}, (
        f"report.md prints {printed}, the run's parquet tables hold {counts} rows")
