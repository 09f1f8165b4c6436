"""Features hop before their projection: same values and gradients as projecting first.

Unmasked features are propagated once and masked ones once per epoch (their
masks hold for the epoch), and each step projects the propagated rows.
"""

from __future__ import annotations

import pytest
import torch

from llmrec.recommender.data import load_run_data
from llmrec.recommender.graph import build_engine
from llmrec.recommender.models import MASKED_FEATURES, USER_FEATURES, FeatureOptions, LLMRecModel

CPU = torch.device("cpu")


def _project_then_propagate(model: LLMRecModel, name: str,
                            mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition: mask rows, project every row, zero rows without an answer, then two hops over the graph."""
    present = getattr(model, f"feature_present_{name}").unsqueeze(1)
    values = model.feature(name)
    if mask is not None:
        values = torch.where(mask.unsqueeze(1), getattr(model, f"feature_mean_{name}"), values)
    projected = model.projections[name](values) * present
    if name in USER_FEATURES:
        items = model.engine.users_to_items(projected)
        return model.engine.items_to_users(items), items
    users = model.engine.items_to_users(projected)
    return users, model.engine.users_to_items(users)


def _model_with_absent_rows(run_dir, dim: int) -> LLMRecModel:
    data = load_run_data(run_dir)
    features = {name: torch.from_numpy(values).clone() for name, values in data.features.items()}
    for values in features.values():
        values[::7] = 0  # rows without an LLM answer: the bias must not reach them or their neighbours
    engine = build_engine(data.train, data.n_users, data.n_items, CPU, "torch")
    torch.manual_seed(0)
    return LLMRecModel(data.n_users, data.n_items, dim, 2, engine, features, FeatureOptions())


def test_cached_propagation_equals_projecting_first(ml_small_run_with_features) -> None:
    model = _model_with_absent_rows(ml_small_run_with_features, 16)
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


@pytest.mark.parametrize("dim", [16, 64])  # masked features wider than d (item side hopped) / narrower (projected)
def test_masked_branch_equals_projecting_first(ml_small_run_with_features, dim: int) -> None:
    """Over two epochs: the second epoch's branch follows its own masks, not the first epoch's cached rows."""
    model = _model_with_absent_rows(ml_small_run_with_features, dim)
    widths = {name: model.feature(name).shape[1] for name in MASKED_FEATURES}
    assert all((width <= dim) == (dim == 64) for width in widths.values()), widths  # each case takes its path
    generator = torch.Generator().manual_seed(0)
    for epoch in range(2):
        model.start_epoch()
        masks = model._masks(generator)
        for name in MASKED_FEATURES:
            mask = masks[name]
            assert mask.any(), name
            model.zero_grad()
            branch = model._feature_branch(name, mask)
            (branch[0].square().sum() + branch[1].sin().sum()).backward()
            branch_grads = [p.grad.clone() for p in model.projections[name].parameters()]
            model.zero_grad()
            direct = _project_then_propagate(model, name, mask)
            (direct[0].square().sum() + direct[1].sin().sum()).backward()
            direct_grads = [p.grad.clone() for p in model.projections[name].parameters()]
            for got, expected in zip(branch, direct):
                assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (name, dim, epoch)
            for got, expected in zip(branch_grads, direct_grads):
                assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (name, dim, epoch)
