"""`report.md`: one page that says what a run did and how well, honestly labelled.

It is assembled only from the run's artifacts (manifest, augment_report.json,
model/comparison.json), so it can be rebuilt at any time and never shows a
number that is not on disk. Each is checked against the sha256 the manifest
recorded (`artifacts.read_run_json`): a damaged one stops the report with one
line instead of printing what it now says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmrec import artifacts
from llmrec.artifacts import read_manifest, read_run_json, run_artifact_present, write_text
from llmrec.augment.pipeline import AugmentationCounts
from llmrec.recommender.reporting import metrics_table

#: What the report prints for a fact its run never recorded (a stage run by an older version, a partial run).
UNKNOWN = "?"


def _fields_of(cls: type, record: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `record` that name a field of dataclass `cls` (an absent one keeps the field's default)."""
    return {field.name: record[field.name] for field in dataclasses.fields(cls) if field.name in record}


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """The dataset lines of the report: the `[data]` table of config.json and the prepare stage's stats."""

    dataset: str = UNKNOWN
    source: str = UNKNOWN
    split: str = UNKNOWN
    seed: int | str = UNKNOWN
    keep_all_ratings: bool = False
    min_rating: float | str = UNKNOWN
    users: int | str = UNKNOWN
    items: int | str = UNKNOWN
    train_interactions: int | str = UNKNOWN
    val_interactions: int | str = UNKNOWN
    test_interactions: int | str = UNKNOWN

    @classmethod
    def read(cls, manifest: Mapping[str, Any], config: Mapping[str, Any]) -> DatasetFacts:
        stats = manifest["stages"].get("prepare", {}).get("stats", {})
        return cls(**{**_fields_of(cls, stats), **_fields_of(cls, config.get("data", {}))})


@dataclasses.dataclass(frozen=True)
class AugmentFacts:
    """The augmentation header of the report: the `[augment]` table of config.json."""

    backend: str = UNKNOWN
    model: str = UNKNOWN
    limit_users: int | None = None

    @classmethod
    def read(cls, config: Mapping[str, Any]) -> AugmentFacts:
        return cls(**_fields_of(cls, config.get("augment", {})))


def _dataset_section(data: DatasetFacts) -> list[str]:
    lines = ["## Dataset", ""]
    lines.append(f"- `{data.dataset}` from {data.source}; split `{data.split}`, seed {data.seed}, implicit feedback: "
                 + ("all ratings" if data.keep_all_ratings else f"rating >= {data.min_rating}"))
    lines.append(f"- {data.users} users, {data.items} items; train / val / test interactions "
                 f"{data.train_interactions} / {data.val_interactions} / {data.test_interactions}")
    return lines + [""]


def _augmentation_section(run_dir: Path, augment: AugmentFacts) -> list[str]:
    lines = ["## LLM augmentation", ""]
    lines.append(f"- backend `{augment.backend}`, model `{augment.model}`, "
                 f"users asked: {augment.limit_users or 'all'} (the others get no augmented edge or profile)")
    if not run_artifact_present(run_dir, artifacts.AUGMENT_REPORT):
        return lines + ["- no augmentation was run", ""]
    report = {what: AugmentationCounts.from_dict(record)
              for what, record in read_run_json(run_dir, artifacts.AUGMENT_REPORT).items()}  # fmt: skip
    lines += ["", "| augmentation | requested | valid | repaired | failed | top failure reasons |",
              "|---|---|---|---|---|---|"]
    for what, counts in sorted(report.items()):
        reasons = ", ".join(f"{reason} ({n})" for reason, n in list(counts.failure_reasons().items())[:3])
        lines.append(f"| {what} | {counts.requested} | {counts.valid} | {counts.repaired} | "
                     f"{counts.failed} | {reasons or '-'} |")
    lines += ["", "Only valid and repaired answers enter the artifacts; failures are listed with reasons "
              f"in `{artifacts.AUGMENT_REPORT}`.", ""]
    edges = report.get("edges")
    if edges is None:
        return lines
    method = edges.scoring.get("edge_method", "choose")
    if method != "choose":
        lines += [f"- edges picked by `{method}`: " + _EDGE_METHOD_TEXT.get(method, "see docs/results.md"), ""]
    lines += _position_bias_section(edges.consistency, edges.position_bias)
    return lines + (edge_audit_section(edges.audit) if edges.audit else [])


