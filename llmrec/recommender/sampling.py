"""Vectorised BPR sampling: users, one positive and one true negative each.

All draws come from one explicit `torch.Generator` on the CPU, so a run is
reproducible on any device and resuming restores exactly one state. Negatives
are drawn uniformly and only the draws that hit a training item are redrawn
(membership by binary search over sorted user*n_items+item keys), so there is
no Python loop per sample.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """One training batch: BPR (user, positive, negative) rows and the augmented triples of the batch's users."""

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    augmented: torch.Tensor  # (n, 3) rows (user, liked, disliked); empty for models that read none

    def to(self, device: torch.device) -> Batch:
        return Batch(*(values.to(device) for values in self))


class BPRSampler:
    """Draws (user, positive, negative) batches from the training pairs."""

    def __init__(self, train_pairs: np.ndarray, n_users: int, n_items: int) -> None:
        self.n_items = n_items
        order = np.lexsort((train_pairs[:, 1], train_pairs[:, 0]))
        users = torch.from_numpy(train_pairs[order, 0].copy())
        items = torch.from_numpy(train_pairs[order, 1].copy())
        degree = torch.bincount(users, minlength=n_users)
        self.offsets = torch.cumsum(degree, 0) - degree  # first row of each user
        self.degree = degree
        self.items = items
        # a user who rated every item has no negative to draw
        self.active_users = torch.nonzero((degree > 0) & (degree < n_items)).squeeze(1)
        self.sorted_keys = users * n_items + items

    def is_training_pair(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        position = torch.searchsorted(self.sorted_keys, keys).clamp_max(len(self.sorted_keys) - 1)
        return self.sorted_keys[position] == keys

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Users uniform over users with training items (with replacement), 1 pos, 1 neg each."""
        users = self.active_users[torch.randint(len(self.active_users), (batch_size,), generator=generator)]
        offset_in_user = (torch.rand(batch_size, generator=generator) * self.degree[users]).long()
        positives = self.items[self.offsets[users] + offset_in_user.clamp_max(self.degree[users] - 1)]
        negatives = torch.randint(self.n_items, (batch_size,), generator=generator)
        collisions = self.is_training_pair(users, negatives)
        while bool(collisions.any()):
            negatives[collisions] = torch.randint(
                self.n_items, (int(collisions.sum()),), generator=generator
            )
            collisions = self.is_training_pair(users, negatives)
        return users, positives, negatives


class AugmentedSampler:
    """LLM-augmented (user, liked, disliked) triples for users of a BPR batch.

    As in the original, `int(rate * batch)` rows of the batch are drawn without
    replacement and each drawn user with a triple contributes one (a random one
    when the user has several; users without one contribute nothing). So every
    covered user gets about `rate` augmented samples per real sample, at any
    coverage. Drawing `rate * batch` triples from all triples instead would give
    each of a few covered users dozens of augmented samples per real one.
    """

    def __init__(self, triples: np.ndarray, n_users: int) -> None:
        order = np.argsort(triples[:, 0], kind="stable")
        self.triples = torch.from_numpy(np.ascontiguousarray(triples[order]))
        self.count = torch.bincount(self.triples[:, 0], minlength=n_users)
        self.offsets = torch.cumsum(self.count, 0) - self.count

    def sample(self, batch_users: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
        """Rows (user, liked, disliked) for about `rate * len(batch_users)` users of the batch (CPU tensors)."""
        drawn = int(rate * len(batch_users))
        if drawn <= 0 or len(self.triples) == 0:
            return self.triples[:0]
        users = batch_users[torch.randperm(len(batch_users), generator=generator)[:drawn]]
        users = users[self.count[users] > 0]
        pick = (torch.rand(len(users), generator=generator) * self.count[users]).long()
        return self.triples[self.offsets[users] + pick.clamp_max(self.count[users] - 1)]
