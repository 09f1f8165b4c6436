"""Candidate items for the edge augmentation: the base recommender's top-k per user.

The original LLMRec took `topk(U @ I.T, 10)` of a trained MMSSL/LATTICE
without masking training items, so the LLM was often offered movies the user
had already watched (and its "liked" pick became a duplicate edge). Here the
base model is LightGCN trained on the run's training split, training items are
excluded before the top-k, and the result is an artifact with its own manifest
stage, so a rerun with the same inputs is a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec import artifacts

logger = logging.getLogger(__name__)

STAGE = "candidates"
_USER_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class CandidatesResult:
    """Where the candidates are, whether this call computed them, and the base model's validation metrics."""

    path: Path
    skipped: bool
    val_metrics: dict[str, Any]


def _as_numpy(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    return np.asarray(matrix, dtype=np.float32)


def top_k_unseen(
    user_embeddings: np.ndarray, item_embeddings: np.ndarray, seen: Any, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the `k` highest-scoring items not in `seen` (a CSR user x item matrix).

    Returns (items, scores), each `n_users x k`, best first; equal scores rank
    the lower item id first, also when a tie straddles the k-th place (the
    evaluator's rule, `llmrec.evaluation.ranking`), so the result is
    deterministic. Scores are computed in user batches so memory stays at
    `batch x n_items`.
    """
    import torch

    from llmrec.evaluation.ranking import CSRRows, mask_in_place, topk_lowest_index_first

    n_users, n_items = user_embeddings.shape[0], item_embeddings.shape[0]
    k = min(k, n_items)
    excluded = CSRRows(sp.csr_matrix(seen, dtype=np.float32))
    items = torch.from_numpy(np.ascontiguousarray(item_embeddings, dtype=np.float32))
    top_items = np.empty((n_users, k), dtype=np.int64)
    top_scores = np.empty((n_users, k), dtype=np.float32)
    for start in range(0, n_users, _USER_BATCH):
        stop = min(start + _USER_BATCH, n_users)
        scores = torch.from_numpy(np.ascontiguousarray(user_embeddings[start:stop], dtype=np.float32)) @ items.T
        mask_in_place(scores, excluded, np.arange(start, stop))
        # the evaluator's rule (ties: lower item id first), also across the k-th place
        values, chosen = topk_lowest_index_first(scores, k)
        top_items[start:stop] = chosen.numpy()
        top_scores[start:stop] = values.numpy()
    return top_items, top_scores


def generate_candidates(
    run_dir: Path | str,
    k: int,
    *,
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    options: dict[str, Any] | None = None,
) -> CandidatesResult:
    """Train LightGCN on the training split and write each user's top-k unseen items.

    `epochs=None` means the model's default, or - when this run already has
    current candidates for the same `k` and `seed` - whatever they were made with;
    `options=None` likewise. `options` are further `TrainConfig` options of the base LightGCN; `llmrec run`
    passes its LightGCN baseline's, so the baseline reuses this fit (it is kept in
    `model/_fits/`) instead of training the same model twice.
    """
    from llmrec.data.tables import load_split
    from llmrec.evaluation import interactions_to_csr

    run_dir = Path(run_dir)
    if k < 2:
        from llmrec.errors import ConfigError

        raise ConfigError(f"candidates: k must be >= 2 (a liked and a disliked pick), got {k}")
    params: dict[str, Any] = {"k": k, "seed": seed, "epochs": epochs, "model": "lightgcn"}
    if options:
        params["options"] = dict(options)
    inputs = {artifacts.TRAIN: artifacts.run_artifact_digest(run_dir, artifacts.TRAIN)}
    # "any epochs" / "any options": reuse candidates already made with the same k and seed
    recorded = artifacts.read_manifest(run_dir)["stages"].get(STAGE, {}).get("params", {})
    same_request = recorded.get("k") == k and recorded.get("seed") == seed
    if epochs is None:
        params["epochs"] = recorded.get("epochs") if same_request else None
    if options is None and same_request and "options" in recorded:
        params["options"] = recorded["options"]
    if artifacts.stage_is_current(run_dir, STAGE, params, inputs):
        logger.info("candidates: %s is up to date", run_dir / artifacts.CANDIDATES)
        stats = artifacts.read_manifest(run_dir)["stages"][STAGE]["stats"]
        return CandidatesResult(run_dir / artifacts.CANDIDATES, skipped=True, val_metrics=stats.get("val_metrics", {}))

    from llmrec.recommender.api import train_base_model
    from llmrec.recommender.trainer import fit_record_path

    tables = load_split(run_dir)
    base: dict[str, Any] = {**params.get("options", {}), "model": "lightgcn", "seed": seed, "device": device}
    if params["epochs"] is not None:
        base["epochs"] = params["epochs"]
    result = train_base_model(run_dir, record=fit_record_path(run_dir, "lightgcn", seed), **base)
    seen = interactions_to_csr(tables.train, tables.n_users, tables.n_items, name=str(run_dir / artifacts.TRAIN))
    items, scores = top_k_unseen(_as_numpy(result.user_embeddings), _as_numpy(result.item_embeddings), seen, k)
    n_users, width = items.shape
    frame = pd.DataFrame({
        "user": np.repeat(np.arange(n_users, dtype=np.int64), width),
        "rank": np.tile(np.arange(width, dtype=np.int64), n_users),
        "item": items.reshape(-1),
        "score": scores.reshape(-1),
    })  # fmt: skip
    frame = frame[np.isfinite(frame["score"])]  # users who have seen almost every item
    artifacts.write_parquet(run_dir / artifacts.CANDIDATES, frame)
    val_metrics = json.loads(json.dumps(dict(result.val_metrics or {}), default=str))
    artifacts.record_stage(run_dir, STAGE, params, inputs, [artifacts.CANDIDATES], {"val_metrics": val_metrics, "users": n_users})
    logger.info("candidates: top-%d unseen items for %d users (base LightGCN validation %s)", width, n_users, val_metrics)
    return CandidatesResult(run_dir / artifacts.CANDIDATES, skipped=False, val_metrics=val_metrics)
