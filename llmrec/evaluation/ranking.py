"""Top-k selection with a fixed tie rule, and score masking from CSR rows.

`torch.topk` leaves the order of equal scores unspecified, so a model with
tied scores (popularity, untrained embeddings) could get different metrics on
different devices or batch sizes. The original LLMRec code ranks with
`heapq.nlargest`, which keeps the lower item id first among ties; we apply the
same rule so results are reproducible and comparable.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class DeviceCSR:
    """The index arrays of a CSR matrix on a torch device, to fetch rows of a batch of users."""

    def __init__(self, matrix: sp.csr_matrix, device: torch.device) -> None:
        self.n_cols = matrix.shape[1]
        self.indptr = torch.as_tensor(matrix.indptr.astype(np.int64), device=device)
        self.indices = torch.as_tensor(matrix.indices.astype(np.int64), device=device)
        row_of_entry = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        # Sorted (row, col) keys, so membership of many (user, item) pairs is one searchsorted.
        self.keys = torch.as_tensor(row_of_entry * self.n_cols + matrix.indices.astype(np.int64), device=device)

    def batch_entries(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position of the user in the batch, column) of every stored entry of these users' rows."""
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        batch_row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first_entry_of_row = torch.cumsum(counts, 0) - counts
        offset_in_row = torch.arange(len(batch_row), device=users.device) - first_entry_of_row[batch_row]
        return batch_row, self.indices[starts[batch_row] + offset_in_row]

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean [len(users), k]: whether (users[b], items[b, j]) is a stored entry."""
        if len(self.keys) == 0:
            return torch.zeros_like(items, dtype=torch.bool)
        query = users[:, None] * self.n_cols + items
        position = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
        return self.keys[position] == query


def mask_in_place(scores: torch.Tensor, excluded: DeviceCSR, users: torch.Tensor) -> None:
    """Set the excluded items of each user in the batch to -inf, so they rank last."""
    batch_row, item = excluded.batch_entries(users)
    scores[batch_row, item] = float("-inf")


def topk_lowest_index_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, items) per row, descending, equal scores ordered by ascending item id.

    One `torch.topk` plus work on [rows, k]; only rows where a tie straddles the
    k-th place pay one more pass, to pick the lowest ids among the tied items.
    """
    values, items = torch.topk(scores, k, dim=1)
    by_item = torch.argsort(items, dim=1)
    items, values = items.gather(1, by_item), values.gather(1, by_item)
    by_value = torch.sort(values, dim=1, descending=True, stable=True).indices
    items, values = items.gather(1, by_value), values.gather(1, by_value)

    threshold = values[:, -1:]
    n_tied_kept = (values == threshold).sum(1)
    straddling = torch.nonzero((scores == threshold).sum(1) > n_tied_kept).squeeze(1)
    if len(straddling):
        _refill_tied_tail(scores, items, threshold, n_tied_kept, straddling)
    return values, items


def _refill_tied_tail(
    scores: torch.Tensor,
    items: torch.Tensor,
    threshold: torch.Tensor,
    n_tied_kept: torch.Tensor,
    rows: torch.Tensor,
) -> None:
    """Replace the tied tail of `items` (the last n_tied_kept places) by the lowest tied item ids."""
    n_items, k = scores.shape[1], items.shape[1]
    item_ids = torch.arange(n_items, device=scores.device)
    tied = scores[rows] == threshold[rows]
    # Largest -id among tied items = smallest id; untied items get a key below every tied one.
    key = torch.where(tied, -item_ids, torch.full_like(item_ids, -n_items - 1))
    kept = n_tied_kept[rows]
    lowest_tied = -torch.topk(key, int(kept.max()), dim=1).values
    slot = torch.arange(lowest_tied.shape[1], device=scores.device)
    used = slot[None, :] < kept[:, None]
    target_row = rows[:, None].expand_as(lowest_tied)[used]
    target_col = ((k - kept)[:, None] + slot[None, :])[used]
    items[target_row, target_col] = lowest_tied[used]
