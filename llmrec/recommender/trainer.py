"""The training loop of one seed: BPR batches, early stopping, checkpoints, resume.

`fit` never sees the test split: it gets a *selection* evaluator (validation
data under the standard protocol) and returns the best weights by its
Recall@20. Early stopping waits for a warm-up (`min_epochs`) and then stops
when `patience` evaluations brought no improvement and the trend over them is
flat (see `_should_stop`). With a `work_dir`, the full
training state (model, optimizer, every RNG state, epoch, best-so-far, history)
is saved atomically every `checkpoint_every` epochs, and a later call with the
same options resumes from it and ends exactly where an uninterrupted run ends.
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
from llmrec.recommender.graph import build_engine
from llmrec.recommender.losses import bpr_per_sample, l2_penalty, prune_highest
from llmrec.recommender.models import FeatureOptions, LightGCN, LLMRecModel, MatrixFactorization, Representations
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.original import ADAMW_WEIGHT_DECAY, RowNormalisedEngine, keep_hardest, side_feature_losses
from llmrec.recommender.sampling import AugmentedSampler, BPRSampler

logger = logging.getLogger(__name__)

SELECTION_METRIC = "recall@20"
RESUME_FILE = "resume.pt"

Evaluate = Callable[[MatrixFactorization], dict[str, Any]]


class TrainingInterrupted(Exception):
    """Raised after `stop_after_epochs` epochs; the resumable state is on disk."""


@dataclass
class FitResult:
    model: MatrixFactorization  # holding the best weights
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"[train] option 'device' = {device!r}: expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device here; use --device cpu")
    return torch.device(device)


def feature_options(config: TrainConfig) -> FeatureOptions:
    return FeatureOptions(
        modality_weight=config.modality_weight,
        item_attribute_weight=config.item_attribute_weight,
        user_profile_weight=config.user_profile_weight,
        mask_rate=config.mask_rate,
        reconstruction_weight=config.reconstruction_weight,
        sce_alpha=config.sce_alpha,
    )


def build_model(config: TrainConfig, data: RunData, device: torch.device) -> tuple[MatrixFactorization, str]:
    """The model named by `config.model` on `device`, and the graph engine it uses."""
    if not config.uses_graph:
        return MatrixFactorization(data.n_users, data.n_items, config.embedding_dim).to(device), "none"
    engine = build_engine(data.train, data.n_users, data.n_items, device, config.engine)
    if config.model == "lightgcn":
        model = LightGCN(data.n_users, data.n_items, config.embedding_dim, config.n_layers, engine)
    else:
        original = config.model_variant == "original"
        if original:
            engine = RowNormalisedEngine(engine, data.train, data.n_users, data.n_items, device)
        features = {name: torch.from_numpy(values) for name, values in data.features.items()}
        model = LLMRecModel(
            data.n_users, data.n_items, config.embedding_dim, config.n_layers, engine, features,
            feature_options(config), original,
        )
    return model.to(device), engine.name


def uses_original_model(model: MatrixFactorization) -> bool:
    return isinstance(model, LLMRecModel) and model.original


def build_optimizer(model: MatrixFactorization, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (with the explicit L2 term), or the original's AdamW with weight decay 0.01."""
    assert config.lr is not None
    if uses_original_model(model):
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=ADAMW_WEIGHT_DECAY)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


