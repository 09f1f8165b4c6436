"""`llmrec data prepare`: raw dataset -> implicit feedback -> contiguous ids -> split.

Everything is computed in memory first and written only when it all
succeeded, so a bad input never leaves a half-prepared run. A rerun with the
same source files and options is recognised from the manifest and skipped.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.artifacts import (
    ITEMS,
    SPLIT_FILES,
    USERS,
    read_manifest,
    record_stage,
    save_npy,
    stage_is_current,
    write_parquet,
)
from llmrec.config import as_dict, write_effective_config
from llmrec.data.config import PrepareConfig
from llmrec.data.raw import RawDataset
from llmrec.data.registry import get_spec
from llmrec.data.sources import locate
from llmrec.data.split import TEST, TRAIN, VAL, assign_splits
from llmrec.data.tables import DEMOGRAPHIC_COLUMNS, SPLITS
from llmrec.errors import DataError

logger = logging.getLogger(__name__)

STAGE = "prepare"


@dataclass
class PreparedTables:
    """Everything `prepare` writes, held in memory until it is all computed."""

    tables: dict[str, pd.DataFrame]  # file name -> frame
    arrays: dict[str, np.ndarray]  # run-relative .npy path -> array
    stats: dict[str, Any]


def stage_params(config: PrepareConfig) -> dict[str, Any]:
    """The options that decide the output (where the files were read from does not)."""
    params = as_dict(config)
    params.pop("data_dir")
    return params


def _dedupe_and_threshold(raw: RawDataset, config: PrepareConfig, stats: dict[str, Any]) -> pd.DataFrame:
    frame = raw.interactions
    # Keep one interaction per (user, item): the latest, as a re-rating replaces the old one.
    deduped = frame.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
    stats["duplicates_dropped"] = len(frame) - len(deduped)
    if config.keep_all_ratings or not raw.explicit_ratings:
        stats["below_min_rating_dropped"] = 0
        return deduped
    kept = deduped[deduped["rating"] >= config.min_rating]
    stats["below_min_rating_dropped"] = len(deduped) - len(kept)
    return kept


def kcore_filter(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than `k` interactions."""
    if k <= 1:
        return frame
    while True:
        user_counts = frame["user_id"].map(frame["user_id"].value_counts())
        item_counts = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return frame
        frame = frame[keep.to_numpy()]


def _describe_filters(config: PrepareConfig, raw: RawDataset) -> str:
    parts = []
    if raw.explicit_ratings and not config.keep_all_ratings:
        parts.append(f"rating >= {config.min_rating}")
    if config.kcore > 1:
        parts.append(f"{config.kcore}-core")
    return ", ".join(parts) or "none"


def _items_table(raw: RawDataset, item_ids: np.ndarray, stats: dict[str, Any]) -> pd.DataFrame:
    meta = raw.items.set_index("item_id").reindex(item_ids)
    missing = meta["title"].isna()
    stats["items_without_metadata"] = int(missing.sum())
    if missing.any():
        logger.warning("%d rated items have no metadata row; their title/genres are empty", int(missing.sum()))
    return pd.DataFrame(
        {
            "item": np.arange(len(item_ids), dtype=np.int64),
            "original_id": item_ids.astype(str),
            "title": meta["title"].fillna("").astype(str).to_numpy(),
            "year": pd.array(meta["year"].to_numpy(), dtype="Int64"),
            "genres": meta["genres"].fillna("").astype(str).to_numpy(),
        }
    )


def _users_table(raw: RawDataset, user_ids: np.ndarray) -> pd.DataFrame:
    users = pd.DataFrame(
        {"user": np.arange(len(user_ids), dtype=np.int64), "original_id": user_ids.astype(str)}
    )
    demographics = [c for c in DEMOGRAPHIC_COLUMNS if c in raw.users.columns]
    if demographics:
        meta = raw.users.set_index("user_id").reindex(user_ids)
        for column in demographics:
            users[column] = meta[column].to_numpy()
        users = users.astype({"age": "Int64"} if "age" in demographics else {})
    return users


