"""Public API for other stages: train a base model and get its embeddings.

The candidate generator (LLM augmentation) needs a trained recommender's user
and item vectors to pick each user's candidate items. It must not see the
test split, so this trains with validation-based selection and never builds a
test evaluator; nothing is written to the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.errors import ConfigError
from llmrec.recommender.data import load_run_data
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.protocol import build_evaluators
from llmrec.recommender.models import EmbeddingRecommender
from llmrec.recommender.trainer import fit, torch_device


@dataclass
class BaseModelResult:
    """Final representations of a trained model: score(u, i) = user_embeddings[u] @ item_embeddings[i]."""

    user_embeddings: np.ndarray  # float32 (n_users, d)
    item_embeddings: np.ndarray  # float32 (n_items, d)
    val_metrics: dict[str, Any]  # validation metrics at the selected epoch
    best_epoch: int
    model: str


def train_base_model(
    run_dir: Path | str,
    model: str = "lightgcn",
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    record: Path | None = None,
    **options: Any,
) -> BaseModelResult:
    """Train `model` (lightgcn, mf or llmrec) on the run's train split, selected on validation.

    `epochs` caps the number of epochs (default: the model's default); other
    `TrainConfig` options may be passed as keyword arguments. `record` keeps
    the fit (weights, history) there, so `llmrec train` reuses it for the
    same model, options and seed instead of training it again.
    """
    if model not in ("lightgcn", "mf", "llmrec"):
        raise ConfigError(f"train_base_model: model must be lightgcn, mf or llmrec, got {model!r}")
    data = load_run_data(run_dir)
    config = TrainConfig(model=model, seed=seed, device=device, max_epochs=epochs, **options)
    device_name = str(torch_device(config.device))
    evaluators = build_evaluators(data, "standard", device_name, config.eval_batch_size, with_test=False)
    result = fit(data, config, seed, lambda trained: evaluators.selection.evaluate(trained.scorer()),
                 reuse=record, record_to=record)
    assert isinstance(result.model, EmbeddingRecommender)  # popularity is refused above
    users, items = result.model.final_representations()
    return BaseModelResult(
        user_embeddings=users.cpu().numpy().astype(np.float32),
        item_embeddings=items.cpu().numpy().astype(np.float32),
        val_metrics=result.best_metrics,
        best_epoch=result.best_epoch,
        model=model,
    )


__all__ = ["BaseModelResult", "train_base_model"]