@torch.no_grad()
def final_representations(model: MatrixFactorization) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items) final vectors without feature masking; score = users @ items.T."""
    model.eval()
    representations = model(None)
    model.train()
    return representations.users.detach(), representations.items.detach()


def make_scorer(model: MatrixFactorization) -> Callable[[torch.Tensor], torch.Tensor]:
    users, items = final_representations(model)
    return lambda batch: users[batch.to(users.device)] @ items.T


class _EpochRunner:
    """One epoch of BPR steps (plus augmented triples and reconstruction for LLMRec)."""

    def __init__(self, model: MatrixFactorization, data: RunData, config: TrainConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config.resolve(), device
        self.sampler = BPRSampler(data.train, data.n_users, data.n_items)
        uses_augmented = isinstance(model, LLMRecModel) and config.aug_sample_rate > 0
        self.augmented = AugmentedSampler(
            data.augmented_triples if uses_augmented else np.zeros((0, 3), dtype=np.int64), data.n_users
        )
        self.masks_features = isinstance(model, LLMRecModel) and len(model.decoders) > 0
        self.original = uses_original_model(model)
        self.batches = math.ceil(len(data.train) / config.batch_size)

    def run(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, float]:
        totals = {"loss": 0.0, "bpr": 0.0, "l2": 0.0, "reconstruction": 0.0}
        for _ in range(self.batches):
            for key, value in self._step(optimizer, generator).items():
                totals[key] += value / self.batches
        return totals

    def draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch on the CPU: users, positives, negatives, and augmented triples for users of the batch."""
        users, positives, negatives = self.sampler.sample(self.config.batch_size, generator)
        return users, positives, negatives, self.augmented.sample(users, self.config.aug_sample_rate, generator)

    def _step(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, float]:
        config = self.config
        users, positives, negatives, augmented = (t.to(self.device) for t in self.draw(generator))
        representations = self.model(generator if self.masks_features else None)
        user_vectors, item_vectors = representations.users, representations.items
        if self.original:
            return self._original_step(optimizer, representations, users, positives, negatives, augmented)
        losses = bpr_per_sample(user_vectors[users], item_vectors[positives], item_vectors[negatives])
        if len(augmented):
            augmented_losses = bpr_per_sample(
                user_vectors[augmented[:, 0]], item_vectors[augmented[:, 1]], item_vectors[augmented[:, 2]]
            )
            # augmented triples join the batch (as in the original), minus the noisiest ones
            losses = torch.cat([losses, prune_highest(augmented_losses, config.prune_rate)])
        bpr = losses.mean()
        l2 = config.l2_reg * l2_penalty(
            representations.user_ids[users], representations.item_ids[positives], representations.item_ids[negatives]
        )
        loss = bpr + l2
        reconstruction = representations.reconstruction_loss
        if reconstruction is not None:
            loss = loss + config.reconstruction_weight * reconstruction
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        optimizer.step()
        return {
            "loss": float(loss.detach()), "bpr": float(bpr.detach()), "l2": float(l2.detach()),
            "reconstruction": float(reconstruction.detach()) if reconstruction is not None else 0.0,
        }


    def _original_step(self, optimizer: torch.optim.Optimizer, representations: Representations, users: torch.Tensor,
                       positives: torch.Tensor, negatives: torch.Tensor, augmented: torch.Tensor) -> dict[str, float]:
        """The original's loss (original.py): the hardest samples of the whole batch, plus side-feature BPR terms."""
        assert self.config.prune_rate is not None
        users = torch.cat([users, augmented[:, 0]])
        positives = torch.cat([positives, augmented[:, 1]])
        negatives = torch.cat([negatives, augmented[:, 2]])
        losses = bpr_per_sample(representations.users[users], representations.items[positives],
                                representations.items[negatives])
        bpr = keep_hardest(losses, self.config.prune_rate).mean()
        loss = bpr + side_feature_losses(representations.branches, users, positives, negatives, self.config.prune_rate)
        reconstruction = representations.reconstruction_loss
        if reconstruction is not None:
            loss = loss + self.config.reconstruction_weight * reconstruction
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), "bpr": float(bpr.detach()), "l2": 0.0,
                "reconstruction": float(reconstruction.detach()) if reconstruction is not None else 0.0}


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


SPLIT_TABLES = ("users.parquet", "items.parquet", "train.parquet", "val.parquet", "test.parquet")


def fit_record_path(run_dir: Path, model: str, seed: int) -> Path:
    """Where the candidate stage leaves its base model's fit, for the baseline of the same options to reuse."""
    return run_dir / "model" / "_fits" / f"{model}_seed{seed}.pt"


def fit_fingerprint(data: RunData, config: TrainConfig, seed: int) -> dict[str, Any]:
    """What decides a fit: its options (not the first-seed field), its seed, and the inputs its model reads."""
    options = {key: value for key, value in config.resolve().fingerprint().items() if key != "seed"}
    reads_features = config.model == "llmrec"
    inputs = {key: value for key, value in data.input_digests.items() if reads_features or key in SPLIT_TABLES}
    return {"config": options, "seed": seed, "inputs": inputs}


def _reuse_fit(path: Path | None, fingerprint: dict[str, Any], model: MatrixFactorization) -> FitResult | None:
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
    assert config.lr is not None and config.max_epochs is not None
    device = resolve_device(config.device)
    seed_everything(seed)
    model, engine_name = build_model(config, data, device)
    reused = _reuse_fit(reuse, fit_fingerprint(data, config, seed), model)
    if reused is not None:
        return reused
    optimizer = build_optimizer(model, config)
    generator = torch.Generator().manual_seed(seed)
    runner = _EpochRunner(model, data, config, device)
    progress = _Progress()
    best_state = copy.deepcopy(model.state_dict())
    fingerprint = {"config": config.fingerprint(), "seed": seed, "inputs": data.input_digests}
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
        losses = runner.run(optimizer, generator)
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
            "fingerprint": fit_fingerprint(data, config, seed), "model": best_state, "best_epoch": progress.best_epoch,
            "best_metrics": progress.best_metrics, "history": progress.history, "engine": engine_name,
            "train_seconds": progress.train_seconds, "epochs_run": progress.epoch,
        })
    return FitResult(model, progress.best_epoch, progress.best_metrics, progress.history, engine_name,
                     progress.train_seconds, progress.epoch)
