"""Unmasked features are propagated once and projected per step: same values and gradients as projecting first."""

from __future__ import annotations

import torch

from llmrec.recommender.data import load_run_data
from llmrec.recommender.graph import build_engine
from llmrec.recommender.models import FeatureOptions, LLMRecModel

CPU = torch.device("cpu")


def _project_then_propagate(model: LLMRecModel, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: project every row, zero rows without an answer, then two hops over the graph."""
    present = getattr(model, f"feature_present_{name}").unsqueeze(1)
    return model._two_hops(name, model.projections[name](model.feature(name)) * present)


def test_cached_propagation_equals_projecting_first(ml_small_run_with_features) -> None:
    data = load_run_data(ml_small_run_with_features)
    features = {name: torch.from_numpy(values).clone() for name, values in data.features.items()}
    for values in features.values():
        values[::7] = 0  # rows without an LLM answer: the bias must not reach them or their neighbours
    engine = build_engine(data.train, data.n_users, data.n_items, CPU, "torch")
    torch.manual_seed(0)
    model = LLMRecModel(data.n_users, data.n_items, 16, 2, engine, features, FeatureOptions())
    assert set(model.feature_names) >= {"item_text", "user_profiles", "item_attributes"}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(2):  # the cache holds the inputs, so it stays right after the weights change
        for name in model.feature_names:
            model.zero_grad()
            cached = model._feature_branch(name, None)
            (cached[0].square().sum() + cached[1].sin().sum()).backward()
            cached_grads = [p.grad.clone() for p in model.projections[name].parameters()]
            model.zero_grad()
            direct = _project_then_propagate(model, name)
            (direct[0].square().sum() + direct[1].sin().sum()).backward()
            direct_grads = [p.grad.clone() for p in model.projections[name].parameters()]
            assert cached[0].abs().sum() > 0 and cached[1].abs().sum() > 0, name
            for got, expected in zip(cached, direct):
                assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (name, step)
            for got, expected in zip(cached_grads, direct_grads):
                assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (name, step)
        model.zero_grad()
        representations = model(torch.Generator().manual_seed(step))
        (representations.users.sum() + representations.items.sum()).backward()
        optimizer.step()
