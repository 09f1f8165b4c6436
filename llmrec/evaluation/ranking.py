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


class CSRRows:
    """Fetch rows of a canonical CSR matrix for a batch of users, on the host.

    Index bookkeeping stays in numpy/scipy: it is small (one batch's entries)
    and single-threaded code beats many tiny multi-threaded torch kernels
    there; only the final index arrays travel to the scoring device.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self.matrix = matrix
        row_of_entry = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        # Sorted (row, col) keys, so membership of many (user, item) pairs is one searchsorted.
        self.keys = row_of_entry * matrix.shape[1] + matrix.indices.astype(np.int64)

    def batch_entries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of the user in the batch, column) of every stored entry of these users' rows."""
        rows = self.matrix[users]
        batch_row = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(rows.indptr))
        return batch_row, rows.indices.astype(np.int64)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean [len(users), k]: whether (users[b], items[b, j]) is a stored entry."""
        if len(self.keys) == 0:
            return np.zeros(items.shape, dtype=bool)
        query = users[:, None].astype(np.int64) * self.matrix.shape[1] + items
        position = np.searchsorted(self.keys, query).clip(max=len(self.keys) - 1)
        return self.keys[position] == query


def mask_in_place(scores: torch.Tensor, excluded: CSRRows, users: np.ndarray) -> None:
    """Set the excluded items of each user in the batch to -inf, so they rank last."""
    batch_row, item = excluded.batch_entries(users)
    index = (torch.from_numpy(batch_row).to(scores.device), torch.from_numpy(item).to(scores.device))
    scores.index_put_(index, torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))


def topk_lowest_index_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, items) per row, descending, equal scores ordered by ascending item id.

    One `torch.topk` of k + 1 (the extra place shows whether a tie straddles
    the k-th place) plus work on [rows, k]; only rows with a straddling tie pay
    more passes, to pick the lowest ids among the tied items.
    """
    n_items = scores.shape[1]
    values, items = torch.topk(scores, min(k + 1, n_items), dim=1)
    straddling = torch.nonzero(values[:, k - 1] == values[:, k]).squeeze(1) if k < n_items else None
    values, items = values[:, :k], items[:, :k]
    # Ties inside the top k (every row for popularity, a few for embeddings): order them by id.
    tied_rows = torch.nonzero((values[:, 1:] == values[:, :-1]).any(1)).squeeze(1)
    if len(tied_rows):
        tied_items, tied_values = items[tied_rows], values[tied_rows]
        by_item = torch.argsort(tied_items, dim=1)
        tied_items, tied_values = tied_items.gather(1, by_item), tied_values.gather(1, by_item)
        by_value = torch.sort(tied_values, dim=1, descending=True, stable=True).indices
        items[tied_rows], values[tied_rows] = tied_items.gather(1, by_value), tied_values.gather(1, by_value)
    if straddling is not None and len(straddling):
        threshold = values[:, -1:]
        _refill_tied_tail(scores, items, threshold, (values == threshold).sum(1), straddling)
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
