"""The edge-signal audit: liked edges vs a random candidate and the base top-1, on validation positives only.

The run is the whole of ml-latest-small, prepared by the real `prepare` stage
(~1 s). Candidates are drawn without training: per user, 10 items reproducibly
drawn from those unseen in training, holding one or two of the user's
validation items for about half of the users. Edges and scores planted on the
validation positives must show up as preference; random ones must not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from llmrec import artifacts
from llmrec.augment.edge_audit import EdgeAudit, audit_edges, audit_run
from llmrec.cli import app
from llmrec.errors import ArtifactError
from llmrec.report import edge_audit_section

CANDIDATES_PER_USER = 10


@pytest.fixture(scope="module")
def split_run(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-latest-small prepared with its default random split (read-only: tests copy it)."""
    from llmrec.data.prepare import PrepareConfig, prepare_run

    run_dir = tmp_path_factory.mktemp("edge_audit") / "run"
    prepare_run(run_dir, PrepareConfig(dataset="ml-latest-small", data_dir=str(data_mirror / "ml-latest-small")))
    return run_dir


def _draw_candidates(run_dir: Path, seed: int = 7) -> pd.DataFrame:
    """Per training user, 10 unseen items in a random order; about half of the users get 1-2 validation items."""
    rng = np.random.default_rng(seed)
    train = pd.read_parquet(run_dir / artifacts.TRAIN)
    val_items = pd.read_parquet(run_dir / artifacts.VAL).groupby("user")["item"].apply(np.asarray)
    n_items = len(pd.read_parquet(run_dir / artifacts.ITEMS))
    rows = []
    for user, seen in train.groupby("user")["item"]:
        own_val = val_items.get(user, np.empty(0, dtype=np.int64))
        planted = (rng.choice(own_val, size=min(len(own_val), rng.integers(1, 3)), replace=False)
                   if len(own_val) and rng.random() < 0.5 else np.empty(0, dtype=np.int64))  # fmt: skip
        unseen = np.setdiff1d(np.arange(n_items), np.concatenate([seen.to_numpy(), own_val]))
        filler = rng.choice(unseen, size=CANDIDATES_PER_USER - len(planted), replace=False)
        items = rng.permutation(np.concatenate([planted, filler]))
        rows.append(pd.DataFrame({"user": user, "rank": np.arange(len(items)), "item": items}))
    candidates = pd.concat(rows, ignore_index=True).astype({"user": "int64", "rank": "int64", "item": "int64"})
    return candidates.assign(score=(1.0 - candidates["rank"] / CANDIDATES_PER_USER).astype("float32"))


def _positive(frame: pd.DataFrame, val: pd.DataFrame) -> np.ndarray:
    positives = pd.MultiIndex.from_frame(val[["user", "item"]])
    return pd.MultiIndex.from_arrays([frame["user"], frame["item"]]).isin(positives)


def _edges(candidates: pd.DataFrame, liked_rank: pd.Series) -> pd.DataFrame:
    """One edge per user: liked at `liked_rank[user]`, disliked at the next rank (wrapping around)."""
    by_rank = candidates.set_index(["user", "rank"])["item"]
    users = liked_rank.index.to_numpy()
    disliked_rank = (liked_rank.to_numpy() + 1) % CANDIDATES_PER_USER
    return pd.DataFrame({
        "user": users, "liked": by_rank.loc[list(zip(users, liked_rank.to_numpy()))].to_numpy(),
        "disliked": by_rank.loc[list(zip(users, disliked_rank))].to_numpy(), "model": "test", "template_hash": "h",
    })  # fmt: skip


def _planted_edges(candidates: pd.DataFrame, val: pd.DataFrame) -> pd.DataFrame:
    """Liked = a validation positive among the user's candidates where there is one, else rank 5."""
    marked = candidates.assign(positive=_positive(candidates, val))
    liked_rank = marked.sort_values(["user", "positive"], ascending=[True, False]).groupby("user").first()
    liked_rank = liked_rank["rank"].where(liked_rank["positive"], 5)
    return _edges(candidates, liked_rank)


