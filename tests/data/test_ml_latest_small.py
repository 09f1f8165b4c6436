"""Preparation of the real ml-latest-small from the offline mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.artifacts import read_manifest
from llmrec.data import PrepareConfig, load_split, prepare_run
from llmrec.data.registry import get_spec

RATINGS_SHA256 = "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"
MOVIES_SHA256 = "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    run = tmp_path_factory.mktemp("ml_small") / "run"
    prepare_run(run, PrepareConfig(seed=7))
    return run


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"].tolist(), frame["item"].tolist()))


def test_raw_counts_and_manifest_checksums(prepared: Path) -> None:
    stage = read_manifest(prepared)["stages"]["prepare"]
    assert stage["stats"]["raw_interactions"] == 100_836
    assert stage["stats"]["raw_users"] == 610
    assert stage["stats"]["raw_items"] == 9_742
    assert stage["inputs"] == {"ratings.csv": RATINGS_SHA256, "movies.csv": MOVIES_SHA256}
    assert stage["stats"]["source"] == "mirror"
    assert set(stage["outputs"]) == {f"{n}.parquet" for n in ("train", "val", "test", "items", "users")}


def test_split_is_disjoint_and_covers_the_filtered_interactions(prepared: Path, data_mirror: Path) -> None:
    tables = load_split(prepared)
    splits = [_pairs(tables.split(name)) for name in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])
    # Recompute the positives straight from the mirror file and map them through the id tables.
    ratings = pd.read_csv(data_mirror / "ml-latest-small" / "ratings.csv")
    positives = ratings[ratings["rating"] >= 4]
    user_of = dict(zip(tables.users["original_id"].astype(int), tables.users["user"]))
    item_of = dict(zip(tables.items["original_id"].astype(int), tables.items["item"]))
    expected = {(user_of[u], item_of[i]) for u, i in zip(positives["userId"], positives["movieId"])}
    assert splits[0] | splits[1] | splits[2] == expected
    assert tables.n_users == positives["userId"].nunique()
    assert tables.n_items == positives["movieId"].nunique()


def test_split_ratios_and_train_only_users(prepared: Path) -> None:
    tables = load_split(prepared)
    stats = read_manifest(prepared)["stages"]["prepare"]["stats"]
    sizes = pd.concat([tables.train, tables.val, tables.test]).groupby("user").size()
    small_users = set(sizes[sizes < 3].index)
    assert stats["users_train_only"] == len(small_users)
    assert not small_users & set(tables.val["user"]) and not small_users & set(tables.test["user"])
    evaluable = sizes[sizes >= 3]
    assert set(tables.test["user"]) == set(evaluable.index) == set(tables.val["user"])
    assert set(tables.train["user"]) == set(sizes.index)
    share = len(tables.test) / sizes.sum()
    assert 0.09 < share < 0.11


def test_items_keep_title_year_genres(prepared: Path) -> None:
    items = load_split(prepared).items
    toy_story = items[items["original_id"] == "1"].iloc[0]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["year"] == 1995
    assert toy_story["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert items["item"].tolist() == list(range(len(items)))
    assert items["year"].dtype == "Int64"


def test_same_seed_same_split_other_seed_differs(prepared: Path, tmp_path: Path) -> None:
    same = tmp_path / "same"
    other = tmp_path / "other"
    prepare_run(same, PrepareConfig(seed=7))
    prepare_run(other, PrepareConfig(seed=8))
    first, again, different = load_split(prepared), load_split(same), load_split(other)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first.split(name), again.split(name))
    assert _pairs(first.test) != _pairs(different.test)


def test_rerun_is_a_no_op(prepared: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}
    with caplog.at_level("INFO"):
        result = prepare_run(prepared, PrepareConfig(seed=7))
    assert result.skipped
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == before


def test_changed_option_reruns(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(seed=7))
    result = prepare_run(run, PrepareConfig(seed=7, keep_all_ratings=True))
    assert not result.skipped
    assert result.stats["interactions"] == 100_836
    assert load_split(run).n_users == 610


def test_temporal_split_holds_out_each_users_latest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(split="temporal"))
    tables = load_split(run)
    last_train = tables.train.groupby("user")["timestamp"].max()
    first_val = tables.val.groupby("user")["timestamp"].min()
    last_val = tables.val.groupby("user")["timestamp"].max()
    first_test = tables.test.groupby("user")["timestamp"].min()
    users = first_test.index
    assert (last_train[users] <= first_val[users]).all()
    assert (last_val[users] <= first_test[users]).all()


def test_kcore_leaves_every_user_and_item_with_k(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(kcore=10))
    tables = load_split(run)
    everything = pd.concat([tables.train, tables.val, tables.test])
    assert everything.groupby("user").size().min() >= 10
    assert everything.groupby("item").size().min() >= 10
    assert np.array_equal(np.sort(everything["item"].unique()), np.arange(tables.n_items))


def test_registry_pins_the_mirror_checksums() -> None:
    assert get_spec("ml-latest-small").member_sha256 == {
        "ratings.csv": RATINGS_SHA256,
        "movies.csv": MOVIES_SHA256,
    }
