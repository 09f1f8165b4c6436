"""Ranking metrics on a 0/1 hit matrix, vectorised over users.

Every function takes `hits` of shape [n_users, K] (row u, column i = 1 when the
item a model ranked at position i for user u is relevant; K >= k) and returns
one value per user, so callers choose how to average (the evaluator averages
over evaluated users, as the papers do). Inputs may be numpy arrays or torch
tensors; the result has the same type, in float64.

Two NDCG variants exist because published LLMRec/LATTICE/NGCF numbers use a
non-standard one: its ideal DCG re-sorts the *hit list itself* (all hits
found in the top max(K) moved to the front), instead of assuming min(|relevant|,
k) relevant items could have been ranked first. That makes the ideal smaller
whenever relevant items were missed, which inflates NDCG. `ndcg_at_k` is the
standard definition; `ndcg_at_k_paper` exists only to compare with the papers.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _as_float(hits: Array, k: int) -> Array:
    if k < 1 or k > hits.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the hit matrix width {hits.shape[1]}")
    if isinstance(hits, torch.Tensor):
        return hits[:, :k].to(torch.float64)
    return np.asarray(hits)[:, :k].astype(np.float64)


def _like(hits: Array, values: np.ndarray) -> Array:
    """`values` as the same array type (and device) as `hits`."""
    if isinstance(hits, torch.Tensor):
        return torch.as_tensor(values, dtype=torch.float64, device=hits.device)
    return values


def _log_ranks(hits: Array, k: int) -> Array:
    """log2(rank + 1) for ranks 1..k (the log2(i + 2) of 0-based positions)."""
    return _like(hits, np.log2(np.arange(2, k + 2, dtype=np.float64)))


def _dcg(relevance: Array, k: int) -> Array:
    # One formula for DCG and IDCG, written as the reference code writes it
    # (divide, then sum the row), so numpy results match it bit for bit.
    return (relevance / _log_ranks(relevance, k)).sum(1)


def _prefix_ones(hits: Array, n_ones: Array, k: int) -> Array:
    """Rows of k relevance values whose first n_ones[u] entries are 1: an ideal ranking."""
    positions = _like(hits, np.arange(k, dtype=np.float64))
    if isinstance(hits, torch.Tensor):
        return (positions[None, :] < n_ones.to(torch.float64)[:, None]).to(torch.float64)
    return (positions[None, :] < np.asarray(n_ones, dtype=np.float64)[:, None]).astype(np.float64)


def hits_at_k(hits: Array, k: int) -> Array:
    """Number of relevant items in the top k."""
    return _as_float(hits, k).sum(1)


def recall_at_k(hits: Array, n_relevant: Array, k: int) -> Array:
    """hits@k / |relevant| (users must have at least one relevant item)."""
    n_rel = n_relevant.to(torch.float64) if isinstance(n_relevant, torch.Tensor) else np.asarray(n_relevant, dtype=np.float64)
    return hits_at_k(hits, k) / n_rel


def precision_at_k(hits: Array, k: int) -> Array:
    """hits@k / k."""
    return hits_at_k(hits, k) / k


def hit_at_k(hits: Array, k: int) -> Array:
    """1 when any of the top k is relevant, else 0."""
    any_hit = hits_at_k(hits, k) > 0
    return any_hit.to(torch.float64) if isinstance(any_hit, torch.Tensor) else any_hit.astype(np.float64)


def ndcg_at_k(hits: Array, n_relevant: Array, k: int) -> Array:
    """Standard NDCG@k: IDCG ranks min(|relevant|, k) relevant items first."""
    found = _as_float(hits, k)
    n_ideal = n_relevant.clamp(max=k) if isinstance(n_relevant, torch.Tensor) else np.minimum(n_relevant, k)
    return _safe_ratio(_dcg(found, k), _dcg(_prefix_ones(found, n_ideal, k), k))


def ndcg_at_k_paper(hits: Array, k: int) -> Array:
    """NDCG@k as the LLMRec/LATTICE/NGCF code computes it (for comparison with papers only).

    IDCG is the DCG of the hit list re-sorted so every hit found in the whole
    list (the top max(K) the code ranks, usually 50) comes first, cut at k.
    |relevant| never enters, so missed relevant items do not lower the ideal.
    Pass the full top-max(K) hit matrix, not one cut at k.
    """
    found = _as_float(hits, k)
    hits_in_list = hits_at_k(hits, hits.shape[1])
    return _safe_ratio(_dcg(found, k), _dcg(_prefix_ones(found, hits_in_list, k), k))


def _safe_ratio(dcg: Array, idcg: Array) -> Array:
    """dcg / idcg with 0 where idcg is 0 (no hit, or no relevant item)."""
    if isinstance(dcg, torch.Tensor):
        return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-300), torch.zeros_like(dcg))
    out = np.zeros_like(dcg)
    np.divide(dcg, idcg, out=out, where=idcg > 0)
    return out