def _random_edges(candidates: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    users = np.unique(candidates["user"])
    liked_rank = np.random.default_rng(seed).integers(0, CANDIDATES_PER_USER, size=len(users))
    return _edges(candidates, pd.Series(liked_rank, index=users))


@pytest.fixture(scope="module")
def tables(split_run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    candidates = _draw_candidates(split_run)
    val = pd.read_parquet(split_run / artifacts.VAL)
    with_positive = _positive(candidates, val)
    assert len(candidates) > 5000 and len(val) > 1000
    assert 200 < candidates.loc[with_positive, "user"].nunique() < 400  # about half of the ~600 users
    return candidates, val


@pytest.fixture
def edge_run(split_run: Path, tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> Path:
    """A copy of the split run with candidates and planted edges written as artifacts."""
    candidates, val = tables
    run_dir = tmp_path / "run"
    shutil.copytree(split_run, run_dir)
    artifacts.write_parquet(run_dir / artifacts.CANDIDATES, candidates)
    artifacts.write_parquet(run_dir / artifacts.AUGMENTED_EDGES, _planted_edges(candidates, val))
    return run_dir


def test_planted_edges_carry_preference_beyond_a_random_pick(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    candidates, val = tables
    edges = _planted_edges(candidates, val)
    audit = audit_edges(candidates, val, edges)
    users_with_val = edges["user"].isin(val["user"]).sum()
    assert audit.edge_users == len(edges) > 600 and audit.audited_users == users_with_val > 590
    assert audit.without_validation_positive == len(edges) - users_with_val
    assert audit.liked.value > 0.3 and audit.random_pick.value < 0.12
    assert audit.liked_minus_random.low > 0.2 and audit.liked_minus_top1.low > 0.2
    assert audit.liked.low < audit.liked.value < audit.liked.high
    assert audit.disliked.value < 0.12  # the rank after a planted positive is rarely a positive as well
    assert "Liked edges hit a validation positive" in audit.verdict
    assert ": preference beyond a random pick" in audit.verdict
    assert "; beyond the base model's top-1" in audit.verdict and "no evidence" not in audit.verdict
    assert EdgeAudit.from_dict(audit.as_dict()) == EdgeAudit.from_dict(json.loads(json.dumps(audit.as_dict())))

    section = edge_audit_section(audit.as_dict())
    assert sum(line.startswith(("| liked edge |", "| random pick |", "| base top-1 |", "| disliked edge |",
                                "| base bottom |")) for line in section) == 5  # fmt: skip
    assert f"**{audit.verdict}**" in section


def test_random_edges_show_no_preference(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    candidates, val = tables
    audit = audit_edges(candidates, val, _random_edges(candidates))
    assert audit.audited_users > 590
    assert audit.liked_minus_random.low < 0 < audit.liked_minus_random.high
    assert abs(audit.liked.value - audit.random_pick.value) < 0.03
    assert ": no evidence of preference beyond a random pick" in audit.verdict

    # A base model that ranks each user's validation positives first: the same random edges fall below it.
    first = candidates.assign(positive=_positive(candidates, val))
    first = first.sort_values(["user", "positive", "rank"], ascending=[True, False, True])
    reranked = first.assign(rank=first.groupby("user").cumcount()).drop(columns="positive")
    strong = audit_edges(reranked, val, _random_edges(candidates))
    assert strong.base_top1.value > 0.4 and strong.liked_minus_top1.high < 0
    assert "; below the base model's top-1" in strong.verdict


def test_planted_scores_beat_the_base_order_and_shuffled_scores_do_not(
    tables: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    candidates, val = tables
    rng = np.random.default_rng(11)
    positive = _positive(candidates, val)
    scores = candidates[["user", "item", "rank"]].assign(
        score=positive + 0.1 * rng.standard_normal(len(candidates)),
        conditional=rng.permutation(positive + 0.1 * rng.standard_normal(len(candidates))),
        tied=np.ones(len(candidates)),  # every pair a tie: AUC exactly 1/2 for every user
    )
    audit = audit_edges(candidates, val, _random_edges(candidates), scores)
    by_score = {entry.score: entry for entry in audit.auc}
    assert sorted(by_score) == ["conditional", "score", "tied"]
    planted, shuffled, tied = by_score["score"], by_score["conditional"], by_score["tied"]
    assert planted.users == candidates.loc[positive, "user"].nunique() > 200  # both positives and negatives
    assert planted.auc.value > 0.95 and planted.auc.low > planted.base_auc.high
    assert planted.difference.low > 0.3
    assert shuffled.auc.low < 0.5 < shuffled.auc.high
    assert tied.auc.value == tied.auc.low == tied.auc.high == 0.5
    assert 0.4 < planted.base_auc.value < 0.6  # the drawn order is random
    assert "per-user AUC" in audit.describe() and "conditional" in audit.describe()
    assert any(line.startswith("| score |") for line in edge_audit_section(audit.as_dict()))


def test_audit_run_reads_no_test_split_and_the_cli_prints_the_verdict(edge_run: Path) -> None:
    (edge_run / artifacts.TEST).write_bytes(b"not a parquet file")
    result = CliRunner().invoke(app, ["audit", "edges", str(edge_run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = json.loads((edge_run / artifacts.AUDIT_EDGES).read_text())
    assert written["audited_users"] > 590 and written["liked_minus_random"]["low"] > 0.2
    assert result.output.strip().splitlines()[-1] == written["verdict"]
    assert "liked edge" in result.output and "random pick" in result.output

    artifacts.write_parquet(edge_run / artifacts.AUGMENTED_EDGES, _planted_edges(*_tables_of(edge_run)).iloc[:0])
    empty = audit_run(edge_run)
    assert empty.audited_users == 0 and empty.liked.value is None and "could not be audited" in empty.verdict
    text = (edge_run / artifacts.AUDIT_EDGES).read_text()
    assert "NaN" not in text and json.loads(text)["liked"] == {"value": None, "low": None, "high": None}
    assert edge_audit_section(json.loads(text))[-2] == f"**{empty.verdict}**"


def _tables_of(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(run_dir / artifacts.CANDIDATES), pd.read_parquet(run_dir / artifacts.VAL)


def test_missing_edges_is_one_line_naming_the_file(edge_run: Path) -> None:
    (edge_run / artifacts.AUGMENTED_EDGES).unlink()
    with pytest.raises(ArtifactError) as raised:
        audit_run(edge_run)
    message = str(raised.value)
    assert "\n" not in message and artifacts.AUGMENTED_EDGES in message and "--what edges" in message
    assert not (edge_run / artifacts.AUDIT_EDGES).exists()
