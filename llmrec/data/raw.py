"""The one in-memory shape every loader produces before preparation.

Loaders differ only in how they parse files; once a dataset is a `RawDataset`
the filtering, re-indexing and splitting code is shared, so ml-100k, ml-1m,
a user's CSV and the LLMRec release are prepared by the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class RawDataset:
    """A dataset as published, parsed and type-checked but not yet filtered.

    - `interactions`: `user_id`, `item_id` (int64), `rating` (float32),
      `timestamp` (int64).
    - `items`: `item_id`, `title`, `year` (Int64), `genres` (`|`-separated).
    - `users`: `user_id` plus demographics where published, else empty.
    - `sources`: file name -> sha256 of every file read (the manifest inputs).
    - `fixed_split`: split name -> (user_id, item_id) interactions when the
      dataset ships its own split (LLMRec release); preparation keeps it as is.
    - `features`: artifact path in the run -> float32 array (rows x d: n_items, or n_users for user features) to copy.
    - `extra_tables`: run-relative parquet path -> frame imported from a release.
    - `explicit_ratings`: False when the file has no rating column (already
      implicit), so the rating threshold does not apply.
    - `notes`: human-readable remarks for the log and the manifest stats.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    sources: dict[str, str]
    explicit_ratings: bool = True
    fixed_split: dict[str, pd.DataFrame] | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    extra_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
