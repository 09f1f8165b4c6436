"""Train a model on a run for one or more seeds and write `<run>/model/<name>/`.

Per seed: `fit` (selection data only), then the test evaluator ONCE with the
best weights. Outputs: metrics.json (config, per-seed selection/test metrics,
mean/std, protocol, best epochs, engine, device, timings), summary.md,
training_curve.png and checkpoint.pt (the seed with the best selection
Recall@20, state dicts only), and the stage `train:<name>` in the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from llmrec.artifacts import (
    MODEL_DIR,
    artifact_error,
    atomic_path,
    open_run_artifact,
    read_json,
    read_run_json,
    record_stage,
    stage_is_current,
    write_json,
    write_text,
)
from llmrec.errors import ArtifactError, ConfigError
from llmrec.evaluation import Evaluator
from llmrec.paths import inside_run
from llmrec.recommender.checkpoints import save_checkpoint
from llmrec.recommender.data import RunData, load_run_data
from llmrec.recommender.factory import build_model
from llmrec.recommender.models import EmbeddingRecommender
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.protocol import build_evaluators, protocol_label
from llmrec.recommender.reporting import mean_and_std, summary_markdown, write_training_curve
from llmrec.recommender.trainer import (
    SELECTION_METRIC,
    TRAINING_REVISION,
    fit,
    fit_fingerprint,
    fit_record_path,
    torch_device,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
PAIRED_METRIC = "recall@20"
SEED_RECORD = "result.json"  # a trained seed: its fingerprint and its metrics.json record (weights in best.pt)
OUTPUT_FILES = ("metrics.json", "summary.md", "training_curve.png", "checkpoint.pt")


def model_dir(run_dir: Path | str, name: str) -> Path:
    """`<run>/model/<name>`; a name with `..` or an absolute path is refused (ConfigError), never written."""
    folder = inside_run(Path(run_dir) / MODEL_DIR, name)
    if folder == (Path(run_dir) / MODEL_DIR).resolve():
        raise ConfigError(f"model name '{name}' names the model folder itself; expected a sub-folder name")
    return folder


def _checkpoint_payload(config: TrainConfig, data: RunData, model: EmbeddingRecommender, run: dict[str, Any],
                        engine: str) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(config),
        "state_dict": model.state_dict(),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "feature_dims": {name: int(values.shape[1]) for name, values in data.features.items()},
        "seed": run["seed"],
        "best_epoch": run["best_epoch"],
        "engine": engine,
    }


def _per_user_record(evaluator: Evaluator, per_user: dict[str, Any]) -> dict[str, list]:
    """Test Recall@20 per evaluated user, kept for paired tests between models (`comparison.paired_test`)."""
    return {"users": evaluator.users.tolist(), PAIRED_METRIC: per_user[PAIRED_METRIC].tolist()}


def _seed_fingerprint(data: RunData, config: TrainConfig, seed: int) -> dict[str, Any]:
    """`fit_fingerprint` as it reads back from JSON (tuples become lists), to compare with a saved one."""
    return json.loads(json.dumps(fit_fingerprint(data, config, seed), default=str))


def _finished_seed(seed_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a seed trained and tested earlier with the same options, seed and inputs (its SEED_RECORD, its
    weights in best.pt), else None."""
    path = seed_dir / SEED_RECORD
    if not path.is_file():
        return None
    saved = read_json(path)
    if saved.get("fingerprint") != fingerprint or not (seed_dir / "best.pt").is_file():
        return None
    logger.info("seed %d: trained and tested earlier with the same options and inputs; reading %s",
                saved["run"]["seed"], path)
    return saved["run"]


def _train_seed(data: RunData, config: TrainConfig, seed: int, out_dir: Path, device: str) -> tuple[dict[str, Any], bool]:
    """The seed's record for metrics.json, and whether it left weights (`seed_<n>/best.pt`; popularity has none).

    A trained seed leaves `seed_<n>/SEED_RECORD` (its test result included),
    so a comparison stopped after hours loses only the seeds in flight, and
    seeds trained in worker processes (`comparison.train_all`) are read back
    here; the test split is still evaluated once per trained seed.
    """
    seed_dir = out_dir / f"seed_{seed}"
    fingerprint = _seed_fingerprint(data, config, seed)
    finished = _finished_seed(seed_dir, fingerprint)
    if finished is not None:
        return finished, True
    run, has_weights = _fit_and_test(data, config, seed, seed_dir, device)
    if has_weights:  # popularity is counted in a blink and keeps no seed folder
        write_json(seed_dir / SEED_RECORD, {"fingerprint": fingerprint, "run": run})
    return run, has_weights


