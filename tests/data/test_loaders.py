"""ml-100k, ml-1m, csv and llmrec-format loaders on files in the published formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.artifacts import load_npy, read_manifest, read_parquet
from llmrec.data import PrepareConfig, load_split, prepare_run
from llmrec.errors import DataError

from . import fixtures


def _positives_by_original(run: Path) -> set[tuple[str, str]]:
    tables = load_split(run)
    every = pd.concat([tables.train, tables.val, tables.test])
    users = tables.users["original_id"].to_numpy()[every["user"]]
    items = tables.items["original_id"].to_numpy()[every["item"]]
    return set(zip(users, items))


EXPECTED_POSITIVES = {(str(u), str(i)) for u, i, r, _ in fixtures.RATINGS if r >= 4}


def test_ml_100k_latin1_genre_flags_and_demographics(tmp_path: Path) -> None:
    source = fixtures.write_ml_100k(tmp_path / "ml-100k")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="ml-100k", data_dir=str(source)))
    tables = load_split(run)
    assert _positives_by_original(run) == EXPECTED_POSITIVES
    leon = tables.items.set_index("original_id").loc["20"]
    assert (leon["title"], leon["year"], leon["genres"]) == ("Léon: The Professional", 1994, "Crime|Drama|Thriller")
    users = tables.users.set_index("original_id")
    assert list(tables.users.columns) == ["user", "original_id", "age", "gender", "occupation"]
    assert (users.loc["1", "age"], users.loc["1", "gender"], users.loc["1", "occupation"]) == (24, "M", "technician")
    assert "6" not in users.index  # no positive interaction left
    stage = read_manifest(run)["stages"]["prepare"]
    assert set(stage["inputs"]) == {"u.data", "u.item", "u.user"}
    assert stage["stats"]["source"] == "data-dir"
    assert stage["stats"]["users_train_only"] == 1  # user 5: two positives


def test_ml_1m_double_colon_and_occupation_codes(tmp_path: Path) -> None:
    source = fixtures.write_ml_1m(tmp_path / "ml-1m")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="ml-1m", data_dir=str(source)))
    tables = load_split(run)
    assert _positives_by_original(run) == EXPECTED_POSITIVES
    amelie = tables.items.set_index("original_id").loc["40"]
    assert (amelie["title"], amelie["year"], amelie["genres"]) == ("Amélie", 2001, "Comedy|Romance")
    users = tables.users.set_index("original_id")
    assert users.loc["5", "occupation"] == "K-12 student"
    assert users.loc["1", "occupation"] == "technician/engineer"
    assert users.loc["2", "age"] == 50 and users.loc["2", "gender"] == "F"


def test_ml_1m_found_in_the_cache(tmp_path: Path, isolated_home: Path) -> None:
    fixtures.write_ml_1m(isolated_home / "datasets" / "ml-1m")
    result = prepare_run(tmp_path / "run", PrepareConfig(dataset="ml-1m"))
    assert result.source == "cache"


def test_csv_with_mapped_columns_delimiter_and_latin1(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["who;what;stars\n"] + [f"{u};{i};{r}\n" for u, i, r, _ in fixtures.RATINGS]
    (folder / "events.txt").write_text("".join(lines), encoding="latin-1")
    meta = ["id;name\n"] + [f"{m};{title}\n" for m, (title, _) in fixtures.MOVIES.items()]
    (folder / "films.txt").write_text("".join(meta), encoding="latin-1")
    config = PrepareConfig(
        dataset="csv", data_dir=str(folder), csv_interactions="events.txt", csv_items="films.txt",
        csv_user_column="who", csv_item_column="what", csv_rating_column="stars", csv_timestamp_column="",
        csv_item_id_column="id", csv_title_column="name", csv_genres_column="", csv_delimiter=";",
        encoding="latin-1",
    )  # fmt: skip
    run = tmp_path / "run"
    prepare_run(run, config)
    assert _positives_by_original(run) == EXPECTED_POSITIVES
    items = load_split(run).items.set_index("original_id")
    assert items.loc["20", "title"] == "Léon: The Professional" and items.loc["20", "genres"] == ""
    assert set(read_manifest(run)["stages"]["prepare"]["inputs"]) == {"events.txt", "films.txt"}


def test_csv_defaults_read_movielens_layout_with_crlf(tmp_path: Path) -> None:
    folder = fixtures.write_movielens_csv(tmp_path / "mine")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="csv", data_dir=str(folder), keep_all_ratings=True))
    assert len(_positives_by_original(run)) == len(fixtures.RATINGS)


def test_llmrec_release_keeps_its_split_and_copies_features(tmp_path: Path) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    tables = load_split(run)
    train = {(str(u), i) for u, i in zip(tables.train["user"], tables.train["item"])}
    assert train == {(u, i) for u, items in fixtures.LLMREC_TRAIN.items() for i in items}
    assert set(zip(tables.test["user"], tables.test["item"])) == {(0, 3), (1, 4), (2, 1)}
    assert (tables.n_users, tables.n_items) == (3, 6)
    assert tables.items.loc[1, "title"] == "Léon: The Professional" and tables.items.loc[1, "year"] == 1994
    text = load_npy(run / "embeddings" / "item_text.npy")
    assert text.dtype == np.float32 and text.shape == (6, 8)
    np.testing.assert_allclose(text, np.load(source / "text_feat.npy"), rtol=1e-6)
    assert load_npy(run / "embeddings" / "image.npy").shape == (6, 4)
    stats = read_manifest(run)["stages"]["prepare"]["stats"]
    assert stats["val_equals_test"] is True
    assert "embeddings/item_text.npy" in read_manifest(run)["stages"]["prepare"]["outputs"]


def test_llmrec_release_netflix_layout(tmp_path: Path) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release", netflix=True, with_features=False)
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    items = load_split(run).items
    assert items.loc[2, "title"] == "Heat" and items.loc[2, "year"] == 1992
    assert not (run / "embeddings").exists()


class _Tripwire:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_llmrec_pickles_are_not_loaded_without_trust(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release")
    marker = tmp_path / "unpickled"
    (source / "train_mat").write_bytes(pickle.dumps(_Tripwire(marker)))
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    assert not marker.exists()
    assert "--trust-pickle" in caplog.text and "train_mat" in caplog.text
    assert "train_mat" not in read_manifest(run)["stages"]["prepare"]["inputs"]
    with pytest.raises(DataError, match="train_mat: expected a scipy sparse"):
        prepare_run(tmp_path / "run2", PrepareConfig(dataset="llmrec-format", data_dir=str(source), trust_pickle=True))
    assert marker.exists()  # loaded only once trusted
    assert not (tmp_path / "run2").exists()


def test_llmrec_trusted_pickles_are_checked_and_imported(tmp_path: Path) -> None:
    from scipy import sparse

    source = fixtures.write_llmrec_release(tmp_path / "release")
    rows = [int(u) for u, items in fixtures.LLMREC_TRAIN.items() for _ in items]
    cols = [i for items in fixtures.LLMREC_TRAIN.values() for i in items]
    train_mat = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(3, 6))
    (source / "train_mat").write_bytes(pickle.dumps(train_mat))
    (source / "augmented_sample_dict").write_bytes(pickle.dumps({0: {0: 4, 1: 5}, 1: {0: 0, 1: 9}}))
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source), trust_pickle=True))
    edges = read_parquet(run / "augmented_edges.parquet")
    assert edges[["user", "liked", "disliked"]].values.tolist() == [[0, 4, 5]]  # item 9 is out of range
    assert {"train_mat", "augmented_sample_dict"} <= set(read_manifest(run)["stages"]["prepare"]["inputs"])
