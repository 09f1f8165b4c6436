"""The training loop of one seed: BPR batches, early stopping, checkpoints, resume.

The loop is the same for every model: it draws a batch, asks the model for
its loss (`EmbeddingRecommender.loss`, models.py) and steps the model's own
optimizer. A model that learns nothing (popularity) is only evaluated.

`fit` never sees the test split: it gets a *selection* evaluator (validation
data under the standard protocol) and returns the best weights by its
Recall@20. Early stopping waits for a warm-up (`min_epochs`) and then stops
when `patience` evaluations brought no improvement and the trend over them is
flat (see `_should_stop`). With a `work_dir`, the full
training state (model, optimizer, every RNG state, epoch, best-so-far, history)
is saved atomically every `checkpoint_every` epochs, and a later call of the
same fit (`fit_fingerprint`: options, seed, the inputs the model reads) resumes
from it and ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrec import artifacts
from llmrec.devices import resolve_device
from llmrec.errors import ConfigError
from llmrec.progress import track
from llmrec.recommender.checkpoints import (
    capture_rng_states,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
    seed_everything,
)
from llmrec.recommender.data import RunData
from llmrec.recommender.factory import build_model
from llmrec.recommender.models import EmbeddingRecommender, Recommender
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.sampling import AugmentedSampler, Batch, BPRSampler

logger = logging.getLogger(__name__)

SELECTION_METRIC = "recall@20"
RESUME_FILE = "resume.pt"
# What training computes from the same options, seed and inputs. Bump it with any change that alters the
# weights (not with a refactor that keeps the numbers): fit records, seed records, resume files and train
# stages written by an older revision are then trained again instead of reused. 2: LLMRec draws its
# feature masks once per epoch instead of once per step. 3: LLMRec's reconstruction error against targets
# normalised once per epoch, and a wide user feature's user side hopped back from its item side (both the same
# arithmetic, rounded differently).
TRAINING_REVISION = 3

Evaluate = Callable[[Recommender], dict[str, Any]]


class TrainingInterrupted(Exception):
    """Raised after `stop_after_epochs` epochs; the resumable state is on disk."""


@dataclass
class FitResult:
    model: Recommender  # holding the best weights
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, float]]
    engine: str
    train_seconds: float
    epochs_run: int
    reused: bool = False  # read from a fit record of the same options, seed and inputs (not trained again)


@dataclass
class _Progress:
    """The part of the training state that is not tensors: restored on resume."""

    epoch: int = 0
    best_value: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def torch_device(device: str) -> torch.device:
    """The torch device for `[train] device`: `auto` resolved (`llmrec.devices`), cpu / cuda[:N] checked."""
    device = resolve_device(device)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"[train] option 'device' = {device!r}: expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device here; use --device cpu")
    return torch.device(device)


class _EpochSteps:
    """One epoch of steps: draw a batch, the model's loss for it, one optimizer step."""

    def __init__(self, model: EmbeddingRecommender, data: RunData, config: TrainConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config.resolve(), device
        self.sampler = BPRSampler(data.train, data.n_users, data.n_items)
        self.augmented = AugmentedSampler(
            data.augmented_triples if model.augmented_rate > 0 else np.zeros((0, 3), dtype=np.int64), data.n_users
        )
        self.batches = math.ceil(len(data.train) / config.batch_size)

    def run(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, float]:
        """The epoch's mean of each logged loss term."""
        totals: dict[str, float] = {}
        self.model.start_epoch()
        for _ in range(self.batches):
            for key, value in self._step(optimizer, generator).items():
                totals[key] = totals.get(key, 0.0) + value / self.batches
        return totals

    def draw(self, generator: torch.Generator) -> Batch:
        """One batch on the CPU: users, positives, negatives, and augmented triples for users of the batch."""
        users, positives, negatives = self.sampler.sample(self.config.batch_size, generator)
        return Batch(users, positives, negatives, self.augmented.sample(users, self.model.augmented_rate, generator))

    def _step(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, float]:
        loss = self.model.loss(self.draw(generator).to(self.device), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.update(optimizer)
        return loss.logged()

    def update(self, optimizer: torch.optim.Optimizer) -> None:
        """The step after the backward pass: clip the gradient norm to the model's bound, then the optimizer."""
        if self.model.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.model.max_grad_norm)
        optimizer.step()


def _should_stop(progress: _Progress, config: TrainConfig) -> bool:
    """Stop when the best selection score is old AND the recent trend is flat.

    "Old" is relative to how long the best took: at least `patience`
    evaluations and `relative_patience` times the evaluations up to the best.
    The time scale of training follows the learning rate: at lr 1e-3 LightGCN
    (ml-latest-small) dips below its epoch-2 score for ~20 epochs, then climbs
    for hundreds with plateaus (best at epoch 69, beaten only at 115), which a
    fixed patience takes for convergence (it stopped at epoch 89, test
    Recall@20 .206, against .264 at lr 5e-3). "Flat": a least-squares line through the last `patience`
    evaluations projects a gain below `trend_tolerance` of the best score over
    their span. `min_epochs` stays a floor.
    """
    assert config.min_epochs is not None
    if progress.epoch < config.min_epochs:
        return False
    scores = [(row["epoch"], row[SELECTION_METRIC]) for row in progress.history if SELECTION_METRIC in row]
    to_best = sum(1 for epoch, _ in scores if epoch <= progress.best_epoch)
    since_best = sum(1 for epoch, _ in scores if epoch > max(progress.best_epoch, config.min_epochs))
    if since_best < max(config.patience, math.ceil(config.relative_patience * to_best)):
        return False
    recent = np.asarray(scores[-config.patience:], dtype=np.float64)
    if len(recent) < 2:
        return True
    slope = np.polyfit(recent[:, 0], recent[:, 1], 1)[0]  # per epoch
    projected_gain = slope * (recent[-1, 0] - recent[0, 0])
    return bool(projected_gain < config.trend_tolerance * progress.best_value)


SPLIT_TABLES = (artifacts.USERS, artifacts.ITEMS, artifacts.TRAIN, artifacts.VAL, artifacts.TEST)


def fit_record_path(run_dir: Path, model: str, seed: int) -> Path:
    """Where the candidate stage leaves its base model's fit, for the baseline of the same options to reuse."""
    return run_dir / artifacts.MODEL_DIR / "_fits" / f"{model}_seed{seed}.pt"


def fit_fingerprint(data: RunData, config: TrainConfig, seed: int) -> dict[str, Any]:
    """What decides a fit: its options (not the first-seed field), its seed, and the inputs its model reads."""
    options = {key: value for key, value in config.resolve().fingerprint().items() if key != "seed"}
    reads_features = config.model == "llmrec"
    inputs = {key: value for key, value in data.input_digests.items() if reads_features or key in SPLIT_TABLES}
    return {"config": options, "seed": seed, "inputs": inputs, "revision": TRAINING_REVISION}


def _reuse_fit(path: Path | None, fingerprint: dict[str, Any], model: Recommender) -> FitResult | None:
    if path is None or not path.is_file():
        return None
    saved = load_checkpoint(path)
    if saved.get("fingerprint") != fingerprint:
        return None
    model.load_state_dict(saved["model"])
    logger.info("reusing the fit in %s (same options, seed and inputs): not training again", path)
    return FitResult(model, saved["best_epoch"], saved["best_metrics"], saved["history"], saved["engine"],
                     saved["train_seconds"], saved["epochs_run"], reused=True)


def fit(
    data: RunData,
    config: TrainConfig,
    seed: int,
    evaluate_selection: Evaluate,
    work_dir: Path | None = None,
    reuse: Path | None = None,
    record_to: Path | None = None,
) -> FitResult:
    """Train one seed; return the model holding the weights of the best selection epoch.

    `reuse`: a fit record (written through `record_to` by an earlier fit) whose
    options, seed and inputs match is loaded instead of training again;
    `record_to` writes such a record of this fit.
    """
    config = config.resolve()
    device = torch_device(config.device)
    seed_everything(seed)
    model, engine_name = build_model(config, data, device)
    if not isinstance(model, EmbeddingRecommender):  # popularity: nothing to learn, evaluated as it is
        return FitResult(model, 0, evaluate_selection(model), [], engine_name, 0.0, 0)
    reused = _reuse_fit(reuse, fit_fingerprint(data, config, seed), model)
    if reused is not None:
        return reused
    assert config.lr is not None and config.max_epochs is not None
    optimizer = model.optimizer(config.lr)
    generator = torch.Generator().manual_seed(seed)
    epoch_steps = _EpochSteps(model, data, config, device)
    progress = _Progress()
    best_state = copy.deepcopy(model.state_dict())
    fingerprint = fit_fingerprint(data, config, seed)  # a resume file of other options or inputs is not resumed
    resume_path = work_dir / RESUME_FILE if work_dir else None
    if resume_path is not None and resume_path.is_file():
        saved = load_checkpoint(resume_path)
        if saved["fingerprint"] == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            best_state = saved["best_model"]
            progress = _Progress(**saved["progress"])
            restore_rng_states(saved["rng"], generator)
            logger.info("resuming seed %d from epoch %d (%s)", seed, progress.epoch, resume_path)
        else:
            logger.warning("%s: saved by a run with other options or inputs; starting afresh", resume_path)
    logger.info(
        "training %s (seed %d) on %s, engine %s: lr %g, up to %d epochs, warm-up %d, patience %d",
        config.model, seed, device, engine_name, config.lr, config.max_epochs, config.min_epochs, config.patience,
    )
    epochs = track(range(progress.epoch, config.max_epochs), f"{config.model} seed {seed}", "epoch")
    epochs_this_call = 0
    for epoch in epochs:
        started = time.perf_counter()
        losses = epoch_steps.run(optimizer, generator)
        progress.train_seconds += time.perf_counter() - started
        progress.epoch = epoch + 1
        record: dict[str, float] = {"epoch": progress.epoch, **losses}
        if not all(np.isfinite(value) for value in losses.values()):
            raise ConfigError(f"training diverged at epoch {progress.epoch} (loss {losses['loss']}); lower --lr")
        if progress.epoch % config.eval_every == 0:
            metrics = evaluate_selection(model)
            record[SELECTION_METRIC] = float(metrics[SELECTION_METRIC])
            if not math.isfinite(record[SELECTION_METRIC]):
                # NaN > best is never true: training would "select" the untrained weights
                raise ConfigError(f"selection {SELECTION_METRIC} is NaN at epoch {progress.epoch}: the selection "
                                  "split has no user with ground truth; nothing to select the model on")
            if metrics[SELECTION_METRIC] > progress.best_value:
                progress.best_value = float(metrics[SELECTION_METRIC])
                progress.best_epoch, progress.best_metrics = progress.epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
            epochs.set_postfix(loss=f"{losses['loss']:.4f}", r20=f"{record[SELECTION_METRIC]:.4f}",
                               best=f"{progress.best_value:.4f}@{progress.best_epoch}")
        progress.history.append(record)
        stop = _should_stop(progress, config)
        epochs_this_call += 1
        interrupted = config.stop_after_epochs is not None and epochs_this_call >= config.stop_after_epochs
        if resume_path is not None and (progress.epoch % config.checkpoint_every == 0 or interrupted):
            save_checkpoint(resume_path, {
                "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best_model": best_state, "progress": progress.__dict__, "rng": capture_rng_states(generator),
            })
        if stop:
            logger.info("early stop at epoch %d: best %s %.4f at epoch %d", progress.epoch, SELECTION_METRIC,
                        progress.best_value, progress.best_epoch)
            break
        if interrupted and progress.epoch < config.max_epochs:
            raise TrainingInterrupted(f"stopped after {epochs_this_call} epoch(s) as asked; rerun to resume")
    model.load_state_dict(best_state)
    if record_to is not None:
        save_checkpoint(record_to, {
            "fingerprint": fingerprint, "model": best_state, "best_epoch": progress.best_epoch,
            "best_metrics": progress.best_metrics, "history": progress.history, "engine": engine_name,
            "train_seconds": progress.train_seconds, "epochs_run": progress.epoch,
        })
    return FitResult(model, progress.best_epoch, progress.best_metrics, progress.history, engine_name,
                     progress.train_seconds, progress.epoch)
