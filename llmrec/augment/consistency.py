"""Did the LLM read the candidates? The permutation-consistency check and the position histogram.

Small LLMs answer an edge question by position: SmolLM2-135M said
`{"liked": 1, "disliked": 2}` for 40 of 40 users, whatever movies stood
there, so with candidates in the base model's score order every "liked" edge
was the base model's own top-1. Each user is therefore asked under `k`
shuffled candidate orders (`tasks.candidate_orders`) and an edge is kept only
when the same items win a strict majority of the `k` orders: the liked item
named liked in more than k/2 of them, and the disliked item likewise (an
invalid answer votes for nothing). A model that reads the titles agrees with
itself across orders; one that answers by position does not, except when the
shuffles happen to put the same movies at its favourite numbers: so a user
whose valid answers named the same numbers under every order
("position-locked") gets no edge either, majority or not. Measured through
vLLM on 40 ml-latest-small users: SmolLM2-135M was position-locked for 40 of
40, and 3 of them still had a chance majority.

The position histogram counts which candidate numbers the valid answers named,
against what a model indifferent to position would give (uniform over each
question's candidates); a chi-square p-value says how unlikely the observed
spread is under that uniform.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from llmrec.augment.tasks import Task
from llmrec.augment.validate import EdgeChoice

ROLES = ("liked", "disliked")


def majority_edge(choices: Sequence[EdgeChoice | None], orders: int) -> EdgeChoice | None:
    """The edge `orders` candidate orders agree on, or None.

    `choices` holds the validated answer under each order (None: no valid
    answer). The liked item must be named liked in more than `orders / 2` of
    the orders and the disliked item likewise; both can then never be the same
    item (no single answer names one item for both).
    """
    needed = orders // 2 + 1
    winners = {}
    for role in ROLES:
        votes = Counter(getattr(choice, role) for choice in choices if choice is not None)
        if not votes:
            return None
        item, count = votes.most_common(1)[0]
        if count < needed:
            return None
        winners[role] = item
    return EdgeChoice(**winners)


@dataclasses.dataclass
class EdgeConsensus:
    """The kept edges and what the check saw (both go into `augment_report.json`)."""

    edges: dict[int, EdgeChoice]
    consistency: dict[str, Any]
    position_bias: dict[str, Any]


def _answers_by_user(tasks: Sequence[Task], accepted: Mapping[Any, Any]) -> dict[int, list[tuple[Task, EdgeChoice | None]]]:
    by_user: dict[int, list[tuple[Task, EdgeChoice | None]]] = defaultdict(list)
    for task in tasks:
        by_user[task.entity].append((task, accepted.get(task.key)))
    return by_user


def _positions(task: Task, choice: EdgeChoice) -> tuple[int, int]:
    """1-based candidate numbers the answer named in this task's order."""
    return task.shown.index(choice.liked) + 1, task.shown.index(choice.disliked) + 1


def position_histogram(tasks: Sequence[Task], accepted: Mapping[Any, Any], model: str) -> dict[str, Any]:
    """Counts of answered candidate numbers per role, next to the uniform expectation and its chi-square p."""
    from scipy.stats import chisquare

    width = max((len(task.shown) for task in tasks), default=0)
    observed = {role: [0] * width for role in ROLES}
    expected = [0.0] * width
    answers = 0
    for task in tasks:
        choice = accepted.get(task.key)
        if choice is None:
            continue
        answers += 1
        for role, position in zip(ROLES, _positions(task, choice)):
            observed[role][position - 1] += 1
        for position in range(len(task.shown)):  # indifferent to position: 1/n on each of n numbers
            expected[position] += 1.0 / len(task.shown)
    histogram: dict[str, Any] = {"model": model, "answers": answers, "candidates": width,
                                 "uniform": [round(e, 3) for e in expected], **observed}  # fmt: skip
    for role in ROLES:
        used = [i for i, e in enumerate(expected) if e > 0]
        if answers and len(used) > 1:
            result = chisquare([observed[role][i] for i in used], [expected[i] for i in used])
            histogram[f"{role}_chi2_p"] = float(result.pvalue)
        top = max(range(width), key=lambda i: observed[role][i]) if answers else None
        histogram[f"{role}_top_position"] = None if top is None else top + 1
        histogram[f"{role}_top_share"] = round(observed[role][top] / answers, 4) if top is not None else None
    return histogram


def edge_consensus(tasks: Sequence[Task], accepted: Mapping[Any, Any], orders: int, model: str) -> EdgeConsensus:
    """Keep each user's majority edge unless the user is position-locked; count agreement and locks."""
    edges: dict[int, EdgeChoice] = {}
    agreed = unanimous = locked = answered = 0
    by_user = _answers_by_user(tasks, accepted)
    for user, answers in by_user.items():
        edge = majority_edge([choice for _, choice in answers], orders)
        agreed += edge is not None
        valid = [(task, choice) for task, choice in answers if choice is not None]
        is_locked = False
        if len(valid) >= 2:
            answered += 1
            if len(valid) == len(answers) and len({(c.liked, c.disliked) for _, c in valid}) == 1:
                unanimous += 1
            # The same numbers under different orders: the answer followed the position, not the movie.
            is_locked = len({_positions(t, c) for t, c in valid}) == 1 and len({t.shown for t, _ in valid}) > 1
            locked += is_locked
        if edge is not None and not is_locked:
            edges[user] = edge
    users = len(by_user)
    consistency = {
        "orders": orders, "users": users, "agreed": agreed,
        "agreement_rate": round(agreed / users, 4) if users else None,
        "unanimous": unanimous, "users_with_two_valid_orders": answered, "position_locked": locked,
        "kept": len(edges),
    }  # fmt: skip
    return EdgeConsensus(edges, consistency, position_histogram(tasks, accepted, model))
