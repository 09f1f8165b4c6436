"""Full-ranking evaluation: score every item for every user, mask, take top-k, average metrics.

All work is batched over users: the scorer fills a [batch, n_items] score
matrix on the torch device, excluded items (train, or train + val at test
time) are set to -inf in place, and `torch.topk` picks the top max(ks). Only
the [batch, max(ks)] top items leave the device; the hit matrix comes from one
`searchsorted` against the ground truth's sorted (user, item) keys, and
metrics are computed on it in float64 numpy, one value per user, averaged
over users at the end.

Conventions (documented because they change numbers):
- Users without ground-truth items are skipped and not averaged over
  (`n_users_evaluated` says how many were).
- Ties rank the lower item id first, as the original code's `heapq` does.
- An item that is both relevant and excluded can never be hit, but still
  counts in |relevant| (Recall's denominator), as in the original code; the
  evaluator logs how many such pairs there are, since a clean split has none.
- Fewer than k non-excluded items: the remaining places hold excluded items
  with score -inf, which never count as hits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from llmrec.errors import ConfigError, LLMRecError
from llmrec.evaluation import metrics
from llmrec.evaluation.ranking import CSRRows, mask_in_place, topk_lowest_index_first

logger = logging.getLogger(__name__)

Scorer = Callable[[torch.Tensor], torch.Tensor]
Protocol = Literal["standard", "paper"]


class ScorerError(LLMRecError):
    """A scorer returned scores of the wrong shape or type, or NaN (e.g. a diverged model)."""


class Evaluator:
    """Ranks all items for the users that have ground truth and reports Recall/Precision/Hit/NDCG@k.

    `protocol="paper"` reports the LLMRec/LATTICE NDCG variant under the
    `ndcg@k` keys (see `metrics.ndcg_at_k_paper`); every result carries its
    protocol so numbers from the two are never mixed up.
    """

    def __init__(
        self,
        ground_truth: sp.csr_matrix,
        exclude: sp.csr_matrix | None,
        ks: Sequence[int] = (10, 20, 50),
        protocol: Protocol = "standard",
        batch_size: int = 2048,
        device: str | torch.device = "cpu",
    ) -> None:
        if protocol not in ("standard", "paper"):
            raise ConfigError(f"evaluation protocol must be 'standard' or 'paper', got {protocol!r}")
        if batch_size < 1:
            raise ConfigError(f"evaluation batch_size must be >= 1, got {batch_size}")
        n_users, n_items = ground_truth.shape
        if exclude is None:
            exclude = sp.csr_matrix((n_users, n_items), dtype=np.float32)
        if exclude.shape != ground_truth.shape:
            raise ConfigError(f"exclude matrix shape {exclude.shape} differs from ground truth {ground_truth.shape}")
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        if not self.ks or self.ks[0] < 1 or self.ks[-1] > n_items:
            raise ConfigError(f"evaluation ks must lie in 1..{n_items} (number of items), got {tuple(ks)}")
        self.protocol: Protocol = protocol
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.n_items = n_items

        truth = _clean_csr(ground_truth)
        excluded = _clean_csr(exclude)
        self._n_relevant = np.diff(truth.indptr).astype(np.int64)
        self.users = torch.as_tensor(np.flatnonzero(self._n_relevant > 0), dtype=torch.long)
        self._truth = CSRRows(truth)
        self._excluded = CSRRows(excluded)
        n_overlap = truth.multiply(excluded).nnz
        if n_overlap:
            logger.warning(
                "%d relevant (user, item) pairs are also excluded: they can never be hit but still "
                "count in |relevant|; check that the split's tables are disjoint",
                n_overlap,
            )

    def evaluate(self, scorer: Scorer) -> dict[str, float | int | str]:
        """Average each metric@k over the users with ground truth."""
        return self.evaluate_per_user(scorer)[0]

    def evaluate_per_user(self, scorer: Scorer) -> tuple[dict[str, float | int | str], dict[str, np.ndarray]]:
        """The averages of `evaluate`, and each metric per evaluated user (in `self.users` order).

        Per-user values let two models be compared by a paired test on the same users.
        """
        max_k = self.ks[-1]
        per_user: dict[str, list[np.ndarray]] = {name: [] for name in self._metric_names()}
        for users in self._batches(self.users, "evaluating"):
            values, items = self._rank(scorer, users, max_k)
            user_ids = users.numpy()
            hits = self._truth.contains(user_ids, items.cpu().numpy()) & (values > float("-inf")).cpu().numpy()
            n_relevant = self._n_relevant[user_ids]
            for name, value in self._metrics(hits, n_relevant).items():
                per_user[name].append(value)
        values = {name: np.concatenate(chunks) if chunks else np.zeros(0) for name, chunks in per_user.items()}
        # NaN, not 0, when no user has ground truth: there is nothing to average.
        result: dict[str, float | int | str] = {
            name: float(np.mean(array)) if len(array) else float("nan") for name, array in values.items()
        }
        result["n_users_evaluated"] = len(self.users)
        result["protocol"] = self.protocol
        return result, values

    def topk(
        self, scorer: Scorer, k: int, users: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (items [n_users, k], scores) on the CPU, excluded items masked.

        `users` defaults to the evaluated users (`self.users`, in that order);
        pass `torch.arange(n_users)` to rank for every user.
        """
        if not 1 <= k <= self.n_items:
            raise ConfigError(f"top-k k must lie in 1..{self.n_items}, got {k}")
        chosen = self.users if users is None else torch.as_tensor(users, dtype=torch.long).cpu()
        item_chunks, score_chunks = [], []
        for batch in self._batches(chosen, "ranking"):
            values, items = self._rank(scorer, batch, k)
            item_chunks.append(items.cpu())
            score_chunks.append(values.cpu())
        if not item_chunks:
            return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
        return torch.cat(item_chunks), torch.cat(score_chunks)

    def _batches(self, users: torch.Tensor, what: str):
        starts = range(0, len(users), self.batch_size)
        for start in tqdm(starts, desc=what, unit="batch", disable=None, leave=False):
            yield users[start : start + self.batch_size]

    def _rank(self, scorer: Scorer, users: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k on the device for one batch of users (a CPU tensor; the scorer gets it on the device)."""
        scores = self._checked_scores(scorer(users.to(self.device)), len(users))
        mask_in_place(scores, self._excluded, users.numpy())
        values, items = topk_lowest_index_first(scores, k)
        # topk ranks NaN above every number, so a NaN anywhere in a row shows up here
        # (one [batch, k] check instead of a pass over the whole score matrix).
        if torch.isnan(values).any():
            raise ScorerError("scorer returned NaN scores (a diverged model?)")
        return values, items

    def _checked_scores(self, scores: torch.Tensor, n_users: int) -> torch.Tensor:
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            raise ScorerError(f"scorer must return a float torch tensor, got {type(scores).__name__}")
        if tuple(scores.shape) != (n_users, self.n_items):
            raise ScorerError(f"scorer returned shape {tuple(scores.shape)}, expected ({n_users}, {self.n_items})")
        scores = scores.to(self.device)
        if scores._base is not None:
            # A view (e.g. of a stored score table): masking in place would corrupt the caller's data.
            scores = scores.clone()
        return scores

    def _metric_names(self) -> list[str]:
        return [f"{name}@{k}" for k in self.ks for name in ("recall", "precision", "hit", "ndcg")]

    def _metrics(self, hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        for k in self.ks:
            values[f"recall@{k}"] = metrics.recall_at_k(hits, n_relevant, k)
            values[f"precision@{k}"] = metrics.precision_at_k(hits, k)
            values[f"hit@{k}"] = metrics.hit_at_k(hits, k)
            values[f"ndcg@{k}"] = (
                metrics.ndcg_at_k_paper(hits, k) if self.protocol == "paper" else metrics.ndcg_at_k(hits, n_relevant, k)
            )
        return values


def _clean_csr(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Canonical CSR (sorted, no duplicates, no stored zeros): stored entries are the set members."""
    if not sp.issparse(matrix):
        raise ConfigError(f"expected a scipy sparse matrix, got {type(matrix).__name__}")
    clean = sp.csr_matrix(matrix, copy=True)
    clean.sum_duplicates()
    clean.eliminate_zeros()
    clean.sort_indices()
    return clean