#: One line per edge method that is not the numbered-candidate question, for the report.
_EDGE_METHOD_TEXT = {
    "likelihood": "each candidate scored alone, log P(candidate | history); liked = highest, disliked = lowest",
    "pmi": "each candidate scored alone, log P(candidate | history) - log P(candidate | no history); "
           "liked = highest, disliked = lowest",
    "yesno": "each candidate asked alone, \"would this user enjoy it?\", log-odds of yes calibrated by the same "
             "question without the history; liked = highest, disliked = lowest",
    "control": "no LLM: the base model's own top-1 candidate (liked) and last candidate (disliked)",
}


def _position_bias_section(check: dict[str, Any], bias: dict[str, Any]) -> list[str]:
    """Whether the LLM read the candidates: agreement across shuffled orders, answered positions vs uniform."""
    if not check or not bias:
        return []
    lines = ["### Did the LLM read the edge candidates?", ""]
    users, agreed, kept = check["users"], check["agreed"], check.get("kept", check["agreed"])
    share = f" ({agreed / users:.0%})" if users else ""
    if check["orders"] > 1:
        lines.append(f"- model `{bias['model']}`: each user asked under {check['orders']} shuffled candidate orders "
                     f"(seed {check.get('candidate_order_seed', '?')}); the same items won a majority for "
                     f"**{agreed} of {users} users{share}**. {check['position_locked']} of "
                     f"{check['users_with_two_valid_orders']} users with two or more valid answers named the same "
                     "candidate numbers under every order (answered by position, not by movie; no edge). "
                     f"Edges kept: **{kept}**.")
    else:
        lines.append(f"- model `{bias['model']}`: one shuffled candidate order per user (seed "
                     f"{check.get('candidate_order_seed', '?')}), no consistency check: {kept} of {users} users kept.")
    answers, width = bias["answers"], bias["candidates"]
    if not answers:
        return lines + ["- no valid edge answer, so no position histogram", ""]
    lines += ["", f"Answered candidate numbers ({answers} valid answers). Orders are random, so a model that reads the "
              "movies names every number about equally often (row `uniform`):", ""]
    lines.append("| | " + " | ".join(str(n) for n in range(1, width + 1)) + " |")
    lines.append("|---" * (width + 1) + "|")
    for role in ("liked", "disliked"):
        lines.append(f"| {role} | " + " | ".join(str(n) for n in bias[role]) + " |")
    lines.append("| uniform | " + " | ".join(f"{n:.1f}" for n in bias["uniform"]) + " |")
    lines.append("")
    verdicts = []
    for role in ("liked", "disliked"):
        p_value = bias.get(f"{role}_chi2_p")
        p_text = f", chi-square p = {p_value:.2g}" if p_value is not None else ""
        verdicts.append(f"{role}: {bias[f'{role}_top_share']:.0%} at number {bias[f'{role}_top_position']}{p_text}")
    # p can underflow to exactly 0.0 (1,827 answers all at one number): a falsy p is the strongest evidence
    p_values = [bias.get(f"{role}_chi2_p") for role in ("liked", "disliked")]
    biased = any(p_value is not None and p_value < 0.01 for p_value in p_values)
    lines.append("- " + "; ".join(verdicts) + ". " + (
        "**The answers follow the position, not the movies** (p < 0.01)." if biased
        else "No sign of position bias at this sample size."))
    return lines + [""]


