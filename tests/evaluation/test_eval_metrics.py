"""Metrics against values computed by hand.

Hit matrix (top 5 of three users):
  user A: [1, 0, 1, 0, 0], |relevant| = 2  (fewer relevant items than k = 3 or 5)
  user B: [0, 0, 0, 0, 0], |relevant| = 3  (no hit)
  user C: [0, 1, 0, 0, 1], |relevant| = 4  (|relevant| > hits: paper and standard NDCG differ)
Discount of rank r is 1 / log2(r + 1): rank 1 -> 1, rank 2 -> 1/log2(3), rank 3 -> 1/2,
rank 4 -> 1/log2(5), rank 5 -> 1/log2(6).
"""

from __future__ import annotations

from math import log2

import numpy as np
import pytest
import torch

from llmrec.evaluation import metrics

HITS = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 1]])
N_RELEVANT = np.array([2, 3, 4])
D1, D2, D3, D4, D5 = 1.0, 1 / log2(3), 1 / log2(4), 1 / log2(5), 1 / log2(6)


def test_counting_metrics_match_hand_values() -> None:
    # k=1: A hits at rank 1; B, C miss.
    assert metrics.recall_at_k(HITS, N_RELEVANT, 1).tolist() == [1 / 2, 0, 0]
    assert metrics.precision_at_k(HITS, 1).tolist() == [1, 0, 0]
    assert metrics.hit_at_k(HITS, 1).tolist() == [1, 0, 0]
    # k=3: A has 2 hits of 2 relevant, C has 1 hit (rank 2) of 4.
    assert metrics.recall_at_k(HITS, N_RELEVANT, 3).tolist() == [2 / 2, 0, 1 / 4]
    assert metrics.precision_at_k(HITS, 3).tolist() == [2 / 3, 0, 1 / 3]
    assert metrics.hit_at_k(HITS, 3).tolist() == [1, 0, 1]
    # k=5: C gains its rank-5 hit: 2 of 4.
    assert metrics.recall_at_k(HITS, N_RELEVANT, 5).tolist() == [1, 0, 2 / 4]
    assert metrics.precision_at_k(HITS, 5).tolist() == [2 / 5, 0, 2 / 5]


def test_standard_ndcg_matches_hand_values() -> None:
    # k=1: A's rank-1 hit is ideal -> 1.
    assert metrics.ndcg_at_k(HITS, N_RELEVANT, 1).tolist() == pytest.approx([1, 0, 0], abs=1e-15)
    # k=3: A: DCG = D1 + D3; IDCG over min(2, 3) = 2 relevant = D1 + D2.
    #      C: DCG = D2;      IDCG over min(4, 3) = 3 relevant = D1 + D2 + D3.
    expected_3 = [(D1 + D3) / (D1 + D2), 0, D2 / (D1 + D2 + D3)]
    assert metrics.ndcg_at_k(HITS, N_RELEVANT, 3).tolist() == pytest.approx(expected_3, rel=1e-14)
    # k=5: C: DCG = D2 + D5; IDCG over min(4, 5) = 4 relevant = D1 + D2 + D3 + D4.
    expected_5 = [(D1 + D3) / (D1 + D2), 0, (D2 + D5) / (D1 + D2 + D3 + D4)]
    assert metrics.ndcg_at_k(HITS, N_RELEVANT, 5).tolist() == pytest.approx(expected_5, rel=1e-14)


def test_paper_ndcg_ignores_missed_relevant_items() -> None:
    # The ideal list is the hit list re-sorted: C found 2 hits in its top 5, so its
    # IDCG is D1 + D2 at every k >= 2, although it has 4 relevant items.
    expected_3 = [(D1 + D3) / (D1 + D2), 0, D2 / (D1 + D2)]
    expected_5 = [(D1 + D3) / (D1 + D2), 0, (D2 + D5) / (D1 + D2)]
    assert metrics.ndcg_at_k_paper(HITS, 3).tolist() == pytest.approx(expected_3, rel=1e-14)
    assert metrics.ndcg_at_k_paper(HITS, 5).tolist() == pytest.approx(expected_5, rel=1e-14)
    # k=1: C's ideal is one hit at rank 1 (D1) but it found none there -> 0.
    assert metrics.ndcg_at_k_paper(HITS, 1).tolist() == [1, 0, 0]
    # The variants differ exactly where |relevant| > hits (user C), and agree for A.
    standard = metrics.ndcg_at_k(HITS, N_RELEVANT, 5)
    paper = metrics.ndcg_at_k_paper(HITS, 5)
    assert paper[2] > standard[2]
    assert paper[0] == standard[0]


def test_torch_and_numpy_agree() -> None:
    hits_t, n_rel_t = torch.as_tensor(HITS), torch.as_tensor(N_RELEVANT)
    for k in (1, 3, 5):
        pairs = [
            (metrics.recall_at_k(hits_t, n_rel_t, k), metrics.recall_at_k(HITS, N_RELEVANT, k)),
            (metrics.precision_at_k(hits_t, k), metrics.precision_at_k(HITS, k)),
            (metrics.hit_at_k(hits_t, k), metrics.hit_at_k(HITS, k)),
            (metrics.ndcg_at_k(hits_t, n_rel_t, k), metrics.ndcg_at_k(HITS, N_RELEVANT, k)),
            (metrics.ndcg_at_k_paper(hits_t, k), metrics.ndcg_at_k_paper(HITS, k)),
        ]
        for from_torch, from_numpy in pairs:
            assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float64
            np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-14)


def test_k_outside_hit_matrix_is_rejected() -> None:
    with pytest.raises(ValueError, match="k=6"):
        metrics.precision_at_k(HITS, 6)
