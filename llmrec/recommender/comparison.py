"""Several models on the same split in one table: baselines (`train --baselines`) and ablations.

Each entry trains through `train_and_evaluate` (so it has its own
`model/<name>/` outputs) and the table lists the test mean ± std of each, with
the protocol stated above it. Ablation variants follow the original README:
w/o-u-i drops augmented edges, w/o-u user profiles, w/o-u&i profiles and item
attributes, w/o-prune the noise pruning.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from llmrec.artifacts import write_json, write_text
from llmrec.recommender.data import RunData, load_run_data
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.protocol import PROTOCOL_LABELS
from llmrec.recommender.reporting import metrics_table
from llmrec.recommender.runner import train_and_evaluate

logger = logging.getLogger(__name__)

BASELINES = ("popularity", "mf", "lightgcn")
ABLATIONS: dict[str, dict[str, float]] = {
    "full": {},
    "w/o-u-i": {"aug_sample_rate": 0.0},
    "w/o-u": {"user_profile_weight": 0.0},
    "w/o-u&i": {"user_profile_weight": 0.0, "item_attribute_weight": 0.0},
    "w/o-prune": {"prune_rate": 0.0},
}


def _entry(label: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "name": doc["name"], "model": doc["model"], "test_mean": doc["test_mean"],
            "test_std": doc["test_std"], "selection_mean": doc["selection_mean"],
            "best_epochs": [run["best_epoch"] for run in doc["runs"]], "seeds": len(doc["runs"])}


def _write_table(run_dir: Path, stem: str, title: str, protocol: str, entries: list[dict[str, Any]],
                 notes: list[str]) -> None:
    rows = [(entry["label"], entry["test_mean"], entry["test_std"] if entry["seeds"] > 1 else None)
            for entry in entries]
    seeds = entries[0]["seeds"]
    text = "\n".join([
        f"# {title}", "", f"Protocol: {PROTOCOL_LABELS[protocol]}",
        f"Test metrics, mean ± std over {seeds} seed(s); each row's outputs are in model/<name>/.", "",
        metrics_table(rows), "", *notes, "",
    ])
    write_text(run_dir / "model" / f"{stem}.md", text)
    write_json(run_dir / "model" / f"{stem}.json", {"protocol": protocol, "protocol_label": PROTOCOL_LABELS[protocol],
                                                    "entries": entries, "notes": notes})


def compare_with_baselines(run_dir: Path | str, config: TrainConfig, name: str | None = None) -> list[dict[str, Any]]:
    """Train `config.model` and popularity, MF-BPR and LightGCN; write model/comparison.md/json.

    Baselines share the seeds, device, engine, protocol and (when given) the
    epoch budget of `config`; their learning rate is their own per-model default.
    """
    run_dir = Path(run_dir)
    data = load_run_data(run_dir)
    entries = []
    shared = {key: getattr(config, key) for key in
              ("seed", "seeds", "device", "engine", "protocol", "batch_size", "max_epochs", "min_epochs", "patience")}
    for baseline in BASELINES:
        if baseline != config.model:
            doc = train_and_evaluate(run_dir, TrainConfig(model=baseline, **shared), baseline, data)
            entries.append(_entry(baseline, doc))
    doc = train_and_evaluate(run_dir, config, name or config.model, data)
    entries.append(_entry(name or config.model, doc))
    _write_table(run_dir, "comparison", "Model comparison", config.protocol, entries,
                 [f"Baselines use their per-model default learning rates; `{config.model}` uses the given options."])
    return entries


def _ablation_notes(data: RunData) -> list[str]:
    missing = [f"`{name}`" for name in ("user_profiles", "item_attributes") if name not in data.features]
    notes = []
    if missing:
        notes.append(f"Note: the run has no {', '.join(missing)} features; variants that drop them equal `full`.")
    if len(data.augmented_triples) == 0:
        notes.append("Note: the run has no augmented_edges.parquet; w/o-u-i and w/o-prune equal `full`.")
    return notes


def ablate(run_dir: Path | str, config: TrainConfig) -> list[dict[str, Any]]:
    """Train the LLMRec model and its ablations; write model/ablation.md/json."""
    run_dir = Path(run_dir)
    data = load_run_data(run_dir)
    entries = []
    for label, overrides in ABLATIONS.items():
        variant = dataclasses.replace(config, model="llmrec", **overrides)
        slug = label.replace("/", "").replace("&", "_and_").replace("-", "_")
        doc = train_and_evaluate(run_dir, variant, f"ablation_{slug}", data)
        entries.append(_entry(label, doc))
    _write_table(run_dir, "ablation", "LLMRec ablation", config.protocol, entries, _ablation_notes(data))
    return entries
