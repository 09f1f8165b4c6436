"""Descriptive statistics of a prepared run, for `llmrec data info`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from llmrec.data.tables import SPLITS, RunTables

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def _quantiles(counts: pd.Series) -> dict[str, float]:
    if counts.empty:
        return {}
    values = np.quantile(counts.to_numpy(), QUANTILES)
    return {f"q{int(q * 100)}": float(v) for q, v in zip(QUANTILES, values)}


def describe(tables: RunTables) -> dict[str, Any]:
    """Counts, density and per-user / per-item interaction quantiles per split."""
    summary: dict[str, Any] = {"users": tables.n_users, "items": tables.n_items, "splits": {}}
    cells = tables.n_users * tables.n_items
    total = 0
    for name in SPLITS:
        frame = tables.split(name)
        total += len(frame)
        summary["splits"][name] = {
            "interactions": len(frame),
            "users": int(frame["user"].nunique()),
            "items": int(frame["item"].nunique()),
            "density": len(frame) / cells if cells else 0.0,
            "per_user": _quantiles(frame.groupby("user").size()),
            "per_item": _quantiles(frame.groupby("item").size()),
        }
    summary["interactions"] = total
    summary["density"] = total / cells if cells else 0.0
    demographics = [c for c in ("age", "gender", "occupation") if c in tables.users.columns]
    summary["user_demographics"] = demographics
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"users {summary['users']:,}  items {summary['items']:,}  "
        f"interactions {summary['interactions']:,}  density {summary['density']:.4%}",
        f"user demographics: {', '.join(summary['user_demographics']) or 'none'}",
    ]
    for name, split in summary["splits"].items():
        lines.append(
            f"{name:<5} interactions {split['interactions']:>9,}  users {split['users']:>7,}  "
            f"items {split['items']:>7,}  density {split['density']:.4%}"
        )
        for key in ("per_user", "per_item"):
            qs = "  ".join(f"{k}={v:g}" for k, v in split[key].items())
            lines.append(f"      {key.replace('_', ' ')}: {qs}")
    return "\n".join(lines)
