"""End to end through the real SmolLM2 (transformers backend) on a 4-user ml-latest-small run.

SmolLM2-135M often answers invalidly; these tests assert the accounting
(valid + repaired + failed == requested, only validated rows in artifacts,
every failure with its reason), resumption from the completion store and
crash safety, not answer quality. Decoding is greedy (temperature 0) so a
rerun that has to regenerate answers reproduces them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from llmrec import artifacts
from llmrec.artifacts import AUGMENT_REPORT
from llmrec.augment.config import AugmentConfig
from llmrec.augment.pipeline import ARTIFACT_FILES, run_augmentation
from llmrec.data.tables import load_split
from llmrec.prompts import load_template

# Short prompts; answer budgets sized from each schema (a fixed 32 tokens cut every constrained
# profile inside its JSON). SmolLM2 runs at ~12 tokens/s on 2 CPU cores. One candidate order per
# user: SmolLM2 answers by position, so the consistency check (tests/augment/test_position_bias.py)
# would keep no edge and the edge invariants below would check nothing.
USERS, ITEMS, HISTORY, K = 4, 5, 8, 5
OPTIONS = AugmentConfig(
    limit_users=USERS, limit_items=ITEMS, temperature=0.0, history_budget=HISTORY, candidates_k=K,
    edge_orders=1, candidates_epochs=2,
)
CLI_FLAGS = ["--limit-users", str(USERS), "--temperature", "0", "--history-budget", str(HISTORY),
             "--candidates-k", str(K)]  # fmt: skip


@pytest.fixture(scope="module")
def augmented(prepared_run: Path, smollm2, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full augmentation (edges, profiles, attributes) of a copy of the prepared run."""
    root = tmp_path_factory.mktemp("augmented")
    run_dir = root / "run"
    shutil.copytree(prepared_run, run_dir)
    store = root / "store.sqlite"
    summary = run_augmentation(run_dir, smollm2, replace(OPTIONS, store=str(store)))
    return {"run": run_dir, "store": store, "summary": summary}


