"""Time per stage of `llmrec run` on the default demo config (configs/demo.toml).

Runs the whole job twice in a fresh run directory with a fresh completion
store: the first run does all the work, the second shows what a rerun with
unchanged inputs costs (every stage a no-op or served from the store).
Writes bench/results/run.md.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path

from llmrec.artifacts import read_json
from llmrec.job import load_job_config, run_job

log = logging.getLogger("bench.run")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "run.md"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-run-") as scratch:
        os.environ["LLMREC_HOME"] = str(Path(scratch) / "home")  # cold completion store and caches
        config = load_job_config(REPO / "configs" / "demo.toml", {})
        run_dir = Path(scratch) / "run"
        first = run_job(run_dir, config)
        second = run_job(run_dir, config)
        augment = read_json(run_dir / "augment_report.json")
    load = os.getloadavg()[0]
    lines = [
        "# `llmrec run` time per stage (configs/demo.toml)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at the end.",
        "Default demo: ml-latest-small, SmolLM2-135M in-process (transformers), 5 users / 10 items, "
        "all-MiniLM-L6-v2, LLMRec + popularity, MF-BPR, LightGCN, 1 seed, CPU; cold completion store.",
        "",
        "| stage | first run s | rerun s |",
        "|---|---:|---:|",
    ]
    for stage, seconds in first.stage_seconds.items():
        lines.append(f"| {stage} | {seconds:.1f} | {second.stage_seconds.get(stage, 0.0):.1f} |")
    lines.append(f"| total | {sum(first.stage_seconds.values()):.1f} | {sum(second.stage_seconds.values()):.1f} |")
    lines += ["", "Augmentation validity (first run):", ""]
    for what, counts in sorted(augment.items()):
        lines.append(f"- {what}: {counts['requested']} requested, {counts['valid']} valid, "
                     f"{counts['repaired']} repaired, {counts['failed']} failed")
    lines += ["", "On the rerun every stage is a no-op (manifest checks) or served from the completion store.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote %s", RESULTS)
