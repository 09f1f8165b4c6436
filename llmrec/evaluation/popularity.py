"""The popularity baseline: every user gets items ranked by training interaction count."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch


def popularity_scorer(train: sp.csr_matrix) -> Callable[[torch.Tensor], torch.Tensor]:
    """A scorer giving each item its number of training users, the same row for every user."""
    item_counts = torch.as_tensor(np.asarray((train != 0).sum(axis=0), dtype=np.float32).ravel())

    def score(users: torch.Tensor) -> torch.Tensor:
        # A fresh tensor per call: the evaluator masks scores in place.
        return item_counts.to(users.device).repeat(len(users), 1)

    return score
