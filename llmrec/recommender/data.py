"""Everything the recommender reads from a run directory, validated once.

Models never parse files: this module turns the run's parquet/npy artifacts
(docs/artifacts.md) into integer arrays and float32 feature matrices, and
refuses bad inputs at the boundary with one-line `ArtifactError`s that name
the file. Optional artifacts (LLM features, augmented edges, image features)
may be absent; that is how the ablations and the plain baselines run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrec import artifacts
from llmrec.artifacts import load_npy, read_parquet, sha256_file
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


def _read_feature(path: Path, expected_rows: int, node_type: str) -> np.ndarray:
    array = load_npy(path)
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


def _read_augmented(path: Path, n_users: int, n_items: int) -> np.ndarray:
    frame = read_parquet(path, columns=["user", "liked", "disliked"])
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
        path = run_dir / relative
        if path.is_file():
            features[name] = _read_feature(path, n_users if node_type == "user" else n_items, node_type)
            inputs.append(relative)
    augmented = np.zeros((0, 3), dtype=np.int64)
    if (run_dir / artifacts.AUGMENTED_EDGES).is_file():
        augmented = _read_augmented(run_dir / artifacts.AUGMENTED_EDGES, n_users, n_items)
        inputs.append(artifacts.AUGMENTED_EDGES)
    logger.info(
        "run %s: %d users, %d items, %s interactions; features %s; %d augmented triples",
        run_dir, n_users, n_items, {k: len(v) for k, v in interactions.items()},
        {k: v.shape[1] for k, v in features.items()} or "none", len(augmented),
    )
    digests = {relative: sha256_file(run_dir / relative) for relative in inputs}
    return RunData(run_dir, n_users, n_items, interactions, features, augmented, digests)
