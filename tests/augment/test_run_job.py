"""`llmrec run`, the main job, end to end on a real MovieLens subset with the real SmolLM2.

Small on purpose (1 user, 1 attribute item, a few epochs): it checks the
chaining, the report and the no-op rerun, not recommendation quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.report_tables import assert_dataset_counts, assert_metrics_table


def _llmrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrec", *args], capture_output=True, text=True, timeout=900)


def test_run_job_writes_every_artifact_and_an_honest_report(small_dataset_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text(
        f'[data]\ndata_dir = "{small_dataset_dir}"\n'
        "[augment]\nlimit_users = 1\nlimit_items = 1\nmax_tokens = 32\ncandidates_epochs = 3\n"
        "[train]\nmax_epochs = 3\nmin_epochs = 0\nengine = \"torch\"\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    first = _llmrec("run", "--run", str(run), "--config", str(config))
    assert first.returncode == 0, first.stderr[-3000:]

    for artifact in ("train.parquet", "candidates.parquet", "augment_report.json", "embeddings/item_text.npy",
                     "model/comparison.json", "model/llmrec/metrics.json", "model/llmrec/checkpoint.pt"):
        assert (run / artifact).is_file(), artifact
    augment_report = json.loads((run / "augment_report.json").read_text())
    for what in ("edges", "profiles", "attributes"):
        counts = augment_report[what]
        asked = 3 if what == "edges" else 1  # the one user's edge question under 3 candidate orders
        assert counts["valid"] + counts["repaired"] + counts["failed"] == counts["requested"] == asked
    comparison = json.loads((run / "model" / "comparison.json").read_text())
    assert [entry["name"] for entry in comparison["entries"]] == ["popularity", "mf", "lightgcn", "llmrec"]
    assert comparison["protocol"] == "standard"
    effective = json.loads((run / "config.json").read_text())
    assert effective["augment"]["limit_users"] == 1 and effective["train"]["max_epochs"] == 3

    report = (run / "report.md").read_text()
    assert "Protocol: " in report and "validation" in report.lower()
    assert "| llmrec |" in report and "| lightgcn |" in report
    assert "| edges | 3 |" in report
    assert "Time per stage" in report
    # the numbers: the dataset line is the run's tables, each model's row its own metrics file
    assert_dataset_counts(report, run)
    assert_metrics_table(report, run, {name: name for name in ("popularity", "mf", "lightgcn", "llmrec")}, seeds=1)

    manifest_before = json.loads((run / "manifest.json").read_text())
    second = _llmrec("run", "--run", str(run), "--config", str(config))
    assert second.returncode == 0, second.stderr[-3000:]
    manifest_after = json.loads((run / "manifest.json").read_text())
    for stage in ("prepare", "candidates", "embed", "train:llmrec", "train:lightgcn"):  # unchanged: not redone
        assert manifest_after["stages"][stage]["finished_at"] == manifest_before["stages"][stage]["finished_at"]
    assert "up to date" in second.stderr


def test_run_job_rejects_an_unknown_config_table(tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text("[trian]\nseeds = 2\n", encoding="utf-8")
    result = _llmrec("run", "--run", str(tmp_path / "run"), "--config", str(config))
    assert result.returncode == 2
    assert "unknown table(s) ['trian']" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
