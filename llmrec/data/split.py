"""Per-user train / validation / test assignment, vectorised over all users.

Every user with at least `min_user_interactions` interactions gets at least
one validation and one test interaction and keeps at least one for training;
users with fewer interactions go entirely to train (they cannot be evaluated
without leaving them with no history) and are counted, not silently dropped.
"""

from __future__ import annotations

import numpy as np

from llmrec.data.config import SPLIT_METHODS

TRAIN, VAL, TEST = 0, 1, 2


def _held_out_counts(
    sizes: np.ndarray, method: str, val_ratio: float, test_ratio: float, min_user_interactions: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, how many interactions go to test and to validation."""
    if method == "leave-last":
        n_test = np.ones_like(sizes)
        n_val = np.ones_like(sizes)
    else:
        n_test = np.clip(np.floor(sizes * test_ratio + 0.5).astype(np.int64), 1, np.maximum(sizes - 2, 1))
        n_val = np.clip(np.floor(sizes * val_ratio + 0.5).astype(np.int64), 1, np.maximum(sizes - 1 - n_test, 1))
    too_few = sizes < min_user_interactions
    return np.where(too_few, 0, n_test), np.where(too_few, 0, n_val)


def assign_splits(
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    *,
    method: str,
    val_ratio: float,
    test_ratio: float,
    min_user_interactions: int,
    seed: int,
) -> np.ndarray:
    """Return TRAIN/VAL/TEST per interaction (same order as the inputs).

    `users` must be contiguous ids 0..n_users-1. `random` shuffles each user's
    interactions with `seed`; `temporal` holds out each user's latest
    interactions by the same ratios; `leave-last` holds out the last one for
    test and the one before for validation. Ties in time break by item id so
    the result depends only on the data and the seed, never on file order.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; expected one of {SPLIT_METHODS}")
    if method == "random":
        rng = np.random.default_rng(seed)
        # Keys drawn in canonical (user, item) order so file order cannot matter.
        canonical = np.lexsort((items, users))
        keys = np.empty(len(users))
        keys[canonical] = rng.random(len(users))
        order = np.lexsort((keys, users))
    else:
        order = np.lexsort((items, timestamps, users))
    sorted_users = users[order]
    sizes = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(len(users)) - starts[sorted_users]
    n_test, n_val = _held_out_counts(sizes, method, val_ratio, test_ratio, min_user_interactions)
    from_end = sizes[sorted_users] - rank  # 1 for the user's last interaction
    labels_sorted = np.where(
        from_end <= n_test[sorted_users],
        TEST,
        np.where(from_end <= (n_test + n_val)[sorted_users], VAL, TRAIN),
    )
    labels = np.empty(len(users), dtype=np.int8)
    labels[order] = labels_sorted
    return labels
