"""LLMRec's additions are really used: augmented triples, features, pruning, masked reconstruction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from llmrec.recommender.data import load_run_data
from llmrec.recommender.factory import build_model
from llmrec.recommender.losses import prune_highest, scaled_cosine_error
from llmrec.recommender.models import USER_FEATURES, LLMRecModel, add_normalized_rows
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.trainer import _EpochSteps, fit

CPU = torch.device("cpu")
CONFIG = TrainConfig(model="llmrec", embedding_dim=16, device="cpu", lr=1e-2, batch_size=4096)


def test_prune_drops_the_largest_losses() -> None:
    losses = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2])
    assert sorted(prune_highest(losses, 0.4).tolist()) == pytest.approx([0.1, 0.2, 0.3])
    assert prune_highest(losses, 0.0).tolist() == losses.tolist()


def test_scaled_cosine_error_by_hand() -> None:
    reconstructed = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # cos 1 and cos 0
    assert scaled_cosine_error(reconstructed, target, 2.0).item() == pytest.approx((0.0 + 1.0) / 2)
    assert scaled_cosine_error(3.0 * reconstructed, target, 2.0).item() == pytest.approx((0.0 + 1.0) / 2)


def test_adding_normalised_rows_matches_autograd_of_the_definition() -> None:
    """The hand-written backward against autograd of base + sum w F.normalize(v), zero rows included."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(50, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    values = [torch.randn(50, 8, generator=generator, dtype=torch.float64) for _ in range(3)]
    values[1][:5] = 0.0  # rows without an answer: their norm is clamped
    values = [value.requires_grad_() for value in values]
    weights = [0.02, 0.2, 0.005]
    upstream = torch.randn(50, 8, generator=generator, dtype=torch.float64)

    fused = add_normalized_rows(base, list(zip(values, weights)))
    fused_grads = torch.autograd.grad((fused * upstream).sum(), [base, *values])
    reference = base + sum(weight * F.normalize(value, dim=1, eps=1e-12) for value, weight in zip(values, weights))
    reference_grads = torch.autograd.grad((reference * upstream).sum(), [base, *values])

    assert fused.shape == (50, 8) and reference.abs().sum() > 0
    torch.testing.assert_close(fused, reference)
    for got, expected in zip(fused_grads, reference_grads, strict=True):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected)
    assert add_normalized_rows(base, []) is base


def test_reconstruction_error_is_the_sce_of_this_epochs_masked_rows(ml_small_run_with_features: Path) -> None:
    """Targets cached for an epoch: equal to SCE against the raw feature rows of that epoch's masks, every epoch."""
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(CONFIG, data, CPU)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        model.start_epoch()
        representations = model(generator)
        masks = model._masks(generator)
        expected = 0.0
        for name, mask in masks.items():
            assert mask.sum() > 10, name
            own_side = representations.branches[name][0 if name in USER_FEATURES else 1]
            cosine = F.cosine_similarity(model.decoders[name](own_side[mask]), model.feature(name)[mask], dim=1)
            expected = expected + (1.0 - cosine).pow(CONFIG.sce_alpha).mean()
        torch.testing.assert_close(representations.reconstruction_loss, expected)


