"""`llmrec data list | prepare | info` through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llmrec.artifacts import read_json

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMREC_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", "from llmrec.cli import main; main()", *args],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip


def test_prepare_with_toml_then_info_then_noop(tmp_path: Path, isolated_home: Path, data_mirror: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text('[data]\nseed = 11\nsplit = "leave-last"\nkcore = 5\n')
    run = tmp_path / "run"
    first = _cli("data", "prepare", "--run", str(run), "--config", str(config), "--seed", "12", home=isolated_home)
    assert first.returncode == 0, first.stderr
    assert "written (source: mirror)" in first.stdout
    effective = read_json(run / "config.json")["data"]
    assert (effective["seed"], effective["split"], effective["kcore"]) == (12, "leave-last", 5)
    info = _cli("data", "info", str(run), "--json", home=isolated_home)
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    # leave-last: one test and one validation interaction per evaluable user.
    assert summary["splits"]["test"]["per_user"]["q0"] == summary["splits"]["test"]["per_user"]["q100"] == 1
    assert summary["splits"]["train"]["per_item"]["q0"] >= 1
    assert summary["interactions"] == sum(s["interactions"] for s in summary["splits"].values())
    again = _cli("data", "prepare", "--run", str(run), "--config", str(config), "--seed", "12", home=isolated_home)
    assert again.returncode == 0 and "up to date, nothing written" in again.stdout
    text = _cli("data", "info", str(run), home=isolated_home).stdout
    assert "per user:" in text and "density" in text


def test_list_shows_where_each_dataset_is(tmp_path: Path, isolated_home: Path, data_mirror: Path) -> None:
    (isolated_home / "datasets" / "ml-1m").mkdir(parents=True)
    for name in ("ratings.dat", "movies.dat", "users.dat"):
        (isolated_home / "datasets" / "ml-1m" / name).write_text("")
    result = _cli("data", "list", home=isolated_home)
    assert result.returncode == 0, result.stderr
    blocks = {block.split()[0]: block for block in result.stdout.strip().split("\n\n")}
    assert f"mirror: {data_mirror / 'ml-latest-small'}" in blocks["ml-latest-small"]
    assert "cache:" in blocks["ml-1m"]
    assert "not present" in blocks["ml-100k"] and "no redistribution" in blocks["ml-100k"]
    assert "--data-dir" in blocks["llmrec-format"]


def test_info_on_unprepared_run_is_one_line_error(tmp_path: Path, isolated_home: Path) -> None:
    result = _cli("data", "info", str(tmp_path / "nothing"), home=isolated_home)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "items.parquet: missing" in result.stderr
