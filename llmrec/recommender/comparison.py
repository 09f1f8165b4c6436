"""Several models on the same split in one table: baselines (`train --baselines`) and ablations.

Each entry trains through `train_and_evaluate` (so it has its own
`model/<name>/` outputs) and the table lists the test mean ± std of each, with
the protocol and the options every model shares stated above it. Baselines
take the compared model's size, regularisation, budget and evaluation options
(`SHARED_OPTIONS`), so a difference in the table is the model's, not a
difference in layers or epochs; only the learning rate is each model's own
default. Ablation variants follow the original README: w/o-u-i drops augmented
edges, w/o-u user profiles, w/o-u&i profiles and item attributes, w/o-prune the
noise pruning. "text-only" is LLMRec with every LLM output dropped (no
augmented edges, profiles or attributes): LightGCN plus the item text (and
image) embeddings, the control that says whether the LLM adds anything beyond
the titles. A paired Wilcoxon signed-rank test on per-user test Recall@20
(seeds pooled) compares the model with chosen baselines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llmrec.artifacts import MODEL_DIR, record_stage, run_artifact_digest, write_json, write_text
from llmrec.errors import ConfigError
from llmrec.recommender.data import RunData, load_run_data
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.protocol import protocol_label
from llmrec.recommender.reporting import metrics_table
from llmrec.recommender.runner import PAIRED_METRIC, is_trained, train_and_evaluate, train_seed

logger = logging.getLogger(__name__)

BASELINES = ("popularity", "mf", "lightgcn", "text-only")
# options every model of a comparison shares (the learning rate stays each model's own default)
SHARED_OPTIONS = (
    "seed", "seeds", "device", "engine", "protocol", "batch_size", "eval_batch_size", "max_epochs", "min_epochs",
    "patience", "relative_patience", "trend_tolerance", "eval_every", "embedding_dim", "n_layers", "l2_reg",
    "max_grad_norm",
)  # fmt: skip
TEXT_ONLY: dict[str, float] = {"aug_sample_rate": 0.0, "user_profile_weight": 0.0, "item_attribute_weight": 0.0}
ABLATIONS: dict[str, dict[str, float]] = {
    "full": {},
    "w/o-u-i": {"aug_sample_rate": 0.0},
    "w/o-u": {"user_profile_weight": 0.0},
    "w/o-u&i": {"user_profile_weight": 0.0, "item_attribute_weight": 0.0},
    "w/o-prune": {"prune_rate": 0.0},
}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What `llmrec run` and `train --baselines` compare the model with (TOML table `[compare]`)."""

    section: ClassVar[str] = "compare"

    baselines: tuple[str, ...] = ("popularity", "mf", "lightgcn")
    ablations: bool = False  # also train the LLMRec ablation variants into the same table
    paired_with: tuple[str, ...] = ("lightgcn", "text-only")  # paired tests of the model vs these (when trained)
    jobs: int = 1  # models trained at once, each in a process of its own with cores / jobs threads

    def __post_init__(self) -> None:
        for option in ("baselines", "paired_with"):
            unknown = sorted(set(getattr(self, option)) - set(BASELINES))
            if unknown:
                raise ConfigError(f"[compare] option '{option}': unknown model(s) {unknown}; expected {BASELINES}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ConfigError(f"[compare] option 'jobs': expected an integer >= 1, got {self.jobs!r}")


def baseline_config(config: TrainConfig, baseline: str) -> TrainConfig:
    """The config of `baseline` when compared with `config`: the shared options, its own learning rate."""
    if baseline == "text-only":
        return dataclasses.replace(config, model="llmrec", **TEXT_ONLY)
    return TrainConfig(model=baseline, **{key: getattr(config, key) for key in SHARED_OPTIONS})


def train_all(run_dir: Path, plan: list[tuple[str, TrainConfig, str]], data: RunData,
              jobs: int = 1) -> dict[str, dict[str, Any]]:
    """Train each (label, config, output name) of `plan`; metrics.json's content by label.

    With `jobs` > 1 every (model, seed) pair is a unit of work in a pool of
    spawned processes with cores / jobs torch threads each: a comparison is many
    independent trainings (5 seeds of 8 models in the full experiment), one
    training cannot keep a small CPU box's cores busy (sparse products and
    Python overhead run on one), and a single model's seeds then also run side
    by side. Each unit leaves its seed's record (`runner.SEED_RECORD`), which
    `train_and_evaluate` then reads back instead of training; every seed is
    seeded by its own config, so the numbers equal those of `jobs` = 1. The
    costliest (LLMRec-type) units start first.
    """
    if jobs > 1:
        units = [(config, output, config.seed + offset) for _, config, output in plan
                 if config.model != "popularity" and not is_trained(run_dir, config, output, data)
                 for offset in range(config.seeds)]
        if len(units) > 1:
            _train_units(run_dir, sorted(units, key=lambda unit: unit[0].model != "llmrec"), jobs)
    return {label: train_and_evaluate(run_dir, config, output, data) for label, config, output in plan}


def _train_units(run_dir: Path, units: list[tuple[TrainConfig, str, int]], jobs: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    logger.info("training %d (model, seed) units, %d at once (%d torch thread(s) each)", len(units), jobs, threads)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_training_process, initargs=(threads, verbose))
    try:
        for future in [pool.submit(train_seed, run_dir, config, output, seed) for config, output, seed in units]:
            future.result()
    except BaseException:  # a failed unit or Ctrl-C: start nothing more (finished seeds stay on disk)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _training_process(threads: int, verbose: bool) -> None:
    """Set-up of a spawned training process: its thread count and the CLI's logging."""
    import torch

    from llmrec.logs import configure_logging

    torch.set_num_threads(threads)
    configure_logging(verbose)


def _slug(label: str) -> str:
    return label.replace("/", "").replace("&", "_and_").replace("-", "_")


def _entry(label: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "name": doc["name"], "model": doc["model"], "test_mean": doc["test_mean"],
            "test_std": doc["test_std"], "selection_mean": doc["selection_mean"],
            "best_epochs": [run["best_epoch"] for run in doc["runs"]], "seeds": len(doc["runs"]),
            "lr": doc["config"]["lr"]}


def shared_options_note(config: TrainConfig, entries: list[dict[str, Any]]) -> str:
    """One line naming the options every model shared, and each model's own learning rate."""
    resolved = config.resolve()
    values = ", ".join(f"{key} {getattr(resolved, key)}" for key in SHARED_OPTIONS
                       if key not in ("seed", "device", "protocol", "eval_batch_size"))
    lrs = ", ".join(f"{entry['label']} {entry['lr']:g}" for entry in entries if entry["model"] != "popularity")
    return f"Shared by every model: {values}; learning rates: {lrs}."


def paired_test(model: dict[str, Any], other: dict[str, Any], metric: str = PAIRED_METRIC) -> dict[str, Any]:
    """Wilcoxon signed-rank test of per-user test `metric`, model vs other, (seed, user) pairs pooled over seeds."""
    from scipy.stats import wilcoxon

    others = {run["seed"]: run for run in other["runs"]}
    first, second = [], []
    for run in model["runs"]:
        twin = others.get(run["seed"])
        if twin is None or "test_per_user" not in run or "test_per_user" not in twin:
            continue
        if run["test_per_user"]["users"] != twin["test_per_user"]["users"]:
            raise ConfigError(f"paired test {model['name']} vs {other['name']}: seed {run['seed']} was evaluated on "
                              "different users; retrain both on the same split")
        first.extend(run["test_per_user"][metric])
        second.extend(twin["test_per_user"][metric])
    a, b = np.asarray(first), np.asarray(second)
    result: dict[str, Any] = {"model": model["name"], "other": other["name"], "metric": metric, "pairs": len(a),
                              "test": "Wilcoxon signed-rank, two-sided, (seed, user) pairs pooled over seeds"}
    if len(a) == 0:
        return {**result, "mean_difference": None, "p_value": None}
    result["mean_difference"] = float(np.mean(a - b))
    result["better"], result["worse"] = int(np.sum(a > b)), int(np.sum(a < b))
    # zero differences (most users when two models agree) are dropped, as Wilcoxon's original test does
    result["p_value"] = 1.0 if not np.any(a != b) else float(wilcoxon(a, b, zero_method="wilcox").pvalue)
    return result


def _paired_note(test: dict[str, Any]) -> str:
    if test["p_value"] is None:
        return f"Paired test {test['model']} vs {test['other']}: no per-user results to pair."
    verdict = ("no significant difference" if test["p_value"] >= 0.05
               else "better" if test["mean_difference"] > 0 else "worse")
    return (f"Paired test, {test['model']} vs {test['other']} ({test['test']}; per-user test {test['metric']}, "
            f"{test['pairs']} pairs): mean difference {test['mean_difference']:+.4f}, {test['better']} better / "
            f"{test['worse']} worse, p = {test['p_value']:.3g}: {verdict} at 0.05.")


def _write_table(run_dir: Path, stem: str, title: str, config: TrainConfig, entries: list[dict[str, Any]],
                 notes: list[str], paired: list[dict[str, Any]] | None = None) -> None:
    rows = [(entry["label"], entry["test_mean"], entry["test_std"] if entry["seeds"] > 1 else None)
            for entry in entries]
    seeds = entries[0]["seeds"]
    label = protocol_label(config.protocol, config.model_variant)
    text = "\n".join([
        f"# {title}", "", f"Protocol: {label}",
        f"Test metrics, mean ± std over {seeds} seed(s); each row's outputs are in model/<name>/.", "",
        metrics_table(rows), "", *notes, "",
    ])
    write_text(run_dir / MODEL_DIR / f"{stem}.md", text)
    write_json(run_dir / MODEL_DIR / f"{stem}.json", {
        "protocol": config.protocol, "protocol_label": label, "model_variant": config.model_variant,
        "entries": entries, "notes": notes, "paired_tests": paired or [],
    })
    # recorded, so that its reader (the run's report.md) checks it; stage "compare" or "ablate"
    metrics = sorted({f"{MODEL_DIR}/{entry['name']}/metrics.json" for entry in entries})
    record_stage(run_dir, "compare" if stem == "comparison" else "ablate", {"models": [e["name"] for e in entries]},
                 {rel: run_artifact_digest(run_dir, rel) for rel in metrics},
                 [f"{MODEL_DIR}/{stem}.md", f"{MODEL_DIR}/{stem}.json"])  # fmt: skip


def compare_with_baselines(run_dir: Path | str, config: TrainConfig, name: str | None = None,
                           compare: CompareConfig | None = None, data: RunData | None = None) -> list[dict[str, Any]]:
    """Train `config.model`, its baselines (and ablations when asked); write model/comparison.md/json."""
    run_dir = Path(run_dir)
    compare = compare or CompareConfig()
    data = data if data is not None else load_run_data(run_dir)
    name = name or config.model
    plan = [(baseline, baseline_config(config, baseline), _slug(baseline))
            for baseline in compare.baselines if baseline != config.model]
    plan.append((name, config, name))
    if compare.ablations:
        plan += [(f"{name} {label}", dataclasses.replace(config, model="llmrec", **overrides), f"ablation_{_slug(label)}")
                 for label, overrides in list(ABLATIONS.items())[1:]]
    docs, same_as = _train_distinct(run_dir, plan, data, compare.jobs)
    entries = [_entry(label, docs[label]) for label, _, _ in plan]
    model_doc = docs[name]
    paired = [paired_test(model_doc, docs[other]) for other in compare.paired_with if other in docs]
    variant = ([f"`model_variant = \"{config.model_variant}\"` applies to {name}, text-only and the ablations; "
                "MF-BPR and LightGCN are the standard models."] if config.model_variant != "project" else [])
    notes = [shared_options_note(config, entries), *variant, *_text_only_notes(data, compare),
             *_same_model_notes(same_as),
             *(_paired_note(test) for test in paired)]
    _write_table(run_dir, "comparison", "Model comparison", config, entries, notes, paired)
    return entries


def effective_options(config: TrainConfig, data: RunData) -> dict[str, object]:
    """The options that decide what `config` trains on this run's data (a run without an input makes its options moot).

    Without augmented edges the project model's edge sampling rate and pruning
    rate touch nothing (its loss returns before either is read, and no random
    draw depends on them), so LLMRec, w/o-u-i and w/o-prune are one model, and
    so are text-only and w/o-u&i. The original variant prunes real samples too,
    so there only the sampling rate is moot.
    """
    resolved = config.resolve()
    if resolved.model == "llmrec" and len(data.augmented_triples) == 0:
        moot = {"aug_sample_rate": 0.0, **({"prune_rate": 0.0} if resolved.model_variant == "project" else {})}
        resolved = dataclasses.replace(resolved, **moot)
    return resolved.fingerprint()


def distinct_models(plan: list[tuple[str, TrainConfig, str]],
                    data: RunData) -> tuple[list[tuple[str, TrainConfig, str]], dict[str, str]]:
    """The plan's entries that train different models on this run's data, and each repeat's label -> its twin's.

    Training a repeat would spend hours on numbers that differ from its twin's
    only where they should not differ at all (the full experiment kept no
    augmented edge: 3 of its 9 rows repeat others).
    """
    first_label: dict[str, str] = {}
    distinct, same_as = [], {}
    for label, config, output in plan:
        key = json.dumps(effective_options(config, data), sort_keys=True, default=str)
        if key in first_label:
            same_as[label] = first_label[key]
        else:
            first_label[key] = label
            distinct.append((label, config, output))
    return distinct, same_as


def _train_distinct(run_dir: Path, plan: list[tuple[str, TrainConfig, str]], data: RunData,
                    jobs: int = 1) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """`train_all` over the plan's distinct models; metrics by label (a repeat gets its twin's), and the repeats."""
    distinct, same_as = distinct_models(plan, data)
    docs = train_all(run_dir, distinct, data, jobs)
    return {**docs, **{label: docs[twin] for label, twin in same_as.items()}}, same_as


def _same_model_notes(same_as: dict[str, str]) -> list[str]:
    return [f"{label} is the same model as {twin} on this run's data (no augmented edges: the edge sampling and "
            f"pruning options change nothing): trained once, its row repeats {twin}'s numbers."
            for label, twin in same_as.items()]


def _text_only_notes(data: RunData, compare: CompareConfig) -> list[str]:
    if "text-only" in compare.baselines and "item_text" not in data.features:
        return ["Note: the run has no `item_text` embeddings; text-only is LightGCN plus whatever modality remains."]
    return []


def _missing_feature_notes(data: RunData) -> list[str]:
    missing = [f"`{name}`" for name in ("user_profiles", "item_attributes") if name not in data.features]
    if not missing:
        return []
    return [f"Note: the run has no {', '.join(missing)} features; variants that drop them equal `full`."]


def ablate(run_dir: Path | str, config: TrainConfig) -> list[dict[str, Any]]:
    """Train the LLMRec model and its ablations; write model/ablation.md/json."""
    run_dir = Path(run_dir)
    data = load_run_data(run_dir)
    plan = [(label, dataclasses.replace(config, model="llmrec", **overrides), f"ablation_{_slug(label)}")
            for label, overrides in ABLATIONS.items()]
    docs, same_as = _train_distinct(run_dir, plan, data)
    entries = [_entry(label, docs[label]) for label, _, _ in plan]
    notes = [*_missing_feature_notes(data), *_same_model_notes(same_as)]
    _write_table(run_dir, "ablation", "LLMRec ablation", config, entries, notes)
    return entries


__all__ = ["ABLATIONS", "BASELINES", "CompareConfig", "ablate", "baseline_config", "compare_with_baselines",
           "distinct_models", "effective_options", "paired_test", "train_all"]
