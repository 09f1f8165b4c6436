"""Fixtures of the augmentation tests: a small real MovieLens run, shared per session.

The run is ml-latest-small restricted to a handful of users (their real
ratings and the real movie table), prepared by the real `prepare` stage, so
prompts, candidates and embeddings see genuine titles, years and genres while
every test stays within seconds of CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

#: ml-latest-small users kept in the subset (their ratings >= 4 make the run).
SUBSET_USERS = 8


@pytest.fixture(scope="session")
def small_dataset_dir(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ml-latest-small folder holding the ratings of the first SUBSET_USERS users with 40-150 ratings."""
    source = data_mirror / "ml-latest-small"
    ratings = pd.read_csv(source / "ratings.csv")
    counts = ratings.groupby("userId").size()
    keep = counts[(counts >= 40) & (counts <= 150)].index[:SUBSET_USERS]
    folder = tmp_path_factory.mktemp("ml_subset") / "ml-latest-small"
    folder.mkdir()
    ratings[ratings["userId"].isin(keep)].to_csv(folder / "ratings.csv", index=False)
    shutil.copy(source / "movies.csv", folder / "movies.csv")
    return folder


@pytest.fixture(scope="session")
def prepared_run(small_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared subset run (read-only: tests copy it with `fresh_run`)."""
    from llmrec.data.prepare import PrepareConfig, prepare_run

    run_dir = tmp_path_factory.mktemp("prepared") / "run"
    prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small", data_dir=str(small_dataset_dir)))
    return run_dir


@pytest.fixture
def fresh_run(prepared_run: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared run that a test may write into."""
    target = tmp_path / "run"
    shutil.copytree(prepared_run, target)
    return target