def edge_audit_section(audit: dict[str, Any]) -> list[str]:
    """The edge audit (`llmrec audit edges`, an `EdgeAudit.as_dict()`): hit rates, AUCs, the verdict in bold."""
    from llmrec.augment.edge_audit import HIT_RATE_ROWS, EdgeAudit

    result = EdgeAudit.from_dict(audit)
    lines = ["### Do the liked edges carry preference? (validation positives)", ""]
    if not result.audited_users:
        return lines + [f"**{result.verdict}**", ""]

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def share_interval(estimate: Any) -> str:
        return "-" if estimate.low is None else f"{100 * estimate.low:.1f} to {100 * estimate.high:.1f}%"

    def auc(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def auc_interval(estimate: Any) -> str:
        return "-" if estimate.low is None else f"{estimate.low:.3f} to {estimate.high:.3f}"

    lines += [f"{result.audited_users} of {result.edge_users} users with an edge audited "
              f"({result.without_validation_positive} without a validation positive and "
              f"{result.without_candidates} without candidates left out). Share of users whose pick is one of "
              f"their validation positives, bootstrap 95% intervals over users ({result.resamples} resamples):", "",
              "| pick | hit rate | 95% interval |", "|---|---|---|"]  # fmt: skip
    for label, name in HIT_RATE_ROWS:
        estimate = getattr(result, name)
        lines.append(f"| {label} | {share(estimate.value)} | {share_interval(estimate)} |")
    lines.append("")
    if result.auc:
        lines += ["Per-user AUC of each edge score against validation positives (users whose candidates hold both), "
                  "next to the base model's candidate order:", "",
                  "| score | users | AUC | 95% interval | base AUC | 95% interval | difference | 95% interval |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for entry in result.auc:
            difference = "-" if entry.difference.value is None else f"{entry.difference.value:+.3f}"
            lines.append(f"| {entry.score} | {entry.users} | {auc(entry.auc.value)} | {auc_interval(entry.auc)} | "
                         f"{auc(entry.base_auc.value)} | {auc_interval(entry.base_auc)} | {difference} | "
                         f"{auc_interval(entry.difference)} |")  # fmt: skip
        lines.append("")
    return lines + [f"**{result.verdict}**", ""]


def _metrics_section(run_dir: Path) -> list[str]:
    if not run_artifact_present(run_dir, artifacts.COMPARISON):
        return ["## Recommendation quality", "", "- no model was trained", ""]
    comparison = read_run_json(run_dir, artifacts.COMPARISON)
    entries = comparison["entries"]
    seeds = entries[0]["seeds"] if entries else 0
    # One seed has no spread: print the value alone rather than a misleading "± 0".
    rows = [(entry["label"], entry["test_mean"], entry["test_std"] if seeds > 1 else None) for entry in entries]
    lines = ["## Recommendation quality", "", f"Protocol: {comparison['protocol_label']}", "",
             (f"Test metrics, mean ± std over {seeds} seeds, every model on the same split:" if seeds > 1 else
              "Test metrics of one seed (no spread: use `--seeds 5` before reading differences), every model on "
              "the same split:"), "",
             metrics_table(rows), ""]
    for entry in entries:
        curve = run_dir / artifacts.MODEL_DIR / entry["name"] / "training_curve.png"
        if curve.is_file():
            lines.append(f"![{entry['label']} training curve](model/{entry['name']}/training_curve.png)")
    return lines + [""] + [f"{note}" for note in comparison.get("notes", [])] + [""]


def write_report(run_dir: Path | str, stage_seconds: dict[str, float] | None = None) -> Path:
    """Write `<run>/report.md` from the run's artifacts; returns its path."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    config = read_run_json(run_dir, artifacts.CONFIG) if (run_dir / artifacts.CONFIG).is_file() else {}
    embed = manifest["stages"].get("embed", {}).get("params", {})
    lines = [f"# llmrec run: {run_dir.name}", ""]
    lines += _dataset_section(DatasetFacts.read(manifest, config))
    lines += _augmentation_section(run_dir, AugmentFacts.read(config))
    lines += ["## Embeddings", "", f"- text encoder: `{embed.get('model', 'not run')}`", ""]
    lines += _metrics_section(run_dir)
    if stage_seconds:
        lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in stage_seconds.items()]
        lines.append("")
    lines += ["Provenance (parameters, input and output checksums, library versions) is in `manifest.json`; "
              "the effective configuration in `config.json`.", ""]
    path = run_dir / artifacts.REPORT
    write_text(path, "\n".join(lines))
    return path
