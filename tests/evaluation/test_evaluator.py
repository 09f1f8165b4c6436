"""The batched evaluator against hand-made cases and a per-user numpy reference."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from llmrec.errors import DataError
from llmrec.evaluation import Evaluator, ScorerError, interactions_to_csr, popularity_scorer
from llmrec.evaluation.ranking import topk_lowest_index_first

KS = (1, 5, 10, 20, 50)


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    frame = pd.DataFrame(
        [(user, item) for user, items in enumerate(rows) for item in items], columns=["user", "item"], dtype="int64"
    )
    return interactions_to_csr(frame, len(rows), n_items)


def table_scorer(scores: torch.Tensor):
    return lambda users: scores[users]


def reference_evaluate(scores: np.ndarray, truth: sp.csr_matrix, excluded: sp.csr_matrix, ks, protocol: str):
    """One user at a time, the plain way: mask, stable argsort (ties -> lower id first), count."""
    per_user: dict[str, list[float]] = {}
    evaluated = 0
    for user in range(scores.shape[0]):
        relevant = set(truth[user].indices.tolist())
        if not relevant:
            continue
        evaluated += 1
        user_scores = scores[user].copy()
        user_scores[excluded[user].indices] = -np.inf
        ranking = np.argsort(-user_scores, kind="stable")[: max(ks)]
        r = np.array([1.0 if item in relevant and user_scores[item] > -np.inf else 0.0 for item in ranking])
        for k in ks:
            n_hits = r[:k].sum()
            dcg = np.sum(r[:k] / np.log2(np.arange(2, k + 2)))
            if protocol == "paper":
                ideal = np.sort(r)[::-1][:k]  # the LATTICE code: the hit list re-sorted
            else:
                ideal = np.zeros(k)
                ideal[: min(len(relevant), k)] = 1.0
            idcg = np.sum(ideal / np.log2(np.arange(2, k + 2)))
            values = {
                "recall": n_hits / len(relevant),
                "precision": n_hits / k,
                "hit": float(n_hits > 0),
                "ndcg": dcg / idcg if idcg else 0.0,
            }
            for name, value in values.items():
                per_user.setdefault(f"{name}@{k}", []).append(value)
    result = {name: float(np.mean(values)) for name, values in per_user.items()}
    return result, evaluated


@pytest.fixture(scope="module")
def random_problem():
    """300 users x 1000 items; some users have no ground truth; train and test disjoint."""
    rng = np.random.default_rng(7)
    n_users, n_items = 300, 1000
    interacted = rng.random((n_users, n_items)) < 0.06
    is_test = rng.random((n_users, n_items)) < 0.25
    train = sp.csr_matrix(interacted & ~is_test, dtype=np.float32)
    is_test[rng.choice(n_users, 20, replace=False)] = False  # users without ground truth
    truth = sp.csr_matrix(interacted & is_test, dtype=np.float32)
    # float32 rand has 2^24 levels: rows of 1000 draws contain ties, so the tie rule is exercised too.
    scores = torch.rand(n_users, n_items, generator=torch.Generator().manual_seed(3))
    return truth, train, scores


@pytest.mark.parametrize("protocol", ["standard", "paper"])
def test_equals_per_user_reference_exactly(random_problem, protocol: str) -> None:
    truth, train, scores = random_problem
    got = Evaluator(truth, train, ks=KS, protocol=protocol, batch_size=64).evaluate(table_scorer(scores))
    expected, n_evaluated = reference_evaluate(scores.numpy(), truth, train, KS, protocol)
    assert got["protocol"] == protocol
    assert got["n_users_evaluated"] == n_evaluated == 280
    for name, value in expected.items():
        assert got[name] == value, name  # bit-identical, not approximately equal
    assert 0 < got["recall@50"] < 1


def test_popularity_ties_match_reference(random_problem) -> None:
    # Popularity gives every user the same row with many equal counts: the lower-id-first rule decides.
    truth, train, _ = random_problem
    scorer = popularity_scorer(train)
    got = Evaluator(truth, train, ks=KS, batch_size=50).evaluate(scorer)
    full_scores = scorer(torch.arange(truth.shape[0])).numpy()
    expected, _ = reference_evaluate(full_scores, truth, train, KS, "standard")
    assert {name: got[name] for name in expected} == expected


def test_batch_size_does_not_change_results(random_problem) -> None:
    truth, train, scores = random_problem
    small = Evaluator(truth, train, ks=KS, batch_size=7).evaluate(table_scorer(scores))
    large = Evaluator(truth, train, ks=KS, batch_size=2048).evaluate(table_scorer(scores))
    assert small == large


def test_users_without_ground_truth_are_skipped(random_problem) -> None:
    truth, train, scores = random_problem
    has_truth = np.flatnonzero(np.diff(truth.indptr) > 0)
    whole = Evaluator(truth, train, ks=KS).evaluate(table_scorer(scores))
    only_with_truth = Evaluator(truth[has_truth], train[has_truth], ks=KS).evaluate(
        table_scorer(scores[torch.as_tensor(has_truth)])
    )
    assert whole == only_with_truth
    assert whole["n_users_evaluated"] == len(has_truth) == 280


def test_no_user_with_ground_truth_gives_nan_not_zero() -> None:
    result = Evaluator(csr([[], []], 4), None, ks=(2,)).evaluate(lambda users: torch.rand(len(users), 4))
    assert result["n_users_evaluated"] == 0
    assert np.isnan(result["recall@2"])


def test_excluded_item_never_ranked_even_with_highest_score() -> None:
    # 2 users x 6 items; item 0 scores highest for everyone but is excluded for user 0.
    scores = torch.tensor([[9.0, 5, 4, 3, 2, 1], [9.0, 5, 4, 3, 2, 1]])
    evaluator = Evaluator(csr([[1], [0]], 6), csr([[0], []], 6), ks=(1, 3))
    items, values = evaluator.topk(table_scorer(scores), 3)
    assert items.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert values.tolist() == [[5, 4, 3], [9, 5, 4]]
    result = evaluator.evaluate(table_scorer(scores))
    assert result["hit@1"] == 1.0  # user 0 hits item 1 at rank 1, user 1 item 0


def test_relevant_but_excluded_item_counts_as_missed(caplog: pytest.LogCaptureFixture) -> None:
    # User 0: relevant {0, 1}, item 0 also excluded -> it cannot be hit but stays in |relevant|:
    # top-1 is item 1, recall@1 = 1 hit / 2 relevant = 0.5 (documented behaviour, and a warning).
    scores = torch.tensor([[9.0, 5, 4, 3]])
    with caplog.at_level(logging.WARNING, logger="llmrec.evaluation.evaluator"):
        evaluator = Evaluator(csr([[0, 1]], 4), csr([[0]], 4), ks=(1,))
    assert "1 relevant (user, item) pairs are also excluded" in caplog.text
    assert evaluator.evaluate(table_scorer(scores))["recall@1"] == 0.5


def test_excluded_items_filling_the_top_k_never_count_as_hits() -> None:
    # 4 items, 3 excluded, k=3: places 2 and 3 hold excluded items at -inf, relevant item 0 among them.
    evaluator = Evaluator(csr([[0, 3]], 4), csr([[0, 1, 2]], 4), ks=(3,))
    items, values = evaluator.topk(table_scorer(torch.tensor([[4.0, 3, 2, 1]])), 3)
    assert items.tolist() == [[3, 0, 1]]
    assert values[0, 1:].tolist() == [float("-inf")] * 2
    assert evaluator.evaluate(table_scorer(torch.tensor([[4.0, 3, 2, 1]])))["recall@3"] == 0.5


def test_topk_breaks_ties_toward_lower_item_ids() -> None:
    scores = torch.tensor([[1.0, 3, 3, 2, 3, 3], [0.0, 0, 0, 0, 0, 1], [5.0, 4, 3, 2, 1, 0]])
    values, items = topk_lowest_index_first(scores, 3)
    assert items.tolist() == [[1, 2, 4], [5, 0, 1], [0, 1, 2]]
    assert values.tolist() == [[3, 3, 3], [1, 0, 0], [5, 4, 3]]


def test_topk_for_chosen_users_matches_reference(random_problem) -> None:
    truth, train, scores = random_problem
    users = torch.arange(truth.shape[0])
    items, _ = Evaluator(truth, train, batch_size=33).topk(table_scorer(scores), 10, users=users)
    masked = scores.numpy().copy()
    masked[train.nonzero()] = -np.inf
    expected = np.argsort(-masked, axis=1, kind="stable")[:, :10]
    assert items.shape == (truth.shape[0], 10)
    assert np.array_equal(items.numpy(), expected)


def test_bad_scorer_output_is_reported() -> None:
    evaluator = Evaluator(csr([[0]], 4), None, ks=(1,))
    with pytest.raises(ScorerError, match=r"shape \(1, 3\), expected \(1, 4\)"):
        evaluator.evaluate(lambda users: torch.zeros(len(users), 3))
    with pytest.raises(ScorerError, match="NaN"):
        evaluator.evaluate(lambda users: torch.tensor([[0.0, float("nan"), 1.0, 2.0]]))


def test_view_scores_are_not_modified() -> None:
    # A scorer returning a view of its table must not see its table masked.
    table = torch.tensor([[4.0, 3, 2, 1]])
    Evaluator(csr([[1]], 4), csr([[0]], 4), ks=(1,)).evaluate(lambda users: table[0:1])
    assert table.tolist() == [[4.0, 3, 2, 1]]


def test_interactions_to_csr_validates_ids() -> None:
    frame = pd.DataFrame({"user": [0, 1, 1], "item": [2, 0, 0]})
    matrix = interactions_to_csr(frame, 2, 3)
    assert matrix.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]  # duplicate pair counts once
    with pytest.raises(DataError, match=r"train.item: ids must lie in 0..1"):
        interactions_to_csr(frame, 2, 2, name="train")
    with pytest.raises(DataError, match="missing column"):
        interactions_to_csr(frame.rename(columns={"item": "movie"}), 2, 3)


def test_popularity_on_movielens_small_is_plausible(data_mirror) -> None:
    ratings = pd.read_csv(data_mirror / "ml-latest-small" / "ratings.csv")
    ratings["user"] = ratings["userId"].astype("category").cat.codes.astype("int64")
    ratings["item"] = ratings["movieId"].astype("category").cat.codes.astype("int64")
    n_users, n_items = ratings["user"].max() + 1, ratings["item"].max() + 1
    # Seeded random 80/20 split of each user's ratings (the data layer's split is tested elsewhere).
    is_test = np.random.default_rng(0).random(len(ratings)) < 0.2
    train = interactions_to_csr(ratings[~is_test], n_users, n_items)
    test = interactions_to_csr(ratings[is_test], n_users, n_items)
    result = Evaluator(test, train, ks=(20,)).evaluate(popularity_scorer(train))
    assert result["n_users_evaluated"] > 600
    assert 0.02 < result["recall@20"] < 0.5


def test_per_user_values_by_hand_and_their_mean_is_the_average() -> None:
    # 3 users x 5 items, user 1 has no ground truth (skipped). User 0: relevant {0, 4}, top-2 = {0, 1} -> recall@2 0.5;
    # user 2: relevant {2}, top-2 = {2, 3} -> 1.0.
    scores = torch.tensor([[5.0, 4, 3, 2, 1], [5.0, 4, 3, 2, 1], [0.0, 1, 5, 4, 2]])
    evaluator = Evaluator(csr([[0, 4], [], [2]], 5), None, ks=(2,))
    averages, per_user = evaluator.evaluate_per_user(table_scorer(scores))
    assert evaluator.users.tolist() == [0, 2]
    assert per_user["recall@2"].tolist() == [0.5, 1.0]
    assert averages["recall@2"] == pytest.approx(0.75)
    assert averages == evaluator.evaluate(table_scorer(scores))
