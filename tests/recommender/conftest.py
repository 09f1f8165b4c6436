"""Fixtures: a real ml-latest-small run directory, built once per session.

The tables follow docs/artifacts.md: ratings >= 4 as implicit feedback,
contiguous ids, a seeded 8:1:1 split of each user's interactions. They are
written here from the mirror's ratings.csv so these tests do not depend on the
`data prepare` command's options; `load_split` reads them like any run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


def write_ml_small_run(run_dir: Path, mirror: Path, seed: int = 0) -> Path:
    """Write train/val/test/items/users.parquet for ml-latest-small into `run_dir`."""
    source = mirror / "ml-latest-small"
    ratings = pd.read_csv(source / "ratings.csv")
    ratings = ratings[ratings["rating"] >= 4].reset_index(drop=True)
    movies = pd.read_csv(source / "movies.csv")
    movies = movies[movies["movieId"].isin(ratings["movieId"])].sort_values("movieId").reset_index(drop=True)
    user_ids = np.sort(ratings["userId"].unique())
    users = pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int64), "original_id": user_ids.astype(str)})
    items = pd.DataFrame({
        "item": np.arange(len(movies), dtype=np.int64),
        "original_id": movies["movieId"].astype(str),
        "title": movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True),
        "year": pd.array(movies["title"].str.extract(r"\((\d{4})\)\s*$")[0].astype(float), dtype="Int64"),
        "genres": movies["genres"],
    })
    interactions = pd.DataFrame({
        "user": np.searchsorted(user_ids, ratings["userId"]).astype(np.int64),
        "item": np.searchsorted(movies["movieId"].to_numpy(), ratings["movieId"]).astype(np.int64),
        "rating": ratings["rating"].astype(np.float32),
        "timestamp": ratings["timestamp"].astype(np.int64),
    })
    rng = np.random.default_rng(seed)
    interactions = interactions.iloc[rng.permutation(len(interactions))]
    position = interactions.groupby("user").cumcount().to_numpy()
    size = interactions.groupby("user")["item"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(size * 0.1)).astype(int)
    n_val = np.maximum(1, np.round(size * 0.1)).astype(int)
    split = np.where(position < n_test, "test", np.where(position < n_test + n_val, "val", "train"))
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        part = interactions[split == name].sort_values(["user", "item"]).reset_index(drop=True)
        part.to_parquet(run_dir / f"{name}.parquet", index=False)
    items.to_parquet(run_dir / "items.parquet", index=False)
    users.to_parquet(run_dir / "users.parquet", index=False)
    return run_dir


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Train on one CPU thread in these tests.

    Bit-exact comparisons (resume, test-set isolation) need it: how a parallel
    float reduction is split, and so its rounding, follows how many threads
    OpenMP hands out, which varies when the machine is busy. On a loaded
    2-core box one thread is also several times faster than two contending.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ml_small_source(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    """The prepared ml-latest-small tables (read-only: copy with `ml_small_run`)."""
    return write_ml_small_run(tmp_path_factory.mktemp("ml_small") / "run", data_mirror)


@pytest.fixture()
def ml_small_run(tmp_path: Path, ml_small_source: Path) -> Path:
    """A private copy of the prepared run that a test may add artifacts to or break."""
    target = tmp_path / "run"
    shutil.copytree(ml_small_source, target)
    return target


@pytest.fixture()
def ml_small_run_with_features(ml_small_run: Path) -> Path:
    """The run plus item text/attribute/image features, user profiles and augmented edges."""
    from .features import write_side_inputs

    write_side_inputs(ml_small_run)
    return ml_small_run