def _stored_completions(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:  # the file exists but the writer has not created the schema yet
        return 0


def test_accounting_and_artifacts_hold_only_validated_rows(augmented: dict) -> None:
    run_dir, counts = augmented["run"], augmented["summary"].counts
    tables = load_split(run_dir)
    report = artifacts.read_json(run_dir / AUGMENT_REPORT)
    assert set(counts) == {"edges", "profiles", "attributes"}
    assert counts["profiles"].requested == USERS
    assert counts["edges"].requested == USERS * OPTIONS.edge_orders  # each user under several candidate orders
    assert counts["attributes"].requested == ITEMS
    for what, count in counts.items():
        assert count.valid + count.repaired + count.failed == count.requested
        assert all(f["reason"] for f in count.failures) and len(count.failures) == count.failed
        assert report[what]["valid"] == count.valid and report[what]["failed"] == count.failed
        frame = pd.read_parquet(run_dir / ARTIFACT_FILES[what])
        # Edges: one row per user whose candidate orders agreed (see test_position_bias.py).
        assert len(frame) == (count.consistency["kept"] if what == "edges" else count.valid + count.repaired)
        assert set(frame["template_hash"]) <= {load_template(what).template_hash}
        assert set(frame["model"]) <= {"smollm2-135m"}
        if what != "edges":  # an edge can stand on a majority of orders while one order failed
            id_column = "item" if what == "attributes" else "user"
            assert {f["id"] for f in count.failures}.isdisjoint(frame[id_column])
        assert f"augment:{what}" in artifacts.read_manifest(run_dir)["stages"]

    edges = pd.read_parquet(run_dir / "augmented_edges.parquet")
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    assert len(edges) > 0, "no augmented edge: the invariant checks below would check nothing"
    for row in edges.itertuples():
        offered = set(candidates.loc[candidates["user"] == row.user, "item"])
        seen = set(tables.train.loc[tables.train["user"] == row.user, "item"])
        assert row.liked in offered and row.disliked in offered and row.liked != row.disliked
        assert not {row.liked, row.disliked} & seen
    profiles = pd.read_parquet(run_dir / "user_profiles.parquet")
    assert len(profiles) > 0 and profiles["gender"].notna().any(), "no profile (or no gender) to check"
    assert str(profiles["age"].dtype) in ("int64", "Int64", "float64")  # nullable ints read back as float when null
    assert profiles["gender"].dropna().isin(["male", "female", "other"]).all()


def test_rerun_of_the_same_run_is_a_no_op(augmented: dict, smollm2) -> None:
    before = artifacts.read_manifest(augmented["run"])["stages"]
    summary = run_augmentation(augmented["run"], smollm2, replace(OPTIONS, store=str(augmented["store"])))
    assert all(count.skipped for count in summary.counts.values())
    assert artifacts.read_manifest(augmented["run"])["stages"] == before


def test_rerun_after_losing_the_artifacts_is_served_entirely_from_the_store(augmented: dict, tmp_path: Path) -> None:
    from llmrec.backends import get_backend

    run_dir = tmp_path / "run"
    shutil.copytree(augmented["run"], run_dir)
    for rel in [*ARTIFACT_FILES.values(), AUGMENT_REPORT]:
        (run_dir / rel).unlink()
    stored = _stored_completions(augmented["store"])
    untouched = get_backend("transformers", model="smollm2-135m")  # a fresh backend: never loaded
    summary = run_augmentation(run_dir, untouched, replace(OPTIONS, store=str(augmented["store"])))
    for what, count in summary.counts.items():
        assert count.usage["generated"] == 0 and count.usage["cache_hits"] == count.usage["prompts"] > 0
        assert count.valid == augmented["summary"].counts[what].valid
        assert len(pd.read_parquet(augmented["run"] / ARTIFACT_FILES[what])) > 0, f"{what}: nothing to compare"
        pd.testing.assert_frame_equal(
            pd.read_parquet(run_dir / ARTIFACT_FILES[what]), pd.read_parquet(augmented["run"] / ARTIFACT_FILES[what])
        )
    assert untouched._model is None  # the model was never loaded: no backend call happened
    assert _stored_completions(augmented["store"]) == stored


def test_sigkill_mid_augment_then_rerun_gives_the_uninterrupted_artifacts(augmented: dict, tmp_path: Path) -> None:
    # Attributes: the augmentation where SmolLM2 gets some answers right, so the comparison has rows.
    run_dir, store = tmp_path / "run", tmp_path / "store.sqlite"
    shutil.copytree(augmented["run"], run_dir)  # same candidates -> same item selection
    for rel in ARTIFACT_FILES.values():  # the report stays: an attributes-only run may not rebuild its other entries
        (run_dir / rel).unlink()
    command = [sys.executable, "-m", "llmrec", "augment", str(run_dir), "--what", "attributes", "--store", str(store),
               "--limit-items", str(ITEMS), "--backend-option", "batch_size=1", *CLI_FLAGS]  # fmt: skip
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while _stored_completions(store) < 1:
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no completion stored within 300 s"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "item_attributes.parquet").exists()  # killed before the artifact: nothing half-written
    finished = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert len(pd.read_parquet(augmented["run"] / "item_attributes.parquet")) > 0, "no attribute row to compare"
    pd.testing.assert_frame_equal(
        pd.read_parquet(run_dir / "item_attributes.parquet"), pd.read_parquet(augmented["run"] / "item_attributes.parquet")
    )
    report = json.loads((run_dir / AUGMENT_REPORT).read_text())["attributes"]
    reference = augmented["summary"].counts["attributes"]
    assert (report["valid"], report["repaired"], report["failed"]) == (reference.valid, reference.repaired, reference.failed)
    assert report["failures"] == reference.failures
    assert report["usage"]["cache_hits"] >= 1  # answers stored before the kill were not paid for twice


def test_cli_rejects_unknown_augmentation(prepared_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmrec", "augment", str(prepared_run), "--what", "edges,poems"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown augmentation(s) ['poems']" in result.stderr and "Traceback" not in result.stderr
