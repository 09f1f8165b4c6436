"""Side inputs for tests, derived from the training split only (never val/test).

Real LLM features come from the augment/embed stages; here cheap, real
signals stand in with the same shapes: genre multi-hot vectors as item text,
decade + genre as item attributes, the mean genre vector of a user's training
items as the user profile, and (user, a training item, a non-training item)
triples as augmented edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_side_inputs(run_dir: Path, seed: int = 0) -> None:
    items = pd.read_parquet(run_dir / "items.parquet").sort_values("item")
    train = pd.read_parquet(run_dir / "train.parquet")
    n_users = len(pd.read_parquet(run_dir / "users.parquet"))
    genres = items["genres"].str.get_dummies("|").to_numpy(np.float32)
    decades = pd.get_dummies((items["year"].fillna(1900) // 10).astype(int)).to_numpy(np.float32)
    attributes = np.hstack([decades, genres])
    profile = np.zeros((n_users, genres.shape[1]), np.float32)
    np.add.at(profile, train["user"].to_numpy(), genres[train["item"].to_numpy()])
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-6)
    (run_dir / "embeddings").mkdir(exist_ok=True)
    np.save(run_dir / "embeddings" / "item_text.npy", genres)
    np.save(run_dir / "embeddings" / "item_attributes.npy", attributes)
    np.save(run_dir / "embeddings" / "user_profiles.npy", profile)
    rng = np.random.default_rng(seed)
    np.save(run_dir / "embeddings" / "image.npy", rng.standard_normal((len(items), 16)).astype(np.float32))
    first_item = train.groupby("user")["item"].first()
    seen = set(zip(train["user"], train["item"]))
    disliked = []
    for user in first_item.index:  # one triple per user: cheap, the loop is over ~600 users
        candidate = int(rng.integers(len(items)))
        while (user, candidate) in seen:
            candidate = int(rng.integers(len(items)))
        disliked.append(candidate)
    pd.DataFrame({"user": first_item.index.astype(np.int64), "liked": first_item.to_numpy(np.int64),
                  "disliked": np.asarray(disliked, np.int64), "model": "test", "template_hash": "none"}
                 ).to_parquet(run_dir / "augmented_edges.parquet", index=False)
