"""The prepared run tables and the one function other stages use to read them.

`load_split(run_dir)` is the stable entry point for every stage after
`llmrec data prepare`: it reads `train/val/test/items/users.parquet` (each
checked against the sha256 the manifest recorded, `artifacts.read_run_parquet`),
checks their columns against the contract in `docs/artifacts.md`, and checks the ids
are the contiguous `0..n-1` ids prepare assigned, so a model never indexes an
embedding table with a stale or foreign id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmrec.artifacts import ITEMS, SPLIT_FILES, USERS, read_run_parquet
from llmrec.errors import ArtifactError

SPLITS = tuple(SPLIT_FILES)  # ("train", "val", "test")
INTERACTION_COLUMNS = ["user", "item", "rating", "timestamp"]
ITEM_COLUMNS = ["item", "original_id", "title", "year", "genres"]
USER_COLUMNS = ["user", "original_id"]
DEMOGRAPHIC_COLUMNS = ("age", "gender", "occupation")


@dataclass(frozen=True)
class RunTables:
    """The interactions of each split plus item and user metadata of one run.

    `users` may carry demographics (`age`, `gender`, `occupation`): they are
    ground truth for audits of LLM-written profiles, not model inputs.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    n_users: int
    n_items: int

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def _check_contiguous(path: Path, frame: pd.DataFrame, column: str) -> None:
    ids = frame[column].to_numpy()
    if len(ids) and not (ids == range(len(ids))).all():
        raise ArtifactError(f"{path}: column '{column}' must be 0..{len(ids) - 1} in order")


def _check_range(path: Path, frame: pd.DataFrame, column: str, upper: int) -> None:
    ids = frame[column]
    if len(ids) and (ids.min() < 0 or ids.max() >= upper):
        raise ArtifactError(
            f"{path}: column '{column}' has ids outside 0..{upper - 1} "
            f"(min {ids.min()}, max {ids.max()}); rerun `llmrec data prepare`"
        )


def load_split(run_dir: Path | str) -> RunTables:
    """Read a prepared run's tables, checking columns and id ranges."""
    run_dir = Path(run_dir)
    items_path, users_path = run_dir / ITEMS, run_dir / USERS
    items = read_run_parquet(run_dir, ITEMS, ITEM_COLUMNS)
    users = read_run_parquet(run_dir, USERS, USER_COLUMNS)
    _check_contiguous(items_path, items, "item")
    _check_contiguous(users_path, users, "user")
    n_users, n_items = len(users), len(items)
    splits = {}
    for name in SPLITS:
        path = run_dir / SPLIT_FILES[name]
        frame = read_run_parquet(run_dir, SPLIT_FILES[name], INTERACTION_COLUMNS)
        _check_range(path, frame, "user", n_users)
        _check_range(path, frame, "item", n_items)
        splits[name] = frame
    return RunTables(items=items, users=users, n_users=n_users, n_items=n_items, **splits)
