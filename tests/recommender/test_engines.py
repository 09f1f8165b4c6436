"""The DGL and torch-sparse graph engines compute the same thing, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.recommender.data import load_run_data
from llmrec.recommender.graph import DGLEngine, TorchSparseEngine, build_engine, symmetric_edge_weights
from llmrec.recommender.models import FeatureOptions, LLMRecModel

CPU = torch.device("cpu")


def test_symmetric_weights_are_inverse_sqrt_degree_products() -> None:
    users, items = np.array([0, 0, 1]), np.array([0, 1, 1])
    # d_u = (2, 1), d_i = (1, 2)
    expected = [1 / np.sqrt(2 * 1), 1 / np.sqrt(2 * 2), 1 / np.sqrt(1 * 2)]
    assert np.allclose(symmetric_edge_weights(users, items, 2, 2), expected)


def test_engines_agree_on_propagation_and_gradients(ml_small_source) -> None:
    data = load_run_data(ml_small_source)
    engines = [DGLEngine(data.train, data.n_users, data.n_items, CPU),
               TorchSparseEngine(data.train, data.n_users, data.n_items, CPU)]
    generator = torch.Generator().manual_seed(0)
    item_values = torch.randn(data.n_items, 8, generator=generator)
    user_values = torch.randn(data.n_users, 8, generator=generator)
    results = []
    for engine in engines:
        items_in = item_values.clone().requires_grad_()
        users_in = user_values.clone().requires_grad_()
        to_users = engine.items_to_users(items_in)
        to_items = engine.users_to_items(users_in)
        (to_users.pow(2).sum() + to_items.sin().sum()).backward()
        results.append((to_users.detach(), to_items.detach(), items_in.grad, users_in.grad))
    for dgl_value, torch_value in zip(*results):
        assert torch.allclose(dgl_value, torch_value, atol=1e-5, rtol=1e-5)
    # a hand check of one user: sum over its items of x_i / sqrt(d_u d_i)
    user = int(data.train[0, 0])
    user_items = data.train[data.train[:, 0] == user, 1]
    item_degree = np.bincount(data.train[:, 1], minlength=data.n_items)
    expected = (item_values[user_items] / torch.from_numpy(
        np.sqrt(len(user_items) * item_degree[user_items]).astype(np.float32)).unsqueeze(1)).sum(0)
    assert torch.allclose(results[0][0][user], expected, atol=1e-5)


def test_full_models_agree_across_engines(ml_small_run_with_features) -> None:
    data = load_run_data(ml_small_run_with_features)
    features = {name: torch.from_numpy(values) for name, values in data.features.items()}
    outputs = []
    for engine_name in ("dgl", "torch"):
        torch.manual_seed(0)
        engine = build_engine(data.train, data.n_users, data.n_items, CPU, engine_name)
        model = LLMRecModel(data.n_users, data.n_items, 16, 2, engine, features, FeatureOptions())
        representations = model(torch.Generator().manual_seed(1))
        loss = (representations.users[:50] @ representations.items[:80].T).sum() + representations.reconstruction_loss
        loss.backward()
        grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
        outputs.append((representations.users.detach(), representations.items.detach(), grads))
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-5)
    assert outputs[0][2].keys() == outputs[1][2].keys()
    for name in outputs[0][2]:
        assert torch.allclose(outputs[0][2][name], outputs[1][2][name], atol=1e-5, rtol=1e-4), name


def test_unknown_engine_is_a_config_error(ml_small_source) -> None:
    from llmrec.errors import ConfigError

    data = load_run_data(ml_small_source)
    with pytest.raises(ConfigError, match="engine"):
        build_engine(data.train, data.n_users, data.n_items, CPU, "cusparse")
