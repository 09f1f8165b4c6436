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
    return lines + ["", "Only valid and repaired answers enter the artifacts; failures are listed with reasons "
                    "in `augment_report.json`.", ""]


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
