"""Turn a run's tables into augmentation tasks: one prompt + one validator per user or item.

A task is everything needed to ask and to judge one question; the pipeline
sends all tasks of an augmentation as one batch and never looks inside them.
Building tasks is deterministic (same tables, options and template -> the same
messages), which is what lets the completion store recognise a rerun's
requests and answer them without the backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.augment import schemas
from llmrec.augment.config import ATTRIBUTES, EDGES, PROFILES, AugmentConfig
from llmrec.augment.context import movie_descriptions, training_histories, training_item_sets
from llmrec.augment.scoring import ranked_candidates
from llmrec.augment.validate import validate_attribute_answer, validate_edge_answer, validate_profile_answer
from llmrec.prompts import PromptTemplate, load_template


@dataclasses.dataclass(frozen=True)
class Task:
    """One question: who it is about, the chat messages, the answer schema and its validator.

    An edge question is asked under several candidate orders: `order` says
    which (0-based) and `shown` holds the candidate items in the order the
    prompt lists them, so an answer's positions can be read back.
    """

    entity: int
    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any]
    validate: Callable[[str], Any]
    order: int | None = None
    shown: tuple[int, ...] = ()

    @property
    def key(self) -> int | tuple[int, int]:
        """What the answer is filed under: the entity, or (user, order) for one order of an edge question."""
        return self.entity if self.order is None else (self.entity, self.order)


@dataclasses.dataclass(frozen=True)
class TaskSet:
    """All tasks of one augmentation and the template that rendered them."""

    what: str
    template: PromptTemplate
    tasks: list[Task]


def select_users(train: pd.DataFrame, n_users: int, limit_users: int) -> list[int]:
    """The first `limit_users` user ids that have training interactions (0 = all).

    Taking a prefix (not a sample) keeps selections nested: raising the limit
    reuses every answer already in the store.
    """
    with_history = sorted(int(u) for u in pd.unique(train["user"]) if 0 <= u < n_users)
    return with_history if limit_users <= 0 else with_history[:limit_users]


def select_items(
    train: pd.DataFrame, candidates: pd.DataFrame | None, users: Sequence[int], n_items: int, limit_items: int | None
) -> list[int]:
    """Items whose attributes are asked for.

    Default (`None`): the items in the selected users' training histories and
    candidate lists (the items the augmented graph of those users touches).
    `0`: the whole catalogue. `N > 0`: the first N ids of the default set.
    """
    if limit_items == 0:
        return list(range(n_items))
    chosen = set(train.loc[train["user"].isin(list(users)), "item"].astype(int))
    if candidates is not None:
        chosen |= set(candidates.loc[candidates["user"].isin(list(users)), "item"].astype(int))
    ordered = sorted(chosen)
    return ordered if limit_items is None else ordered[:limit_items]


def _history_context(movies: list[dict[str, Any]], history: list[int]) -> list[dict[str, Any]]:
    return [movies[item] for item in history]


def candidate_orders(items: Sequence[int], orders: int, seed: int, user: int) -> list[tuple[int, ...]]:
    """`orders` shuffles of one user's candidates, drawn from a generator seeded by (`seed`, `user`).

    Candidates arrive in the base model's score order, and small LLMs answer by
    position ("liked": 1, "disliked": 2 whatever the movies), so that order
    would decide the edges. Seeding per user keeps a user's orders the same
    whatever other users are selected (raising --limit-users reuses stored
    answers). The orders are distinct while the candidates allow it.
    """
    rng = np.random.default_rng([seed % 2**63, user])
    distinct = math.factorial(len(items)) if len(items) < 13 else orders
    chosen: list[tuple[int, ...]] = []
    while len(chosen) < orders:
        shuffled = tuple(int(items[i]) for i in rng.permutation(len(items)))
        if shuffled not in chosen or len(set(chosen)) >= distinct:
            chosen.append(shuffled)
    return chosen


def edge_tasks(
    tables: Any,
    candidates: pd.DataFrame,
    users: Sequence[int],
    history_budget: int,
    prompts_dir: Path | None,
    *,
    orders: int = AugmentConfig.edge_orders,  # the [augment] default
    seed: int = 0,
) -> TaskSet:
    """Per user and candidate order: history + numbered candidates -> liked / disliked candidate.

    Each user is asked under `orders` shuffled candidate orders (see
    `candidate_orders`); `augment.consistency` keeps an edge only when the
    same items win a majority of them.
    """
    template = load_template(EDGES, prompts_dir)
    movies = movie_descriptions(tables.items)
    histories = training_histories(tables.train, users, history_budget)
    known = training_item_sets(tables.train, users)
    tasks = []
    # users with fewer than 2 candidates have nothing to choose between: not requested
    for user, candidate_items in ranked_candidates(candidates, users).items():
        history = _history_context(movies, histories[user])
        history_set = known[user]
        schema = schemas.edge_schema(len(candidate_items))
        for order, shown in enumerate(candidate_orders(candidate_items, orders, seed, user)):
            numbered = [{"number": n + 1, **movies[item]} for n, item in enumerate(shown)]
            tasks.append(Task(
                user, template.render(history=history, candidates=numbered), schema,
                lambda text, c=shown, h=history_set: validate_edge_answer(text, c, h), order, shown,
            ))  # fmt: skip
    return TaskSet(EDGES, template, tasks)


def profile_tasks(tables: Any, users: Sequence[int], history_budget: int, prompts_dir: Path | None) -> TaskSet:
    """Per user: history -> profile."""
    template = load_template(PROFILES, prompts_dir)
    movies = movie_descriptions(tables.items)
    histories = training_histories(tables.train, users, history_budget)
    schema = schemas.profile_schema()
    tasks = [
        Task(user, template.render(history=_history_context(movies, histories[user])), schema, validate_profile_answer)
        for user in users
    ]
    return TaskSet(PROFILES, template, tasks)


def attribute_tasks(tables: Any, items: Sequence[int], prompts_dir: Path | None) -> TaskSet:
    """Per item: title, year, genres -> director, country, language."""
    template = load_template(ATTRIBUTES, prompts_dir)
    movies = movie_descriptions(tables.items)
    schema = schemas.attribute_schema()
    tasks = [Task(item, template.render(item=movies[item]), schema, validate_attribute_answer) for item in items]
    return TaskSet(ATTRIBUTES, template, tasks)
