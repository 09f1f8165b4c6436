"""`model_variant = "original"`: the original LLMRec model's parts, checked against dense references by hand."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from llmrec.recommender.data import load_run_data
from llmrec.recommender.graph import TorchSparseEngine, build_engine
from llmrec.recommender.factory import build_model
from llmrec.recommender.models import FeatureOptions
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.original import OriginalLLMRecModel, RowNormalisedEngine, keep_hardest
from llmrec.recommender.runner import train_and_evaluate
from llmrec.recommender.trainer import _EpochSteps

CPU = torch.device("cpu")
# 3 users x 4 items; user degrees 2, 1, 3 and item degrees 2, 2, 1, 1
PAIRS = np.array([[0, 0], [0, 1], [1, 1], [2, 0], [2, 2], [2, 3]], dtype=np.int64)


def _dense_operators() -> tuple[torch.Tensor, torch.Tensor]:
    """A_ui = D_u^-1/2 R and A_iu = D_i^-1/2 R^T, as the original's csr_norm(mean_flag=True) builds them."""
    rating = torch.zeros(3, 4)
    rating[PAIRS[:, 0], PAIRS[:, 1]] = 1.0
    user_ui = rating / rating.sum(1, keepdim=True).sqrt()
    item_iu = rating.T / rating.sum(0).unsqueeze(1).sqrt()
    return user_ui, item_iu


@pytest.mark.parametrize("engine", ["torch", "dgl"])
def test_row_only_normalisation_matches_the_dense_operators(engine: str) -> None:
    row_normalised = RowNormalisedEngine(build_engine(PAIRS, 3, 4, CPU, engine), PAIRS, 3, 4, CPU)
    user_ui, item_iu = _dense_operators()
    items, users = torch.randn(4, 5), torch.randn(3, 5)
    torch.testing.assert_close(row_normalised.items_to_users(items), user_ui @ items)
    torch.testing.assert_close(row_normalised.users_to_items(users), item_iu @ users)


def test_sequential_propagation_with_a_last_layer_softmax() -> None:
    engine = RowNormalisedEngine(TorchSparseEngine(PAIRS, 3, 4, CPU), PAIRS, 3, 4, CPU)
    model = OriginalLLMRecModel(3, 4, 5, 2, engine, {}, FeatureOptions())
    user_ui, item_iu = _dense_operators()
    u0, i0 = model.user_embedding.detach(), model.item_embedding.detach()
    u1 = user_ui @ i0
    i1 = item_iu @ u1  # from the new u1, not from u0
    u2 = F.softmax(user_ui @ i1, dim=1)
    i2 = F.softmax(item_iu @ u2, dim=1)
    with torch.no_grad():
        users, items = model.propagate_ids()
    torch.testing.assert_close(users, (u0 + u1 + u2) / 3)
    torch.testing.assert_close(items, (i0 + i1 + i2) / 3)


def test_keep_hardest_keeps_the_largest_losses() -> None:
    losses = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9])
    assert sorted(keep_hardest(losses, 0.71).tolist()) == pytest.approx([2.0, 5.0])  # int(0.29 * 10) = 2
    assert keep_hardest(losses, 0.0).tolist() == losses.tolist()


def test_original_variant_trains_with_adamw_and_the_whole_batch_pruned(ml_small_run_with_features: Path) -> None:
    config = TrainConfig(model="llmrec", model_variant="original", embedding_dim=16, device="cpu", lr=1e-2,
                         batch_size=4096).resolve()
    assert config.prune_rate == 0.71
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(config, data, CPU)
    optimizer = model.optimizer(config.lr)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01
    runner = _EpochSteps(model, data, config, CPU)
    before = model.projections["item_attributes"].weight.detach().clone()
    losses = runner._step(optimizer, torch.Generator().manual_seed(0))
    assert np.isfinite(losses["loss"]) and losses["l2"] == 0.0
    assert losses["loss"] > losses["bpr"] > 0  # the attribute/modality BPR terms add to the loss
    assert not torch.equal(before, model.projections["item_attributes"].weight)
    project = dataclasses.replace(config, model_variant="project", prune_rate=None).resolve()
    assert isinstance(build_model(project, data, CPU)[0].optimizer(project.lr), torch.optim.Adam)


def test_every_label_names_the_evaluation_and_the_model(ml_small_run: Path) -> None:
    """The "paper" protocol changes only the evaluation: its label must not promise the original model."""
    config = TrainConfig(model="mf", protocol="paper", max_epochs=1, device="cpu", lr=1e-2)
    doc = train_and_evaluate(ml_small_run, config)
    assert "original LLMRec code's evaluation" in doc["protocol_label"]
    assert "model: this project's model" in doc["protocol_label"]
    summary = (ml_small_run / "model" / "mf" / "summary.md").read_text()
    assert "this project's model" in summary
    stored = json.loads((ml_small_run / "model" / "mf" / "metrics.json").read_text())
    assert stored["model_variant"] == "project"
