"""Early stopping that does not depend on guessing the warm-up for the learning rate."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from llmrec.recommender.options import TrainConfig
from llmrec.recommender.trainer import _Progress, _should_stop

CONFIG = TrainConfig(model="lightgcn", min_epochs=0, max_epochs=1000, patience=20).resolve()


def _progress(curve: list[float]) -> _Progress:
    best_epoch = int(np.argmax(curve)) + 1  # first maximum, as fit keeps it
    history = [{"epoch": epoch, "recall@20": value} for epoch, value in enumerate(curve, start=1)]
    return _Progress(epoch=len(curve), best_value=max(curve), best_epoch=best_epoch, history=history)


def test_a_climb_after_an_early_peak_is_not_stopped() -> None:
    """lr 1e-3's shape: a peak at epoch 2, a dip, then a slow climb still below that peak 20+ epochs later."""
    curve = [0.126, 0.163] + [0.150 + 0.0005 * step for step in range(25)]
    assert max(curve[2:]) < curve[1]
    assert not _should_stop(_progress(curve), CONFIG)


def test_a_plateau_or_a_decline_after_the_best_is_stopped() -> None:
    """Best at evaluation 30: stopped once it is 30 evaluations old (relative_patience 1) on a flat or falling curve."""
    rng = np.random.default_rng(0)
    climb = [0.20 + 0.002 * step for step in range(30)]
    plateau = climb + list(0.253 + 0.002 * rng.standard_normal(30))
    assert max(plateau[30:]) < max(climb)
    assert _should_stop(_progress(plateau), CONFIG)
    decline = climb + [0.258 - 0.001 * step for step in range(1, 31)]
    assert _should_stop(_progress(decline), CONFIG)
    assert not _should_stop(_progress(decline[:-1]), CONFIG)  # 29 evaluations since the best: not old enough
    rising_again = climb + [0.240 + 0.0005 * step for step in range(30)]  # still below the best, but climbing
    assert not _should_stop(_progress(rising_again), CONFIG)


def test_a_late_best_needs_a_proportionally_longer_wait() -> None:
    """Slow learners plateau longer: a best reached after 100 evaluations is not old after 60 flat ones."""
    climb = [0.10 + 0.001 * step for step in range(100)]
    assert not _should_stop(_progress(climb + [climb[-1] - 0.001] * 60), CONFIG)
    assert _should_stop(_progress(climb + [climb[-1] - 0.001] * 100), CONFIG)  # relative_patience 1 x 100


def test_patience_counts_evaluations() -> None:
    config = TrainConfig(model="lightgcn", min_epochs=0, max_epochs=1000, patience=4, eval_every=5).resolve()
    curve = [0.2, 0.25, 0.24, 0.24, 0.24, 0.24]
    history = [{"epoch": 5 * (index + 1), "recall@20": value} for index, value in enumerate(curve)]
    progress = _Progress(epoch=30, best_value=0.25, best_epoch=10, history=history)
    assert _should_stop(progress, config)
    progress.history, progress.epoch = history[:-1], 25
    assert not _should_stop(progress, config)


def _train_lightgcn(run_dir: Path, lr: float) -> tuple[float, int, float]:
    """(test Recall@20, epochs run, seconds) of one LightGCN run, in a process of its own."""
    import torch

    from llmrec.recommender.runner import train_and_evaluate

    torch.set_num_threads(1)
    started = time.perf_counter()
    doc = train_and_evaluate(run_dir, TrainConfig(model="lightgcn", lr=lr, engine="torch", device="cpu"),
                             f"lightgcn_{lr:g}")
    return doc["test_mean"]["recall@20"], doc["runs"][0]["epochs_run"], time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the two runs side by side: ~3 min on an idle 2-core machine; measured 15+ min under a load average of 10+
def test_lightgcn_lands_in_the_same_band_at_lr_1e3_and_5e3(tmp_path: Path) -> None:
    """On the real prepared ml-latest-small split (RecBole: .2527 at lr 1e-3; this engine .2644 at 5e-3).

    lr 1e-3 runs to its 300-epoch cap (best validation still rising); 5e-3 stops
    after ~230 epochs. A fixed patience stopped lr 1e-3 at epoch 89 (.206).
    The two runs train side by side, one thread each, on copies of one prepared run.
    The run length is the point, not a work size to trim: lr 1e-3's best
    validation Recall@20 was .2046 at epoch 117, barely above the .2037 of
    epoch 69 that tested .206 in the run stopped at 89 (measured 2026-12-01),
    so a cap near 150 epochs leaves lr 1e-3 short of the band.
    """
    import multiprocessing
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    from llmrec.data.prepare import PrepareConfig, prepare_run

    prepare_run(tmp_path / "run", PrepareConfig(dataset="ml-latest-small"))
    learning_rates = (1e-3, 5e-3)
    runs = []
    for lr in learning_rates:
        shutil.copytree(tmp_path / "run", tmp_path / f"run_{lr:g}")
        runs.append(tmp_path / f"run_{lr:g}")
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = dict(zip(learning_rates, pool.map(_train_lightgcn, runs, learning_rates)))
    recalls = {lr: result[0] for lr, result in results.items()}
    print(f"test Recall@20, epochs run, seconds per lr: {results}")
    assert min(recalls.values()) > 0.24, recalls
    assert abs(recalls[1e-3] - recalls[5e-3]) < 0.025, recalls