def _one_step(run: Path, config: TrainConfig) -> tuple[LLMRecModel, dict[str, float]]:
    data = load_run_data(run)
    torch.manual_seed(0)
    model, _ = build_model(config, data, CPU)
    runner = _EpochSteps(model, data, config, CPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = runner._step(optimizer, torch.Generator().manual_seed(0))
    return model, losses


def test_gradients_reach_every_projection_and_decoder(ml_small_run_with_features: Path) -> None:
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(CONFIG, data, CPU)
    assert isinstance(model, LLMRecModel)
    assert sorted(model.projections) == ["image", "item_attributes", "item_text", "user_profiles"]
    assert sorted(model.decoders) == ["item_attributes", "user_profiles"]
    representations = model(torch.Generator().manual_seed(0))
    loss = (representations.users[:100] @ representations.items[:100].T).mean() + representations.reconstruction_loss
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_augmented_triples_change_the_loss(ml_small_run_with_features: Path) -> None:
    _, with_augmented = _one_step(ml_small_run_with_features, CONFIG)
    _, without = _one_step(ml_small_run_with_features, dataclasses.replace(CONFIG, aug_sample_rate=0.0))
    assert with_augmented["bpr"] != without["bpr"]
    (ml_small_run_with_features / "augmented_edges.parquet").unlink()
    _, no_file = _one_step(ml_small_run_with_features, CONFIG)
    assert no_file["bpr"] == pytest.approx(without["bpr"])


def test_augmented_triples_follow_the_batch_users_at_partial_coverage(ml_small_run_with_features: Path) -> None:
    """10 of 609 users covered: each still gets ~aug_sample_rate augmented samples per real one (0.1:1)."""
    path = ml_small_run_with_features / "augmented_edges.parquet"
    covered_rows = pd.read_parquet(path).head(10)
    covered_rows.to_parquet(path, index=False)
    covered = torch.from_numpy(covered_rows["user"].to_numpy())
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(CONFIG, data, CPU)
    runner = _EpochSteps(model, data, CONFIG, CPU)
    generator = torch.Generator().manual_seed(0)
    real_samples = augmented_samples = 0
    for _ in range(50):
        users, _, _, augmented = runner.draw(generator)
        assert torch.isin(augmented[:, 0], users).all()  # only users of this batch
        assert torch.isin(augmented[:, 0], covered).all()
        real_samples += int(torch.isin(users, covered).sum())
        augmented_samples += len(augmented)
    assert real_samples > 1000  # ~67 per batch of 4096
    assert 0.08 < augmented_samples / real_samples < 0.12, (augmented_samples, real_samples)


def test_features_change_the_scores(ml_small_run_with_features: Path) -> None:
    data = load_run_data(ml_small_run_with_features)
    torch.manual_seed(0)
    with_features, _ = build_model(CONFIG, data, CPU)
    torch.manual_seed(0)
    plain, _ = build_model(dataclasses.replace(CONFIG, model="lightgcn"), data, CPU)
    assert torch.equal(with_features.user_embedding, plain.user_embedding)
    assert not torch.allclose(with_features(None).users, plain(None).users)


def test_training_moves_decoders_and_leaves_features_untouched(ml_small_run_with_features: Path) -> None:
    data = load_run_data(ml_small_run_with_features)
    original_attributes = data.features["item_attributes"].copy()
    config = dataclasses.replace(CONFIG, max_epochs=2, min_epochs=2)
    torch.manual_seed(0)
    untrained, _ = build_model(config, data, CPU)
    before = {name: value.clone() for name, value in untrained.decoders.state_dict().items()}
    result = fit(data, config, 0, lambda model: {"recall@20": 0.0})
    # selection ties (constant metric) keep epoch 1's weights: one epoch of steps already happened
    assert result.best_epoch == 1
    after = result.model.decoders.state_dict()
    assert all(not torch.equal(before[name], after[name]) for name in before)
    assert all(row["reconstruction"] > 0 for row in result.history)
    np.testing.assert_array_equal(result.model.feature("item_attributes").numpy(), original_attributes)


def test_masks_hold_for_an_epoch_are_fresh_each_epoch_and_off_at_evaluation(ml_small_run_with_features: Path) -> None:
    """One draw per epoch: the steps of an epoch share its masks (so their propagation is cached), the next differs."""
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(CONFIG, data, CPU)
    generator = torch.Generator().manual_seed(0)
    first = model._masks(generator)
    assert set(first) == {"item_attributes", "user_profiles"}
    assert 0.03 < first["user_profiles"].float().mean() < 0.2  # mask_rate 0.1
    same_epoch = model._masks(generator)
    model.start_epoch()
    next_epoch = model._masks(generator)
    for name, mask in first.items():
        assert torch.equal(mask, same_epoch[name]), name
        assert not torch.equal(mask, next_epoch[name]), name
    assert model._masks(None) == {}
    assert model(None).reconstruction_loss is None
    assert model(generator).reconstruction_loss is not None


def test_each_training_epoch_draws_its_own_masks(ml_small_run_with_features: Path) -> None:
    """The trainer starts every epoch with `start_epoch`, so two epochs train on different masks."""
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(CONFIG, data, CPU)
    runner = _EpochSteps(model, data, CONFIG, CPU)
    optimizer, generator = model.optimizer(CONFIG.lr), torch.Generator().manual_seed(0)
    epoch_masks = []
    for _ in range(2):
        assert runner.run(optimizer, generator)["reconstruction"] > 0
        epoch_masks.append(dict(model._masks(generator)))
    assert set(epoch_masks[0]) == {"item_attributes", "user_profiles"}
    for name, mask in epoch_masks[0].items():
        assert not torch.equal(mask, epoch_masks[1][name]), name


def test_rows_without_an_llm_answer_are_never_masked(ml_small_run_with_features: Path) -> None:
    path = ml_small_run_with_features / "embeddings" / "user_profiles.npy"
    profiles = np.load(path)
    profiles[: len(profiles) // 2] = 0.0  # the contract's "no valid answer" rows
    np.save(path, profiles)
    data = load_run_data(ml_small_run_with_features)
    model, _ = build_model(dataclasses.replace(CONFIG, mask_rate=0.5), data, CPU)
    generator = torch.Generator().manual_seed(0)
    masked = torch.stack([model._masked_rows("user_profiles", generator) for _ in range(20)]).any(0)
    assert not masked[: len(profiles) // 2].any()
    assert masked[len(profiles) // 2 :].all()


def test_rows_without_an_llm_answer_contribute_nothing(ml_small_run_with_features: Path) -> None:
    """A missing profile is not a feature: the projection's bias must not reach any neighbour through it."""
    path = ml_small_run_with_features / "embeddings" / "user_profiles.npy"
    profiles = np.load(path)
    half = len(profiles) // 2
    profiles[:half] = 0.0
    np.save(path, profiles)
    data = load_run_data(ml_small_run_with_features)
    train = data.train
    raters_present = np.bincount(train[:, 1], weights=train[:, 0] >= half, minlength=data.n_items)
    rated = np.bincount(train[:, 1], minlength=data.n_items) > 0
    only_absent_raters = torch.from_numpy(rated & (raters_present == 0))
    assert only_absent_raters.sum() > 50  # items whose every rater lacks a profile
    model, _ = build_model(dataclasses.replace(CONFIG, mask_rate=0.0), data, CPU)
    with torch.no_grad():
        user_side, item_side = model._feature_branch("user_profiles", None)
    assert torch.count_nonzero(item_side[only_absent_raters]) == 0
    assert (item_side[~only_absent_raters & torch.from_numpy(rated)].abs().sum(1) > 0).all()
    assert (user_side[half:].abs().sum(1) > 0).all()
