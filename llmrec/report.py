"""`report.md`: one page that says what a run did and how well, honestly labelled.

It is assembled only from the run's artifacts (manifest, augment_report.json,
model/comparison.json), so it can be rebuilt at any time and never shows a
number that is not on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrec.artifacts import read_json, read_manifest, write_text
from llmrec.recommender.reporting import metrics_table


def _dataset_section(manifest: dict[str, Any], config: dict[str, Any]) -> list[str]:
    stats = manifest["stages"].get("prepare", {}).get("stats", {})
    data = config.get("data", {})
    lines = ["## Dataset", ""]
    lines.append(f"- `{data.get('dataset', '?')}` from {stats.get('source', '?')}; split `{data.get('split', '?')}`, "
                 f"seed {data.get('seed', '?')}, implicit feedback: "
                 + ("all ratings" if data.get("keep_all_ratings") else f"rating >= {data.get('min_rating', '?')}"))
    lines.append(f"- {stats.get('users', '?')} users, {stats.get('items', '?')} items; train / val / test "
                 f"interactions {stats.get('train_interactions', '?')} / {stats.get('val_interactions', '?')} / "
                 f"{stats.get('test_interactions', '?')}")
    return lines + [""]


def _augmentation_section(run_dir: Path, config: dict[str, Any]) -> list[str]:
    path = run_dir / "augment_report.json"
    augment = config.get("augment", {})
    lines = ["## LLM augmentation", ""]
    lines.append(f"- backend `{augment.get('backend', '?')}`, model `{augment.get('model', '?')}`, "
                 f"users asked: {augment.get('limit_users') or 'all'} (the others get no augmented edge or profile)")
    if not path.is_file():
        return lines + ["- no augmentation was run", ""]
    report = read_json(path)
    lines += ["", "| augmentation | requested | valid | repaired | failed | top failure reasons |",
              "|---|---|---|---|---|---|"]
    for what, counts in sorted(report.items()):
        reasons = ", ".join(f"{reason} ({n})" for reason, n in list(counts.get("failure_reasons", {}).items())[:3])
        lines.append(f"| {what} | {counts['requested']} | {counts['valid']} | {counts['repaired']} | "
                     f"{counts['failed']} | {reasons or '-'} |")
    lines += ["", "Only valid and repaired answers enter the artifacts; failures are listed with reasons "
              "in `augment_report.json`.", ""]
    return lines + _position_bias_section(report.get("edges", {}))


def _position_bias_section(edges: dict[str, Any]) -> list[str]:
    """Whether the LLM read the candidates: agreement across shuffled orders, answered positions vs uniform."""
    check, bias = edges.get("consistency"), edges.get("position_bias")
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
    biased = any((bias.get(f"{role}_chi2_p") or 1.0) < 0.01 for role in ("liked", "disliked"))
    lines.append("- " + "; ".join(verdicts) + ". " + (
        "**The answers follow the position, not the movies** (p < 0.01)." if biased
        else "No sign of position bias at this sample size."))
    return lines + [""]


def _metrics_section(run_dir: Path) -> list[str]:
    path = run_dir / "model" / "comparison.json"
    if not path.is_file():
        return ["## Recommendation quality", "", "- no model was trained", ""]
    comparison = read_json(path)
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
        curve = run_dir / "model" / entry["name"] / "training_curve.png"
        if curve.is_file():
            lines.append(f"![{entry['label']} training curve](model/{entry['name']}/training_curve.png)")
    return lines + [""] + [f"{note}" for note in comparison.get("notes", [])] + [""]


def write_report(run_dir: Path | str, stage_seconds: dict[str, float] | None = None) -> Path:
    """Write `<run>/report.md` from the run's artifacts; returns its path."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    config_path = run_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    embed = manifest["stages"].get("embed", {}).get("params", {})
    lines = [f"# llmrec run: {run_dir.name}", ""]
    lines += _dataset_section(manifest, config)
    lines += _augmentation_section(run_dir, config)
    lines += ["## Embeddings", "", f"- text encoder: `{embed.get('model', 'not run')}`", ""]
    lines += _metrics_section(run_dir)
    if stage_seconds:
        lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in stage_seconds.items()]
        lines.append("")
    lines += ["Provenance (parameters, input and output checksums, library versions) is in `manifest.json`; "
              "the effective configuration in `config.json`.", ""]
    path = run_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path
