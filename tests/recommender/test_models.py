"""The model interface: the trainer steps on each model's own loss, and popularity is evaluated, never trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from llmrec.recommender.data import load_run_data
from llmrec.recommender.models import BatchLoss, LossOptions, MatrixFactorization, Representations
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.runner import train_and_evaluate
from llmrec.recommender.sampling import Batch
from llmrec.recommender.trainer import _EpochSteps

CPU = torch.device("cpu")


class _PenalisedMF(MatrixFactorization):
    """A model the trainer has never heard of: MF-BPR plus a penalty on the batch's positive item norms."""

    def batch_loss(self, representations: Representations, batch: Batch) -> BatchLoss:
        loss = super().batch_loss(representations, batch)
        penalty = representations.items[batch.positives].pow(2).sum(1).mean()
        return dataclasses.replace(loss, total=loss.total + penalty)


def test_the_trainer_steps_on_the_model_s_own_loss(ml_small_run: Path) -> None:
    data = load_run_data(ml_small_run)
    config = TrainConfig(model="mf", device="cpu", lr=1e-2, batch_size=4096).resolve()
    steps, models = {}, {}
    for name, model_class in (("plain", MatrixFactorization), ("penalised", _PenalisedMF)):
        torch.manual_seed(0)
        model = model_class(data.n_users, data.n_items, 16, LossOptions(l2_reg=config.l2_reg))
        steps[name] = _EpochSteps(model, data, config, CPU)._step(model.optimizer(config.lr),
                                                                    torch.Generator().manual_seed(0))
        models[name] = model
    assert steps["plain"]["bpr"] > 0
    assert steps["penalised"]["bpr"] == steps["plain"]["bpr"]  # same weights, same batch
    assert steps["penalised"]["loss"] > steps["plain"]["loss"] + 1e-3  # the model's own term is in the step
    assert not torch.equal(models["penalised"].item_embedding, models["plain"].item_embedding)  # and its gradient


def test_popularity_is_evaluated_never_trained(ml_small_run: Path) -> None:
    doc = train_and_evaluate(ml_small_run, TrainConfig(model="popularity", device="cpu"))
    run = doc["runs"][0]
    assert run["selection"]["n_users_evaluated"] > 500 and run["test"]["recall@20"] > 0.05
    assert (run["best_epoch"], run["epochs_run"], run["history"], doc["engine"]) == (0, 0, [], "none")
    # no weights to keep: no seed folder, checkpoint or training curve
    assert sorted(path.name for path in (ml_small_run / "model" / "popularity").iterdir()) == [
        "metrics.json", "summary.md"
    ]
