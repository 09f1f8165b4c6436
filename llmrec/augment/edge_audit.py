"""`llmrec audit edges`: do the LLM's liked edges carry preference, judged on validation positives?

Each user's edge is a (liked, disliked) pair chosen among that user's
candidates, the base LightGCN's top-k. A liked pick that lands on a
validation positive more often than a random candidate does, and more often
than the base model's own first candidate, is evidence that the edges add
preference the graph did not already hold. Only the validation split is read:
the test split stays unseen until the final evaluation.

Every figure is a mean over the audited users with a bootstrap 95% percentile
interval. One matrix of resampled users serves every figure, so a difference
of two figures is resampled in pairs (its interval is that of a paired
difference, much narrower than two overlapping intervals suggest).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec import artifacts

#: Columns of edge_scores.parquet that name a row; every other float column is a score to audit.
SCORE_KEYS = ("user", "item", "rank")
_DIGITS = 4


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over users and its bootstrap 95% percentile interval; None where no user counts."""

    value: float | None = None
    low: float | None = None
    high: float | None = None

    def above(self, level: float) -> bool:
        return self.low is not None and self.low > level

    def below(self, level: float) -> bool:
        return self.high is not None and self.high < level


@dataclasses.dataclass(frozen=True)
class ScoreAUC:
    """Per-user AUC of one score column against validation positives, next to the base model's (-rank)."""

    score: str
    users: int  # audited users whose candidates hold both validation positives and negatives
    auc: Estimate
    base_auc: Estimate
    difference: Estimate  # score AUC - base AUC, paired per user


@dataclasses.dataclass(frozen=True)
class EdgeAudit:
    edge_users: int
    audited_users: int
    without_candidates: int  # edge users left out: no candidate row
    without_validation_positive: int  # edge users left out: candidates but no validation positive
    resamples: int
    seed: int
    liked: Estimate  # share of users whose liked item is a validation positive
    random_pick: Estimate  # share of each user's candidates that are validation positives
    base_top1: Estimate  # the base model's rank-0 candidate is a validation positive
    disliked: Estimate  # lower is better
    base_bottom: Estimate  # the base model's last candidate (highest rank), for reference
    liked_minus_random: Estimate
    liked_minus_top1: Estimate
    auc: list[ScoreAUC]
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return _rounded(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EdgeAudit:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in record.items() if key in fields}
        for field in dataclasses.fields(cls):
            if field.type == "Estimate":
                values[field.name] = Estimate(**values.get(field.name) or {})
        values["auc"] = [
            ScoreAUC(score=entry["score"], users=entry["users"], auc=Estimate(**entry["auc"]),
                     base_auc=Estimate(**entry["base_auc"]), difference=Estimate(**entry["difference"]))
            for entry in record.get("auc", [])
        ]  # fmt: skip
        return cls(**values)

    def describe(self) -> str:
        """A plain-text table for the CLI (the verdict is printed separately, last)."""
        lines = [
            f"edge audit on validation positives: {self.audited_users} of {self.edge_users} edge users "
            f"({self.without_validation_positive} without a validation positive, {self.without_candidates} "
            f"without candidates, left out); {self.resamples} bootstrap resamples",
            f"{'':<16}{'hit rate':>10}  95% interval",
        ]
        for label, name in HIT_RATE_ROWS:
            estimate = getattr(self, name)
            lines.append(f"{label:<16}{_percent(estimate.value):>10}  {_interval(estimate)}")
        for label, estimate in (("liked - random", self.liked_minus_random), ("liked - top-1", self.liked_minus_top1)):
            lines.append(f"{label:<16}{_points(estimate.value):>10}  {_interval(estimate)}")
        if self.auc:
            lines += ["", "per-user AUC (users with validation positives and negatives among their candidates)",
                      f"{'score':<14}{'users':>6}{'AUC':>8}  {'95% interval':<16}{'base AUC':>9}  "
                      f"{'95% interval':<16}{'difference':>11}  95% interval"]
            for entry in self.auc:
                lines.append(
                    f"{entry.score:<14}{entry.users:>6}{_decimal(entry.auc.value):>8}  {_auc_interval(entry.auc):<16}"
                    f"{_decimal(entry.base_auc.value):>9}  {_auc_interval(entry.base_auc):<16}"
                    f"{_decimal(entry.difference.value, signed=True):>11}  {_auc_interval(entry.difference)}"
                )
        return "\n".join(lines)


#: (row label, EdgeAudit field) of the hit-rate table, in the order the CLI and report.md show them.
HIT_RATE_ROWS = (("liked edge", "liked"), ("random pick", "random_pick"), ("base top-1", "base_top1"),
                 ("disliked edge", "disliked"), ("base bottom", "base_bottom"))  # fmt: skip


