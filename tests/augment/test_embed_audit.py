"""Embeddings (shapes, dtype, zero rows + masks for missing answers, cache hits) and the profile audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec import artifacts
from llmrec.audit import audit_profiles
from llmrec.data.tables import load_split
from llmrec.embed import embed_run, item_texts
from llmrec.embed_config import EmbedConfig
from llmrec.errors import ArtifactError


def _write_llm_tables(run_dir: Path) -> None:
    """Hand-written stand-ins for validated LLM answers (the pipeline tests cover producing them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    strings = pa.list_(pa.string())
    pq.write_table(pa.table({
        "user": pa.array([0, 2], pa.int64()), "age": pa.array([30, None], pa.int64()),
        "gender": pa.array(["male", "female"]), "liked_genres": pa.array([["Drama"], []], strings),
        "disliked_genres": pa.array([[], ["Horror"]], strings), "liked_directors": pa.array([["Nolan"], []], strings),
        "country": pa.array(["USA", None]), "language": pa.array(["English", None]),
        "model": pa.array(["m", "m"]), "template_hash": pa.array(["h", "h"]),
    }), run_dir / "user_profiles.parquet")  # fmt: skip
    pd.DataFrame({"item": [1, 3], "director": ["John Lasseter", None], "country": ["USA", "France"],
                  "language": ["English", "French"], "model": "m", "template_hash": "h"}).to_parquet(
        run_dir / "item_attributes.parquet", index=False)  # fmt: skip


def test_embeddings_shapes_masks_and_cache(fresh_run: Path, tmp_path: Path) -> None:
    tables = load_split(fresh_run)
    bare = embed_run(fresh_run, EmbedConfig(device="cpu"))  # before any augmentation: zero rows, empty masks
    assert bare.encoded == tables.n_items
    assert not artifacts.load_npy(fresh_run / "embeddings/user_profiles.npy").any()
    assert not artifacts.load_npy(fresh_run / "embeddings/item_attributes_mask.npy").any()

    _write_llm_tables(fresh_run)
    first = embed_run(fresh_run, EmbedConfig(device="cpu"))  # new inputs: reruns, item texts come from the cache
    assert not first.skipped and first.encoded == 4 and first.cached >= tables.n_items
    item_text = artifacts.load_npy(fresh_run / "embeddings/item_text.npy")
    attributes = artifacts.load_npy(fresh_run / "embeddings/item_attributes.npy")
    attribute_mask = artifacts.load_npy(fresh_run / "embeddings/item_attributes_mask.npy")
    profiles = artifacts.load_npy(fresh_run / "embeddings/user_profiles.npy")
    profile_mask = artifacts.load_npy(fresh_run / "embeddings/user_profiles_mask.npy")
    assert item_text.shape == attributes.shape == (tables.n_items, 384)
    assert profiles.shape == (tables.n_users, 384)
    assert item_text.dtype == attributes.dtype == profiles.dtype == np.float32
    assert np.flatnonzero(attribute_mask).tolist() == [1, 3] and np.flatnonzero(profile_mask).tolist() == [0, 2]
    assert not attributes[~attribute_mask].any() and not profiles[~profile_mask].any()
    assert (np.linalg.norm(attributes[attribute_mask], axis=1) > 0.5).all()
    assert (np.linalg.norm(item_text, axis=1) > 0.5).all()
    # Rows line up with item ids: the same texts encoded directly give the same vectors.
    from sentence_transformers import SentenceTransformer

    from llmrec.bundled import minilm_path

    direct = SentenceTransformer(str(minilm_path()), device="cpu").encode(item_texts(tables.items)[:3])
    np.testing.assert_allclose(item_text[:3], direct, atol=1e-5)

    assert embed_run(fresh_run, EmbedConfig(device="cpu")).skipped  # unchanged inputs: no-op
    other = tmp_path / "other"
    shutil.copytree(fresh_run, other)
    shutil.rmtree(other / "embeddings")
    again = embed_run(other, EmbedConfig(device="cpu"))  # outputs gone: recomputed, every text from the cache
    assert not again.skipped and again.encoded == 0 and again.cached > 0
    np.testing.assert_array_equal(artifacts.load_npy(other / "embeddings/item_text.npy"), item_text)


def test_audit_refuses_a_dataset_without_demographics(fresh_run: Path) -> None:
    _write_llm_tables(fresh_run)
    with pytest.raises(ArtifactError, match="ml-latest-small has no user demographics"):
        audit_profiles(fresh_run)


def test_audit_against_demographics(fresh_run: Path) -> None:
    # ml-100k/ml-1m cannot be redistributed, so ground truth in their format (age in years,
    # gender M/F) is written into this run's users table by hand.
    _write_llm_tables(fresh_run)
    users = pd.read_parquet(fresh_run / "users.parquet")
    users["age"] = pd.array([33] + [20] * (len(users) - 1), dtype="Int64")
    users["gender"] = ["M", "M"] + ["M"] * (len(users) - 2)
    users.to_parquet(fresh_run / "users.parquet", index=False)
    prepare = artifacts.read_manifest(fresh_run)["stages"]["prepare"]  # the edited table stands in for prepare's
    artifacts.record_stage(fresh_run, "prepare", prepare["params"], prepare["inputs"], list(prepare["outputs"]),
                           prepare["stats"])  # fmt: skip
    audit = audit_profiles(fresh_run)
    age, gender = audit.fields
    # user 0: LLM 30 vs truth 33 -> both 25-34 (correct); user 2: LLM gave no age.
    assert (age.compared, age.accuracy, age.majority_class, age.majority_accuracy) == (1, 1.0, "25-34", 1.0)
    # user 0 male == M, user 2 female != M; majority "male" is right for both.
    assert (gender.compared, gender.accuracy, gender.majority_accuracy) == (2, 0.5, 1.0)
    assert "gender" in audit.describe() and (fresh_run / "audit_profiles.json").is_file()
