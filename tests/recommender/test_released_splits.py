"""A release whose val.json is its test.json (LLMRec issue #31): refused for training, or validation carved from train."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from llmrec.data.prepare import PrepareConfig, prepare_run
from llmrec.errors import ArtifactError
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.runner import train_and_evaluate
from tests.data.fixtures import LLMREC_TRAIN, write_llmrec_release

TINY = TrainConfig(model="lightgcn", lr=1e-2, max_epochs=1, embedding_dim=8, device="cpu")


def test_training_refuses_val_identical_to_test(ml_small_run: Path) -> None:
    shutil.copyfile(ml_small_run / "test.parquet", ml_small_run / "val.parquet")
    assert len(pd.read_parquet(ml_small_run / "val.parquet")) > 0
    with pytest.raises(ArtifactError, match=r"val.parquet: identical to test.parquet.*--llmrec-val-from-train"):
        train_and_evaluate(ml_small_run, TINY)
    assert not (ml_small_run / "model" / "lightgcn" / "metrics.json").exists()
    # the paper protocol selects on test anyway (and says so): it stays available for such releases
    assert train_and_evaluate(ml_small_run, dataclasses.replace(TINY, protocol="paper"))["selection_split"] == "test"


def test_released_val_equal_to_test_is_refused_and_carving_from_train_works(tmp_path: Path) -> None:
    source = write_llmrec_release(tmp_path / "release")
    as_released = tmp_path / "as_released"
    prepare_run(as_released, PrepareConfig(dataset="llmrec-format", data_dir=str(source)))
    with pytest.raises(ArtifactError, match="identical to test.parquet"):
        train_and_evaluate(as_released, TINY)

    carved = tmp_path / "carved"
    prepare_run(carved, PrepareConfig(dataset="llmrec-format", data_dir=str(source), llmrec_val_from_train=0.34))
    split = {name: pd.read_parquet(carved / f"{name}.parquet") for name in ("train", "val", "test")}
    pairs = {name: set(zip(frame["user"], frame["item"])) for name, frame in split.items()}
    released_train = sum(len(items) for items in LLMREC_TRAIN.values())
    assert len(pairs["val"]) == 3  # one item of each of the 3 users with >= 2 train items
    assert len(pairs["train"]) + len(pairs["val"]) == released_train
    assert not pairs["val"] & pairs["test"] and not pairs["val"] & pairs["train"]
    # (the fixture's 6 items are too few to rank @50, so the carved split is checked, not trained on)