def train_seed(run_dir: Path | str, config: TrainConfig, name: str, seed: int) -> None:
    """Train and test one seed of `name` into `<run>/model/<name>/seed_<n>/` (a worker's unit of a comparison)."""
    config = config.resolve()
    out_dir = model_dir(run_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s, seed %d -> %s", name, seed, out_dir / f"seed_{seed}")  # the trainer's lines name the model only
    _train_seed(load_run_data(Path(run_dir)), config, seed, out_dir, str(torch_device(config.device)))


def _fit_and_test(data: RunData, config: TrainConfig, seed: int, seed_dir: Path,
                  device: str) -> tuple[dict[str, Any], bool]:
    evaluators = build_evaluators(data, config.protocol, device, config.eval_batch_size)
    assert evaluators.test is not None
    result = fit(data, config, seed, lambda model: evaluators.selection.evaluate(model.scorer()), seed_dir,
                 reuse=fit_record_path(data.run_dir, config.model, seed))
    test, per_user = evaluators.test.evaluate_per_user(result.model.scorer())  # the only look at the test split
    run = {"seed": seed, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
           "selection": result.best_metrics, "test": test, "test_per_user": _per_user_record(evaluators.test, per_user),
           "history": result.history, "train_seconds": result.train_seconds, "engine": result.engine}
    if not isinstance(result.model, EmbeddingRecommender):
        return run, False
    run["reused_fit"] = result.reused
    save_checkpoint(seed_dir / "best.pt", _checkpoint_payload(config, data, result.model, run, result.engine))
    (seed_dir / "resume.pt").unlink(missing_ok=True)
    return run, True


def _stage_params(config: TrainConfig) -> dict[str, Any]:
    """The train stage's parameters in the manifest: the options and the training revision that ran them."""
    return {**dataclasses.asdict(config.resolve()), "training_revision": TRAINING_REVISION}


def is_trained(run_dir: Path, config: TrainConfig, name: str, data: RunData) -> bool:
    """Whether `<run>/model/<name>` holds this config's results on these inputs (nothing to train)."""
    return stage_is_current(run_dir, f"train:{name}", _stage_params(config), data.input_digests)


def train_and_evaluate(run_dir: Path | str, config: TrainConfig, name: str | None = None,
                       data: RunData | None = None) -> dict[str, Any]:
    """Train `config.model` for `config.seeds` seeds; write and return metrics.json's content."""
    run_dir = Path(run_dir)
    name = name or config.model
    config = config.resolve()
    data = data if data is not None else load_run_data(run_dir)
    stage = f"train:{name}"
    if is_trained(run_dir, config, name, data):
        logger.info("%s: up to date (same options and inputs); reading %s", name, model_dir(run_dir, name))
        return read_run_json(run_dir, f"{MODEL_DIR}/{name}/metrics.json")
    out_dir = model_dir(run_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = str(torch_device(config.device))
    started = time.perf_counter()
    seeds = [_train_seed(data, config, config.seed + offset, out_dir, device) for offset in range(config.seeds)]
    runs = [run for run, _ in seeds]
    test_mean, test_std = mean_and_std([run["test"] for run in runs])
    selection_mean, selection_std = mean_and_std([run["selection"] for run in runs])
    chosen = max(runs, key=lambda run: run["selection"][SELECTION_METRIC])
    doc = {
        "name": name, "model": config.model, "protocol": config.protocol,
        "protocol_label": protocol_label(config.protocol, config.model_variant), "model_variant": config.model_variant,
        "selection_split": "test" if config.protocol == "paper" else "val",
        "config": dataclasses.asdict(config), "engine": runs[0]["engine"], "device": device,
        "runs": runs, "test_mean": test_mean, "test_std": test_std,
        "selection_mean": selection_mean, "selection_std": selection_std,
        "checkpoint_seed": chosen["seed"],
        "timings": {"train_seconds": sum(run["train_seconds"] for run in runs),
                    "wall_seconds": time.perf_counter() - started},
        "inputs": data.input_digests,
    }
    outputs = ["metrics.json", "summary.md"]
    if all(has_weights for _, has_weights in seeds):
        with atomic_path(out_dir / "checkpoint.pt") as tmp:
            shutil.copyfile(out_dir / f"seed_{chosen['seed']}" / "best.pt", tmp)
        write_training_curve(out_dir / "training_curve.png", runs, f"{name} ({config.model}, {config.protocol})")
        outputs += ["training_curve.png", "checkpoint.pt"]
    write_json(out_dir / "metrics.json", doc)
    write_text(out_dir / "summary.md", summary_markdown(doc))
    record_stage(
        run_dir, stage, params=_stage_params(config), inputs=data.input_digests,
        outputs=[f"model/{name}/{file}" for file in outputs],
        stats={"test_mean": test_mean, "best_epochs": [run["best_epoch"] for run in runs], "protocol": config.protocol},
    )
    logger.info("%s: test Recall@20 %.4f (%s protocol) -> %s", name, test_mean.get("recall@20", 0.0),
                config.protocol, out_dir)
    return doc


@dataclasses.dataclass
class TrainedModel:
    model: EmbeddingRecommender
    config: TrainConfig
    data: RunData
    checkpoint: dict[str, Any]


def load_trained(run_dir: Path | str, name: str, device: str = "auto") -> TrainedModel:
    """Rebuild a saved model on the run's current artifacts, refusing ones it was not trained on."""
    path = model_dir(run_dir, name) / "checkpoint.pt"  # refuses a name outside the run
    rel = f"{MODEL_DIR}/{name}/checkpoint.pt"
    with open_run_artifact(run_dir, rel) as handle:  # checked against the manifest's record
        try:
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt/foreign files
            raise artifact_error(run_dir, rel, f"not a readable llmrec checkpoint ({type(exc).__name__})") from None
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path}: checkpoint format {checkpoint.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    config = dataclasses.replace(TrainConfig(**checkpoint["config"]), device=device, stop_after_epochs=None)
    data = load_run_data(run_dir)
    if (data.n_users, data.n_items) != (checkpoint["n_users"], checkpoint["n_items"]):
        raise ArtifactError(
            f"{path}: trained on {checkpoint['n_users']} users x {checkpoint['n_items']} items, but the run now "
            f"has {data.n_users} x {data.n_items}; retrain with `llmrec train`"
        )
    dims = {name: int(values.shape[1]) for name, values in data.features.items()}
    if config.model == "llmrec" and dims != checkpoint["feature_dims"]:
        raise ArtifactError(
            f"{path}: trained with features {checkpoint['feature_dims']}, the run now has {dims}; retrain"
        )
    model, _ = build_model(config, data, torch_device(config.device))
    assert isinstance(model, EmbeddingRecommender)  # a model without weights leaves no checkpoint
    model.load_state_dict({key: value.to(next(model.parameters()).device)
                           for key, value in checkpoint["state_dict"].items()})
    return TrainedModel(model, config, data, checkpoint)


def evaluate_saved(run_dir: Path | str, name: str, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a saved checkpoint on the selection and test splits of its protocol."""
    trained = load_trained(run_dir, name, device)
    config = trained.config
    evaluators = build_evaluators(trained.data, config.protocol, str(torch_device(device)), config.eval_batch_size)
    with torch.no_grad():
        scorer = trained.model.scorer()
        selection = evaluators.selection.evaluate(scorer)
        test = evaluators.test.evaluate(scorer) if evaluators.test else selection
    return {"name": name, "protocol": config.protocol, "protocol_label": protocol_label(config.protocol, config.model_variant),
            "selection_split": evaluators.selection_split, "selection": selection, "test": test,
            "seed": trained.checkpoint["seed"], "best_epoch": trained.checkpoint["best_epoch"]}