def _split_frames(interactions: pd.DataFrame, labels: np.ndarray) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, code in zip(SPLITS, (TRAIN, VAL, TEST)):
        part = interactions[labels == code]
        frames[SPLIT_FILES[name]] = part.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    return frames


def _split_stats(frames: dict[str, pd.DataFrame], n_users: int, n_items: int) -> dict[str, Any]:
    train_items = set(frames[SPLIT_FILES["train"]]["item"].unique())
    stats: dict[str, Any] = {}
    for name in SPLITS:
        frame = frames[SPLIT_FILES[name]]
        stats[f"{name}_interactions"] = len(frame)
        stats[f"{name}_users"] = int(frame["user"].nunique())
        if name != "train":
            stats[f"{name}_cold_items"] = int(len(set(frame["item"].unique()) - train_items))
    total = sum(len(f) for f in frames.values())
    stats["density"] = total / (n_users * n_items) if n_users and n_items else 0.0
    return stats


def build_tables(raw: RawDataset, config: PrepareConfig) -> PreparedTables:
    """Filter, re-index and split `raw` in memory (no files touched)."""
    if raw.fixed_split is not None:
        return _build_fixed(raw, config)
    stats: dict[str, Any] = {
        "dataset": raw.name,
        "raw_interactions": len(raw.interactions),
        "raw_users": int(raw.interactions["user_id"].nunique()),
        "raw_items": len(raw.items),
    }
    kept = _dedupe_and_threshold(raw, config, stats)
    before_kcore = len(kept)
    kept = kcore_filter(kept, config.kcore)
    stats["kcore_dropped"] = before_kcore - len(kept)
    if kept.empty:
        raise DataError(
            f"{raw.name}: no interactions left after filtering ({_describe_filters(config, raw)}); "
            f"lower --min-rating / --kcore or pass --keep-all-ratings"
        )
    user_ids = np.unique(kept["user_id"].to_numpy())
    item_ids = np.unique(kept["item_id"].to_numpy())
    interactions = pd.DataFrame(
        {
            "user": np.searchsorted(user_ids, kept["user_id"].to_numpy()).astype(np.int64),
            "item": np.searchsorted(item_ids, kept["item_id"].to_numpy()).astype(np.int64),
            "rating": kept["rating"].to_numpy(dtype=np.float32),
            "timestamp": kept["timestamp"].to_numpy(dtype=np.int64),
        }
    )
    labels = assign_splits(
        interactions["user"].to_numpy(),
        interactions["item"].to_numpy(),
        interactions["timestamp"].to_numpy(),
        method=config.split,
        val_ratio=config.val_ratio,
        test_ratio=config.test_ratio,
        min_user_interactions=config.min_user_interactions,
        seed=config.seed,
    )
    sizes = np.bincount(interactions["user"].to_numpy())
    stats.update(interactions=len(interactions), users=len(user_ids), items=len(item_ids))
    stats["users_train_only"] = int((sizes < config.min_user_interactions).sum())
    tables = _split_frames(interactions, labels)
    tables[ITEMS] = _items_table(raw, item_ids, stats)
    tables[USERS] = _users_table(raw, user_ids)
    stats.update(_split_stats(tables, len(user_ids), len(item_ids)))
    if raw.notes:
        stats["notes"] = list(raw.notes)
    return PreparedTables(tables=tables, arrays=dict(raw.features), stats=stats)


