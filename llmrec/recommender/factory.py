"""The model a `TrainConfig` names, built on a run's data: the one place that maps option values to models."""

from __future__ import annotations

import torch

from llmrec.recommender.data import RunData
from llmrec.recommender.graph import build_engine
from llmrec.recommender.models import (
    FeatureOptions,
    LightGCN,
    LLMRecModel,
    LossOptions,
    MatrixFactorization,
    Popularity,
    Recommender,
)
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.original import OriginalLLMRecModel, RowNormalisedEngine
from llmrec.recommender.protocol import split_matrix


def feature_options(config: TrainConfig) -> FeatureOptions:
    return FeatureOptions(
        modality_weight=config.modality_weight,
        item_attribute_weight=config.item_attribute_weight,
        user_profile_weight=config.user_profile_weight,
        mask_rate=config.mask_rate,
        reconstruction_weight=config.reconstruction_weight,
        sce_alpha=config.sce_alpha,
    )


def loss_options(config: TrainConfig) -> LossOptions:
    """The loss options of a resolved config."""
    assert config.prune_rate is not None
    return LossOptions(l2_reg=config.l2_reg, max_grad_norm=config.max_grad_norm,
                       aug_sample_rate=config.aug_sample_rate, prune_rate=config.prune_rate)


def build_model(config: TrainConfig, data: RunData, device: torch.device) -> tuple[Recommender, str]:
    """The model named by `config.model` on `device`, and the graph engine it uses ("none" without a graph)."""
    config = config.resolve()
    if config.model == "popularity":
        return Popularity(split_matrix(data, "train")).to(device), "none"
    dims = (data.n_users, data.n_items, config.embedding_dim)
    if not config.uses_graph:
        return MatrixFactorization(*dims, loss_options(config)).to(device), "none"
    engine = build_engine(data.train, data.n_users, data.n_items, device, config.engine)
    if config.model == "lightgcn":
        return LightGCN(*dims, config.n_layers, engine, loss_options(config)).to(device), engine.name
    model_class = LLMRecModel
    if config.model_variant == "original":
        engine = RowNormalisedEngine(engine, data.train, data.n_users, data.n_items, device)
        model_class = OriginalLLMRecModel
    features = {name: torch.from_numpy(values) for name, values in data.features.items()}
    model = model_class(*dims, config.n_layers, engine, features, feature_options(config), loss_options(config))
    return model.to(device), engine.name
