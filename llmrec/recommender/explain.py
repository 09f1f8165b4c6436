"""`llmrec recommend`: top-k items for one user, with the history items behind each.

The "why" is the user's training items closest to each recommended item by
cosine of the trained final item vectors: the items whose neighbourhood in
the learned space pulled the recommendation up. Seen items (train + val) are
never recommended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from llmrec.artifacts import ITEMS, USERS, read_run_parquet
from llmrec.errors import ArtifactError, ConfigError
from llmrec.recommender.runner import load_trained


@dataclass
class Recommendation:
    item: int
    title: str
    score: float
    because: list[tuple[str, float]]  # (history title, cosine)


def _title(items: pd.DataFrame, item: int) -> str:
    row = items.iloc[item]
    return str(row["title"]) if pd.isna(row["year"]) else f"{row['title']} ({row['year']})"


def recommend_for_user(run_dir: Path | str, name: str, original_user_id: str, k: int = 10,
                       n_reasons: int = 2, device: str = "cpu") -> list[Recommendation]:
    """Top-k unseen items for the user with the dataset's id `original_user_id`."""
    run_dir = Path(run_dir)
    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    users = read_run_parquet(run_dir, USERS, columns=["user", "original_id"])
    matches = users.loc[users["original_id"].astype(str) == str(original_user_id), "user"]
    if matches.empty:
        raise ArtifactError(f"{run_dir / USERS}: no user with original_id {original_user_id!r}")
    user = int(matches.iloc[0])
    items = read_run_parquet(run_dir, ITEMS, columns=["item", "title", "year"]).sort_values("item")
    trained = load_trained(run_dir, name, device)
    user_vectors, item_vectors = trained.model.final_representations()
    history = trained.data.train[trained.data.train[:, 0] == user, 1]
    seen = np.concatenate([history, trained.data.interactions["val"][trained.data.interactions["val"][:, 0] == user, 1]])
    scores = item_vectors @ user_vectors[user]
    scores[torch.as_tensor(seen, dtype=torch.long)] = float("-inf")
    top_scores, top_items = torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))
    normalised = F.normalize(item_vectors, dim=1)
    similarity = normalised[top_items] @ normalised[torch.as_tensor(history, dtype=torch.long)].T
    recommendations = []
    for row, (item, score) in enumerate(zip(top_items.tolist(), top_scores.tolist())):
        reasons: list[tuple[str, float]] = []
        if len(history):
            closest = torch.topk(similarity[row], min(n_reasons, len(history)))
            reasons = [(_title(items, int(history[j])), float(c)) for c, j in zip(closest.values, closest.indices)]
        recommendations.append(Recommendation(item, _title(items, item), float(score), reasons))
    return recommendations
