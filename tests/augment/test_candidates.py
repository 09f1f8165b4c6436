"""Candidates: the base LightGCN's top-k per user, never a training item, computed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmrec import artifacts
from llmrec.augment.candidates import generate_candidates, top_k_unseen
from llmrec.data.tables import load_split


def test_top_k_unseen_masks_seen_items_and_breaks_ties_by_id() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[1, 0], [2, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]))
    top, scores = top_k_unseen(users, items, seen, k=3)
    assert top.tolist() == [[0, 4, 2], [2, 4, 0]]
    assert scores.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]


def test_top_k_unseen_keeps_the_lowest_ids_when_a_tie_straddles_the_cut() -> None:
    """The evaluator's tie rule: among equal scores at the k-th place, the lowest item ids make the cut."""
    users = np.ones((2, 1), dtype=np.float32)
    items = np.ones((50, 1), dtype=np.float32)  # 49 items tie at score 1 ...
    items[49] = 2.0  # ... behind one clear winner
    seen = sp.csr_matrix(([1.0], ([1], [0])), shape=(2, 50))  # user 1 has seen item 0
    top, scores = top_k_unseen(users, items, seen, k=3)
    assert top.tolist() == [[49, 0, 1], [49, 1, 2]]
    assert scores.tolist() == [[2.0, 1.0, 1.0], [2.0, 1.0, 1.0]]


def test_generate_candidates_excludes_training_items_and_reruns_as_no_op(fresh_run: Path) -> None:
    first = generate_candidates(fresh_run, k=7, epochs=2)
    assert not first.skipped
    frame = artifacts.read_parquet(fresh_run / "candidates.parquet", ["user", "rank", "item", "score"])
    tables = load_split(fresh_run)
    assert frame.groupby("user").size().eq(7).all() and frame["user"].nunique() == tables.n_users
    assert frame.groupby("user")["rank"].apply(list).map(lambda r: r == list(range(7))).all()
    pairs = set(zip(tables.train["user"], tables.train["item"]))
    assert not any((u, i) in pairs for u, i in zip(frame["user"], frame["item"]))
    assert frame.groupby("user")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    digest = artifacts.sha256_file(fresh_run / "candidates.parquet")
    assert generate_candidates(fresh_run, k=7, epochs=2).skipped
    assert generate_candidates(fresh_run, k=7).skipped  # epochs unspecified: the current candidates do
    assert artifacts.sha256_file(fresh_run / "candidates.parquet") == digest


def test_candidates_made_with_job_options_are_reused_by_a_call_without_options(fresh_run: Path) -> None:
    """`llmrec run` makes them with its LightGCN baseline's options; the augment stage then asks without any."""
    first = generate_candidates(fresh_run, k=5, epochs=2, options={"embedding_dim": 16, "engine": "torch"})
    assert not first.skipped
    assert (fresh_run / "model" / "_fits" / "lightgcn_seed0.pt").is_file()  # kept for the LightGCN baseline
    assert generate_candidates(fresh_run, k=5, epochs=2).skipped
    assert not generate_candidates(fresh_run, k=5, epochs=2, options={"embedding_dim": 8, "engine": "torch"}).skipped