def _build_fixed(raw: RawDataset, config: PrepareConfig) -> PreparedTables:
    """Keep a released split as is: ids are already contiguous, nothing is filtered."""
    if config.kcore > 1:
        raise DataError(f"{raw.name}: --kcore would change the released split; drop it for this dataset")
    assert raw.fixed_split is not None
    n_items = len(raw.items)
    n_users = int(raw.users["user_id"].max()) + 1 if len(raw.users) else 0
    tables = {}
    for name in SPLITS:
        part = raw.fixed_split[name]
        tables[SPLIT_FILES[name]] = pd.DataFrame(
            {
                "user": part["user_id"].to_numpy(dtype=np.int64),
                "item": part["item_id"].to_numpy(dtype=np.int64),
                "rating": np.ones(len(part), dtype=np.float32),
                "timestamp": np.zeros(len(part), dtype=np.int64),
            }
        ).sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    item_ids = raw.items["item_id"].to_numpy()
    stats: dict[str, Any] = {"dataset": raw.name, "users": n_users, "items": n_items}
    tables[ITEMS] = _items_table(raw, item_ids, stats)
    tables[USERS] = _users_table(raw, raw.users["user_id"].to_numpy())
    stats["interactions"] = sum(len(tables[SPLIT_FILES[s]]) for s in SPLITS)
    stats.update(_split_stats(tables, n_users, n_items))
    stats["val_equals_test"] = bool(tables[SPLIT_FILES["val"]].equals(tables[SPLIT_FILES["test"]]))
    stats["notes"] = list(raw.notes)
    return PreparedTables(tables={**tables, **raw.extra_tables}, arrays=dict(raw.features), stats=stats)


def _write(run_dir: Path, prepared: PreparedTables) -> list[str]:
    outputs = []
    for name, frame in prepared.tables.items():
        write_parquet(run_dir / name, frame)
        outputs.append(name)
    for rel, array in prepared.arrays.items():
        save_npy(run_dir / rel, array)
        outputs.append(rel)
    return outputs


@dataclass(frozen=True)
class PrepareResult:
    run_dir: Path
    skipped: bool
    stats: dict[str, Any]
    source: str


def prepare_run(run_dir: Path | str, config: PrepareConfig) -> PrepareResult:
    """Prepare `config.dataset` into `run_dir`; a no-op when it is already current."""
    run_dir = Path(run_dir)
    spec = get_spec(config.dataset)
    located = locate(spec, Path(config.data_dir) if config.data_dir else None)
    raw = spec.load(located.root, config)
    for note in raw.notes:
        logger.warning("%s: %s", raw.name, note)
    params = stage_params(config)
    if run_dir.is_dir() and stage_is_current(run_dir, STAGE, params, raw.sources):
        logger.info("prepare: %s is up to date (same sources and options); nothing to do", run_dir)
        entry_stats = _recorded_stats(run_dir)
        return PrepareResult(run_dir, skipped=True, stats=entry_stats, source=located.origin)
    prepared = build_tables(raw, config)
    prepared.stats["source"] = located.origin
    existed = run_dir.exists()
    previous_outputs = _recorded_outputs(run_dir) if existed else set()
    try:
        outputs = _write(run_dir, prepared)
        record_stage(run_dir, STAGE, params, raw.sources, outputs, prepared.stats)
        # A re-prepare that no longer writes a file (e.g. a release imported
        # before without --trust-pickle now) must not leave the old one for
        # training to pick up as if it belonged to this data.
        for stale in sorted(previous_outputs - set(outputs)):
            (run_dir / stale).unlink(missing_ok=True)
            logger.warning("prepare: removed %s, written by the previous prepare but not by this one", stale)
        write_effective_config(run_dir, config)
    except BaseException:
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    logger.info(
        "prepare: %s -> %s: %d users, %d items, train/val/test %d/%d/%d",
        raw.name, run_dir, prepared.stats["users"], prepared.stats["items"],
        prepared.stats["train_interactions"], prepared.stats["val_interactions"],
        prepared.stats["test_interactions"],
    )  # fmt: skip
    return PrepareResult(run_dir, skipped=False, stats=prepared.stats, source=located.origin)


def _recorded_outputs(run_dir: Path) -> set[str]:
    entry = read_manifest(run_dir)["stages"].get(STAGE)
    return set(entry["outputs"]) if entry else set()


def _recorded_stats(run_dir: Path) -> dict[str, Any]:
    return dict(read_manifest(run_dir)["stages"][STAGE]["stats"])