def _rounded(value: Any) -> Any:
    """Floats to 4 digits, NaN and infinities to None, through nested dicts and lists (JSON-able)."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    if isinstance(value, float):
        return round(value, _DIGITS) if math.isfinite(value) else None
    return value


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f} pts"


def _decimal(value: float | None, *, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _interval(estimate: Estimate) -> str:
    """An interval of shares, in percent (points for a difference)."""
    return "-" if estimate.low is None else f"[{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"


def _auc_interval(estimate: Estimate) -> str:
    return "-" if estimate.low is None else f"[{estimate.low:.3f}, {estimate.high:.3f}]"


class _Bootstrap:
    """Means over users, each with a percentile interval from one shared matrix of resampled users."""

    def __init__(self, n_users: int, resamples: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.draws = rng.integers(0, n_users, size=(resamples, n_users)) if n_users else None

    def mean(self, values: np.ndarray, counted: np.ndarray | None = None) -> Estimate:
        """Mean of `values` over the users where `counted` is true (all by default).

        A resample's mean is over the counted users it drew, so a figure on a
        subset of users (an AUC) stays paired with the others.
        """
        if self.draws is None:
            return Estimate()
        counted = np.ones(len(values), dtype=bool) if counted is None else counted
        if not counted.any():
            return Estimate()
        kept = np.where(counted, values, 0.0)
        drawn_counts = counted[self.draws].sum(axis=1)
        drawn_sums = kept[self.draws].sum(axis=1)
        means = drawn_sums[drawn_counts > 0] / drawn_counts[drawn_counts > 0]
        low, high = np.percentile(means, [2.5, 97.5])
        return Estimate(float(kept.sum() / counted.sum()), float(low), float(high))


def _is_positive(users: pd.Series, items: pd.Series, positives: pd.MultiIndex) -> np.ndarray:
    return pd.MultiIndex.from_arrays([users.to_numpy(), items.to_numpy()]).isin(positives)


def _per_user(frame: pd.DataFrame, column: str, users: np.ndarray) -> np.ndarray:
    """Mean of a boolean column per user, in the order of `users` (every user has a row)."""
    return frame.groupby("user")[column].mean().reindex(users).to_numpy(dtype=float)


def per_user_auc(users: np.ndarray, positive: np.ndarray, score: np.ndarray) -> pd.Series:
    """AUC of `score` against `positive` within each user (Mann-Whitney; a tie counts 1/2).

    Users whose rows are all positive or all negative have no AUC and are left out.
    """
    frame = pd.DataFrame({"user": users, "positive": positive.astype(float), "score": score})
    grouped = frame.groupby("user")
    ranks = grouped["score"].rank(method="average")
    positives = grouped["positive"].sum()
    negatives = grouped.size() - positives
    rank_sums = (ranks * frame["positive"]).groupby(frame["user"]).sum()
    auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return auc[(positives > 0) & (negatives > 0)]


def _score_aucs(
    scores: pd.DataFrame, users: np.ndarray, positives: pd.MultiIndex, bootstrap: _Bootstrap
) -> list[ScoreAUC]:
    scores = scores[scores["user"].isin(users)]
    columns = [c for c in scores.columns if c not in SCORE_KEYS and pd.api.types.is_float_dtype(scores[c])]
    results = []
    for column in columns:
        rows = scores[np.isfinite(scores[column].to_numpy(dtype=float))]
        positive = _is_positive(rows["user"], rows["item"], positives)
        row_users = rows["user"].to_numpy()
        auc = per_user_auc(row_users, positive, rows[column].to_numpy(dtype=float)).reindex(users)
        base = per_user_auc(row_users, positive, -rows["rank"].to_numpy(dtype=float)).reindex(users)
        counted = auc.notna().to_numpy()
        auc_values, base_values = auc.to_numpy(dtype=float), base.to_numpy(dtype=float)
        results.append(ScoreAUC(
            score=column, users=int(counted.sum()), auc=bootstrap.mean(auc_values, counted),
            base_auc=bootstrap.mean(base_values, counted),
            difference=bootstrap.mean(auc_values - base_values, counted),
        ))  # fmt: skip
    return results


def audit_edges(
    candidates: pd.DataFrame,
    val: pd.DataFrame,
    edges: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> EdgeAudit:
    """Audit an edge set against validation positives (see the module docstring).

    `candidates`: user, rank, item; `val`: user, item; `edges`: user, liked,
    disliked (a user with several edges counts their mean); `scores`
    (optional): user, item, rank and float score columns, each audited by AUC.
    Audited users have an edge, candidates and a validation positive.
    """
    candidates = candidates.drop_duplicates(["user", "item"])
    positives = pd.MultiIndex.from_frame(val[["user", "item"]].drop_duplicates())
    edge_users = np.unique(edges["user"].to_numpy())
    with_candidates = np.intersect1d(edge_users, candidates["user"].to_numpy())
    users = np.intersect1d(with_candidates, positives.get_level_values("user").to_numpy())
    bootstrap = _Bootstrap(len(users), resamples, seed)

    pool = candidates[candidates["user"].isin(users)].sort_values(["user", "rank"], kind="stable")
    pool = pool.assign(positive=_is_positive(pool["user"], pool["item"], positives))
    ranked = pool.groupby("user")["positive"]
    picked = edges[edges["user"].isin(users)]
    picked = picked.assign(liked_hit=_is_positive(picked["user"], picked["liked"], positives),
                           disliked_hit=_is_positive(picked["user"], picked["disliked"], positives))  # fmt: skip
    liked = _per_user(picked, "liked_hit", users)
    random_pick = _per_user(pool, "positive", users)
    top1 = ranked.first().reindex(users).to_numpy(dtype=float)
    figures = {
        "liked": bootstrap.mean(liked),
        "random_pick": bootstrap.mean(random_pick),
        "base_top1": bootstrap.mean(top1),
        "disliked": bootstrap.mean(_per_user(picked, "disliked_hit", users)),
        "base_bottom": bootstrap.mean(ranked.last().reindex(users).to_numpy(dtype=float)),
        "liked_minus_random": bootstrap.mean(liked - random_pick),
        "liked_minus_top1": bootstrap.mean(liked - top1),
    }
    return EdgeAudit(
        edge_users=len(edge_users),
        audited_users=len(users),
        without_candidates=len(edge_users) - len(with_candidates),
        without_validation_positive=len(with_candidates) - len(users),
        resamples=resamples,
        seed=seed,
        **figures,
        auc=[] if scores is None else _score_aucs(scores, users, positives, bootstrap),
        verdict=verdict(len(users), **figures),
    )


def _difference(reference: Estimate, difference: Estimate) -> str:
    return (f"{_percent(reference.value)}, difference {_points(difference.value)} "
            f"[{100 * difference.low:.1f}, {100 * difference.high:.1f}]")  # fmt: skip


def verdict(users: int, **figures: Estimate) -> str:
    """One sentence: do liked edges hit validation positives beyond a random pick, and beyond the base top-1?"""
    if users == 0:
        return "No user had an edge, candidates and a validation positive, so the edges could not be audited."
    liked, random_pick, top1 = figures["liked"], figures["random_pick"], figures["base_top1"]
    versus_random, versus_top1 = figures["liked_minus_random"], figures["liked_minus_top1"]
    if versus_random.above(0):
        random_clause = "preference beyond a random pick"
    elif versus_random.below(0):
        random_clause = "worse than a random pick"
    else:
        random_clause = "no evidence of preference beyond a random pick"
    if versus_top1.above(0):
        top1_clause = "beyond the base model's top-1"
    elif versus_top1.below(0):
        top1_clause = "below the base model's top-1"
    else:
        top1_clause = "no evidence of a difference from the base model's top-1"
    return (f"Liked edges hit a validation positive for {_percent(liked.value)} {_interval(liked)} of {users} users: "
            f"{random_clause} ({_difference(random_pick, versus_random)}); "
            f"{top1_clause} ({_difference(top1, versus_top1)}).")  # fmt: skip


def _read_edge_artifact(run_dir: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    return artifacts.read_run_parquet(run_dir, name, list(columns))


def audit_run(run_dir: Path | str, *, resamples: int = 1000, seed: int = 0) -> EdgeAudit:
    """Audit the run's augmented edges (and edge scores when present) on validation; writes `audit_edges.json`."""
    run_dir = Path(run_dir)
    candidates = _read_edge_artifact(run_dir, artifacts.CANDIDATES, ["user", "rank", "item"])
    edges = _read_edge_artifact(run_dir, artifacts.AUGMENTED_EDGES, ["user", "liked", "disliked"])
    val = artifacts.read_run_parquet(run_dir, artifacts.VAL, ["user", "item"])
    scores = (artifacts.read_run_parquet(run_dir, artifacts.EDGE_SCORES, list(SCORE_KEYS) + ["score"])
              if artifacts.run_artifact_present(run_dir, artifacts.EDGE_SCORES) else None)  # fmt: skip
    audit = audit_edges(candidates, val, edges, scores, resamples=resamples, seed=seed)
    artifacts.write_json(run_dir / artifacts.AUDIT_EDGES, audit.as_dict())
    return audit
