"""`llmrec run`: the main job, prepare -> base model -> candidates -> augment -> embed -> train -> report.

Each stage is the same function its own command calls and is a no-op when its
inputs and options are unchanged (the manifest says so), so a rerun after a
crash or a config change redoes only what is needed. Stage wall times go into
the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec.augment.config import AugmentConfig
from llmrec.config import build, load_toml, write_effective_config
from llmrec.data.config import PrepareConfig
from llmrec.embed_config import EmbedConfig
from llmrec.recommender.options import TrainConfig

if TYPE_CHECKING:
    from llmrec.recommender.comparison import CompareConfig

logger = logging.getLogger(__name__)

STAGES = ("prepare", "candidates", "augment", "embed", "train", "report")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The effective configuration of every stage of one `llmrec run`: one field per TOML table."""

    data: PrepareConfig
    augment: AugmentConfig
    embed: EmbedConfig
    train: TrainConfig
    compare: CompareConfig  # baselines, ablations, paired tests


def load_job_config(config_path: Path | None, overrides: Mapping[str, Mapping[str, Any]]) -> JobConfig:
    """Layer each stage's TOML table under its CLI overrides; unknown tables are errors."""
    from llmrec.errors import ConfigError
    from llmrec.recommender.comparison import CompareConfig  # imports torch: not at start-up

    stages = {cls.section: cls for cls in (PrepareConfig, AugmentConfig, EmbedConfig, TrainConfig, CompareConfig)}
    document = load_toml(config_path)
    unknown = sorted(set(document) - set(stages))
    if unknown:
        raise ConfigError(f"{config_path}: unknown table(s) {unknown}; expected {', '.join(stages)}")
    built = {name: build(cls, name, document.get(name), overrides.get(name)) for name, cls in stages.items()}
    return JobConfig(**built)


@dataclasses.dataclass
class JobResult:
    run_dir: Path
    stage_seconds: dict[str, float]
    report_path: Path


@contextlib.contextmanager
def _timed(stage: str, seconds: dict[str, float]) -> Iterator[None]:
    logger.info("run: stage %s", stage)
    started = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - started
    logger.info("run: stage %s done in %.1f s", stage, seconds[stage])


def candidate_options(train: TrainConfig) -> dict[str, Any]:
    """The LightGCN baseline's options, so the candidates' base model is that baseline's fit (trained once)."""
    from llmrec.recommender.comparison import SHARED_OPTIONS, baseline_config

    lightgcn = baseline_config(train, "lightgcn")
    per_call = ("seed", "seeds", "device", "max_epochs", "protocol", "eval_batch_size")
    return {key: getattr(lightgcn, key) for key in SHARED_OPTIONS if key not in per_call}


def run_job(run_dir: Path | str, config: JobConfig) -> JobResult:
    """Run every stage on `run_dir` and write `report.md`."""
    from llmrec.augment.candidates import generate_candidates
    from llmrec.augment.pipeline import augment_run
    from llmrec.data.prepare import prepare_run
    from llmrec.embed import embed_run
    from llmrec.recommender.comparison import compare_with_baselines
    from llmrec.report import write_report

    run_dir = Path(run_dir)
    seconds: dict[str, float] = {}
    with _timed("prepare", seconds):
        prepare_run(run_dir, config.data)
    for stage in (config.augment, config.embed, config.train, config.compare):
        write_effective_config(run_dir, stage)
    augment = config.augment
    if "edges" in augment.what:
        with _timed("candidates", seconds):  # base LightGCN + top-k unseen items per user
            epochs = augment.candidates_epochs if augment.candidates_epochs is not None else config.train.max_epochs
            generate_candidates(run_dir, augment.candidates_k, seed=augment.seed, device=augment.device,
                                epochs=epochs, options=candidate_options(config.train))  # fmt: skip
    with _timed("augment", seconds):
        augment_run(run_dir, augment)
    with _timed("embed", seconds):
        embed_run(run_dir, config.embed)
    with _timed("train", seconds):
        compare_with_baselines(run_dir, config.train, compare=config.compare)
    with _timed("report", seconds):
        report_path = write_report(run_dir, seconds)
    return JobResult(run_dir, seconds, report_path)
