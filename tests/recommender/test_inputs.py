"""Bad run directories fail with one-line ArtifactErrors that name the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.errors import ArtifactError
from llmrec.recommender.data import load_run_data


def test_missing_required_table(ml_small_run: Path) -> None:
    (ml_small_run / "val.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"val\.parquet: missing"):
        load_run_data(ml_small_run)


def test_embedding_rows_must_match_item_count(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "item_text.npy"
    np.save(path, np.load(path)[:-3])
    with pytest.raises(ArtifactError, match=r"item_text\.npy: has \d+ rows but the run has \d+ items"):
        load_run_data(ml_small_run_with_features)


def test_user_profile_rows_must_match_user_count(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "user_profiles.npy"
    np.save(path, np.vstack([np.load(path), np.zeros((1, np.load(path).shape[1]), np.float32)]))
    with pytest.raises(ArtifactError, match=r"user_profiles\.npy: has \d+ rows but the run has \d+ users"):
        load_run_data(ml_small_run_with_features)


def test_nan_features_are_refused(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "item_attributes.npy"
    values = np.load(path)
    values[[3, 7], 0] = np.nan
    np.save(path, values)
    with pytest.raises(ArtifactError, match=r"item_attributes\.npy: 2 row\(s\) hold NaN"):
        load_run_data(ml_small_run_with_features)


def test_object_arrays_are_not_unpickled(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "image.npy"
    np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match=r"image\.npy: not a numeric"):
        load_run_data(ml_small_run_with_features)


def test_augmented_edges_with_unknown_items(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "augmented_edges.parquet"
    edges = pd.read_parquet(path)
    edges.loc[0, "disliked"] = 10**6
    edges.to_parquet(path, index=False)
    with pytest.raises(ArtifactError, match=r"augmented_edges\.parquet: column 'disliked' has ids outside"):
        load_run_data(ml_small_run_with_features)


def test_cli_reports_one_line_and_writes_nothing(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "item_text.npy"
    np.save(path, np.load(path)[:10])
    result = subprocess.run(
        [sys.executable, "-m", "llmrec", "train", str(ml_small_run_with_features), "--epochs", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "item_text.npy" in result.stderr and "Traceback" not in result.stderr
    assert not (ml_small_run_with_features / "model" / "llmrec" / "checkpoint.pt").exists()


def test_evaluate_without_a_trained_model(ml_small_run: Path) -> None:
    from llmrec.recommender.runner import evaluate_saved

    with pytest.raises(ArtifactError, match=r"checkpoint\.pt: missing"):
        evaluate_saved(ml_small_run, "llmrec", device="cpu")
