"""Importing an original LLMRec release, pickles included, into a run `llmrec train` reads.

The fixture release is written here in the original formats (read from the
original `main.py`): real pickles of dicts of numpy arrays / lists of floats
with int keys, as `main.py` indexed them (`dict[i]` for int i). The quirky
string keys like `"'123'"` belong to `augmented_user_profiling_dict`, which the
original never loaded for training, so an int-keyed file is the faithful one
and a string key is refused.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from llmrec.artifacts import load_npy, read_manifest, read_parquet
from llmrec.data import PrepareConfig, prepare_run
from llmrec.errors import DataError

from . import fixtures

N_USERS, N_ITEMS, ADA_DIM = 3, 6, 1536
# user -> {0: liked, 1: disliked}; user 1's item 9 is outside the 6 items and is dropped.
SAMPLES = {0: {0: 4, 1: 5}, 1: {0: 0, 1: 9}, 2: {0: 3, 1: 2}}
# attribute -> items that have a vector; item 5 has no LLM attribute, item 4 only two of three.
ATTRIBUTE_ITEMS = {
    "year": range(6), "title": range(6),
    "director": range(5), "country": range(4), "language": range(5),
}  # fmt: skip
PROFILED_USERS = (0, 2)  # user 1 has no profile embedding


class _Tripwire:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _dump(path: Path, obj: Any) -> None:
    path.write_bytes(pickle.dumps(obj))


def _user_vectors(dim: int = ADA_DIM) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    return {user: rng.normal(size=dim) for user in PROFILED_USERS}  # ada-002 vectors, float64


def _attribute_vectors(dim: int = ADA_DIM) -> dict[str, dict[int, list[float]]]:
    rng = np.random.default_rng(2)
    return {name: {item: rng.normal(size=dim).tolist() for item in items} for name, items in ATTRIBUTE_ITEMS.items()}


def _write_release(folder: Path, *, derived_tripwire: Path | None = None) -> Path:
    """A Netflix-layout release with every pickle main.py reads."""
    source = fixtures.write_llmrec_release(folder, netflix=True)
    rows = [int(u) for u, items in fixtures.LLMREC_TRAIN.items() for _ in items]
    cols = [i for items in fixtures.LLMREC_TRAIN.values() for i in items]
    _dump(source / "train_mat", sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(N_USERS, N_ITEMS)))
    _dump(source / "augmented_sample_dict", SAMPLES)
    _dump(source / "augmented_user_init_embedding", _user_vectors())
    _dump(source / "augmented_atttribute_embedding_dict", _attribute_vectors())
    _dump(source / "augmented_user_profiling_dict", {"'0'": "{'age': 30, 'gender': 'female'}"})
    if derived_tripwire is not None:
        for name in ("augmented_user_init_embedding_final", "augmented_total_embed_dict"):
            _dump(source / name, _Tripwire(derived_tripwire))
    return source


def _expected_attributes(vectors: dict[str, dict[int, list[float]]]) -> np.ndarray:
    expected = np.zeros((N_ITEMS, ADA_DIM), dtype=np.float64)
    for item in range(N_ITEMS):
        present = [vectors[name][item] for name in ("director", "country", "language") if item in vectors[name]]
        if present:
            expected[item] = np.mean(present, axis=0)
    return expected


def _trusted(source: Path) -> PrepareConfig:
    return PrepareConfig(dataset="llmrec-format", data_dir=str(source), trust_pickle=True)


def test_trusted_release_becomes_the_runs_features_and_edges(tmp_path: Path) -> None:
    marker = tmp_path / "derived_unpickled"
    source = _write_release(tmp_path / "release", derived_tripwire=marker)
    run = tmp_path / "run"
    prepare_run(run, _trusted(source))

    profiles = load_npy(run / "embeddings" / "user_profiles.npy")
    assert profiles.dtype == np.float32 and profiles.shape == (N_USERS, ADA_DIM)
    users = _user_vectors()
    np.testing.assert_allclose(profiles[0], users[0], rtol=1e-6)
    np.testing.assert_allclose(profiles[2], users[2], rtol=1e-6)
    assert not profiles[1].any()  # no profile -> zero row

    attributes = load_npy(run / "embeddings" / "item_attributes.npy")
    assert attributes.dtype == np.float32 and attributes.shape == (N_ITEMS, ADA_DIM)
    np.testing.assert_allclose(attributes, _expected_attributes(_attribute_vectors()), rtol=1e-5, atol=1e-6)
    assert not attributes[5].any() and attributes[4].any()

    edges = read_parquet(run / "augmented_edges.parquet")
    assert list(edges.columns) == ["user", "liked", "disliked", "model", "template_hash"]
    assert edges[["user", "liked", "disliked"]].values.tolist() == [[0, 4, 5], [2, 3, 2]]
    assert (edges["model"] == "llmrec-release").all()
    assert not (run / "release").exists()

    assert not marker.exists()  # main.py rebuilt the stacked re-dumps; they are never unpickled
    entry = read_manifest(run)["stages"]["prepare"]
    assert {"augmented_sample_dict", "augmented_user_init_embedding", "augmented_atttribute_embedding_dict"} <= set(
        entry["inputs"]
    )
    assert "augmented_total_embed_dict" not in entry["inputs"]
    assert {"augmented_edges.parquet", "embeddings/user_profiles.npy", "embeddings/item_attributes.npy"} <= set(
        entry["outputs"]
    )
    notes = "\n".join(entry["stats"]["notes"])
    assert "1 user(s) without a profile get a zero row" in notes
    assert "1 item(s) without any get a zero row" in notes and "['year', 'title'] left out" in notes
    assert "2 pairs; 1 dropped" in notes
    assert "not imported (no converter): ['augmented_user_profiling_dict']" in notes


def test_stacked_redumps_are_used_when_shipped_alone(tmp_path: Path) -> None:
    """MovieLens keys, any embedding size: the {attr -> array} and (users x d) forms main.py wrote."""
    source = fixtures.write_llmrec_release(tmp_path / "release")
    rng = np.random.default_rng(3)
    user_matrix = rng.normal(size=(N_USERS, 16))
    tables = {name: rng.normal(size=(N_ITEMS, 16)) for name in ("title", "genre", "director", "country", "language")}
    _dump(source / "augmented_user_init_embedding_final", user_matrix)
    _dump(source / "augmented_total_embed_dict", tables)
    run = tmp_path / "run"
    prepare_run(run, _trusted(source))
    np.testing.assert_allclose(load_npy(run / "embeddings" / "user_profiles.npy"), user_matrix, rtol=1e-6)
    expected = (tables["director"] + tables["country"] + tables["language"]) / 3
    np.testing.assert_allclose(load_npy(run / "embeddings" / "item_attributes.npy"), expected, rtol=1e-5, atol=1e-6)
    assert not (run / "augmented_edges.parquet").exists()


def test_without_trust_nothing_is_unpickled_and_the_run_still_prepares(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release", netflix=True)
    marker = tmp_path / "unpickled"
    for name in ("augmented_sample_dict", "augmented_user_init_embedding", "augmented_atttribute_embedding_dict"):
        _dump(source / name, _Tripwire(marker))
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    assert not marker.exists()
    assert "pass --trust-pickle" in caplog.text and "augmented_user_init_embedding" in caplog.text
    assert (run / "train.parquet").is_file() and (run / "embeddings" / "item_text.npy").is_file()
    for name in ("augmented_edges.parquet", "embeddings/user_profiles.npy", "embeddings/item_attributes.npy"):
        assert not (run / name).exists()


def _nan_user(source: Path) -> None:
    users = _user_vectors()
    users[2][7] = np.nan
    _dump(source / "augmented_user_init_embedding", users)


def _short_country_vector(source: Path) -> None:
    vectors = _attribute_vectors()
    vectors["country"][2] = vectors["country"][2][:-1]
    _dump(source / "augmented_atttribute_embedding_dict", vectors)


def _string_user_key(source: Path) -> None:
    _dump(source / "augmented_user_init_embedding", {"'0'": np.zeros(ADA_DIM), 1: np.zeros(ADA_DIM)})


def _user_out_of_range(source: Path) -> None:
    _dump(source / "augmented_user_init_embedding", {0: np.zeros(ADA_DIM), 3: np.zeros(ADA_DIM)})


def _attribute_sizes_differ(source: Path) -> None:
    vectors = _attribute_vectors()
    vectors["language"] = {item: [0.5] * 8 for item in range(N_ITEMS)}
    _dump(source / "augmented_atttribute_embedding_dict", vectors)


def _redump_rows_short(source: Path) -> None:
    (source / "augmented_atttribute_embedding_dict").unlink()
    _dump(source / "augmented_total_embed_dict", {"director": np.zeros((N_ITEMS - 1, ADA_DIM))})


def _no_llm_attribute(source: Path) -> None:
    vectors = _attribute_vectors()
    _dump(source / "augmented_atttribute_embedding_dict", {"year": vectors["year"], "title": vectors["title"]})


def _string_item_ids_in_samples(source: Path) -> None:
    _dump(source / "augmented_sample_dict", {0: {0: "4", 1: "5"}})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_nan_user, r"augmented_user_init_embedding: key 2: vector holds NaN"),
        (_short_country_vector, r"_dict: attribute 'country': key 2: expected a vector of 1536 floats"),
        (_string_user_key, r"augmented_user_init_embedding: key \"'0'\" is not an integer user index"),
        (_user_out_of_range, r"augmented_user_init_embedding: user index 3 is outside 0..2"),
        (_attribute_sizes_differ, r"attribute 'language': vectors have 8 dims; 'director' has 1536"),
        (_redump_rows_short, r"total_embed_dict: attribute 'director': has 5 rows; expected one per item \(6\)"),
        (_no_llm_attribute, r"none of the LLM attributes \['director', 'country', 'language'\]"),
        (_string_item_ids_in_samples, r"augmented_sample_dict: user 0: item ids must be integers"),
    ],
)  # fmt: skip
def test_bad_release_pickles_fail_cleanly_and_keep_the_previous_run(tmp_path: Path, damage: Any, message: str) -> None:
    source = _write_release(tmp_path / "release")
    run = tmp_path / "run"
    prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))  # a good untrusted run
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    damage(source)
    with pytest.raises(DataError, match=message):
        prepare_run(run, _trusted(source))
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(DataError, match=message):
        prepare_run(tmp_path / "fresh", _trusted(source))
    assert not (tmp_path / "fresh").exists()


def test_recommender_reads_the_imported_run(tmp_path: Path) -> None:
    """The contract: `load_run_data` (what `llmrec train` reads) sees every imported input."""
    from llmrec.recommender import data as data_module  # an import error here is a failure, not a skip
    run = tmp_path / "run"
    prepare_run(run, _trusted(_write_release(tmp_path / "release")))
    data = data_module.load_run_data(run)
    shapes = {name: matrix.shape for name, matrix in data.features.items()}
    assert shapes == {
        "item_text": (N_ITEMS, 8), "image": (N_ITEMS, 4),
        "user_profiles": (N_USERS, ADA_DIM), "item_attributes": (N_ITEMS, ADA_DIM),
    }  # fmt: skip
    assert data.augmented_triples.tolist() == [[0, 4, 5], [2, 3, 2]]


def test_cli_flag_imports_the_pickles(tmp_path: Path, isolated_home: Path) -> None:
    source = _write_release(tmp_path / "release")
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", "from llmrec.cli import main; main()", "data", "prepare", "llmrec-format",
         "--data-dir", str(source), "--run", str(run), "--trust-pickle"],
        capture_output=True, text=True, env={**os.environ, "LLMREC_HOME": str(isolated_home)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_npy(run / "embeddings" / "user_profiles.npy").shape == (N_USERS, ADA_DIM)
    assert len(read_parquet(run / "augmented_edges.parquet")) == 2


def test_reprepare_without_trust_removes_the_previously_imported_files(tmp_path: Path) -> None:
    """Training must not pick up a release's augmentation that the current prepare did not import."""
    source = _write_release(tmp_path / "release")
    run = tmp_path / "run"
    prepare_run(run, _trusted(source))
    imported = [run / "augmented_edges.parquet", run / "embeddings" / "user_profiles.npy"]
    assert all(path.is_file() for path in imported)
    prepare_run(run, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    assert not any(path.exists() for path in imported)
    assert (run / "train.parquet").is_file()
