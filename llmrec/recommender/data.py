"""Everything the recommender reads from a run directory, validated once.

Models never parse files: this module turns the run's parquet/npy artifacts
(docs/artifacts.md) into integer arrays and float32 feature matrices, and
refuses bad inputs at the boundary with one-line `ArtifactError`s that name
the file; every file is checked against the sha256 the manifest recorded
(`artifacts.open_run_artifact`). Optional artifacts (LLM features, augmented
edges, image features) may be absent; that is how the ablations and the plain
baselines run. One that a stage recorded and that is gone is damage, not an
ablation: reading it fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrec import artifacts
from llmrec.artifacts import load_run_npy, read_run_parquet, run_artifact_digest, run_artifact_present
from llmrec.data.tables import SPLITS, load_split
from llmrec.errors import ArtifactError

logger = logging.getLogger(__name__)

# feature name -> (path inside the run, which node type its rows describe)
FEATURE_FILES: dict[str, tuple[str, str]] = {
    "item_text": (artifacts.ITEM_TEXT_EMBEDDINGS, "item"),
    "item_attributes": (artifacts.ITEM_ATTRIBUTES_EMBEDDINGS, "item"),
    "user_profiles": (artifacts.USER_PROFILES_EMBEDDINGS, "user"),
    "image": (artifacts.IMAGE_EMBEDDINGS, "item"),
}


@dataclass
class RunData:
    """The run's interactions as (user, item) int64 pairs, plus optional side inputs."""

    run_dir: Path
    n_users: int
    n_items: int
    interactions: dict[str, np.ndarray]  # split -> int64 array (n, 2) of (user, item)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 (rows, d)
    augmented_triples: np.ndarray = field(  # int64 (n, 3): user, liked, disliked
        default_factory=lambda: np.zeros((0, 3), dtype=np.int64)
    )
    input_digests: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    @property
    def train(self) -> np.ndarray:
        return self.interactions["train"]


def _check_ids(path: Path, column: str, ids: np.ndarray, bound: int) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() >= bound):
        raise ArtifactError(
            f"{path}: column '{column}' has ids outside 0..{bound - 1} "
            f"(min {ids.min()}, max {ids.max()}); rerun `llmrec data prepare`"
        )


def _read_feature(run_dir: Path, relative: str, expected_rows: int, node_type: str) -> np.ndarray:
    path = run_dir / relative
    array = load_run_npy(run_dir, relative)
    if array.ndim != 2:
        raise ArtifactError(f"{path}: expected a 2-d array (rows x dim), got shape {array.shape}")
    if array.shape[0] != expected_rows:
        raise ArtifactError(
            f"{path}: has {array.shape[0]} rows but the run has {expected_rows} {node_type}s"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ArtifactError(f"{path}: expected float32 values, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad_rows = int((~np.isfinite(array)).any(axis=1).sum())
        raise ArtifactError(f"{path}: {bad_rows} row(s) hold NaN or infinite values")
    return array


def _read_augmented(run_dir: Path, n_users: int, n_items: int) -> np.ndarray:
    path = run_dir / artifacts.AUGMENTED_EDGES
    frame = read_run_parquet(run_dir, artifacts.AUGMENTED_EDGES, columns=["user", "liked", "disliked"])
    complete = frame[["user", "liked", "disliked"]].dropna()
    if len(complete) < len(frame):
        logger.warning("%s: ignoring %d row(s) with a missing id", path, len(frame) - len(complete))
    triples = complete.to_numpy(dtype=np.int64)
    _check_ids(path, "user", triples[:, 0], n_users)
    _check_ids(path, "liked", triples[:, 1], n_items)
    _check_ids(path, "disliked", triples[:, 2], n_items)
    return triples


def load_run_data(run_dir: Path | str) -> RunData:
    """Read and validate a run's split, optional LLM features and augmented edges."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: run directory not found (run `llmrec data prepare` first)")
    tables = load_split(run_dir)
    n_users, n_items = tables.n_users, tables.n_items
    interactions = {
        name: tables.split(name)[["user", "item"]].to_numpy(dtype=np.int64) for name in SPLITS
    }
    if len(interactions["train"]) == 0:
        raise ArtifactError(f"{run_dir / artifacts.TRAIN}: no training interactions")
    inputs = [artifacts.USERS, artifacts.ITEMS, *(artifacts.SPLIT_FILES[name] for name in SPLITS)]

    features: dict[str, np.ndarray] = {}
    for name, (relative, node_type) in FEATURE_FILES.items():
        if run_artifact_present(run_dir, relative):
            features[name] = _read_feature(run_dir, relative, n_users if node_type == "user" else n_items, node_type)
            inputs.append(relative)
    augmented = np.zeros((0, 3), dtype=np.int64)
    if run_artifact_present(run_dir, artifacts.AUGMENTED_EDGES):
        augmented = _read_augmented(run_dir, n_users, n_items)
        inputs.append(artifacts.AUGMENTED_EDGES)
    logger.info(
        "run %s: %d users, %d items, %s interactions; features %s; %d augmented triples",
        run_dir, n_users, n_items, {k: len(v) for k, v in interactions.items()},
        {k: v.shape[1] for k, v in features.items()} or "none", len(augmented),
    )
    digests = {relative: run_artifact_digest(run_dir, relative) for relative in inputs}  # hashed once, when read
    return RunData(run_dir, n_users, n_items, interactions, features, augmented, digests)
