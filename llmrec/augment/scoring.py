"""Edges by scoring: each candidate scored on its own, so no candidate has a position.

Asked to pick a liked and a disliked movie among ten numbered candidates, the
bundled small models answer by position (SmolLM2-135M named candidates 1 and
2 for every user under every shuffled order), so the `choose` method keeps no
edge. A scoring method asks the model about one candidate at a time and
reads a number from its token probabilities; the user's liked edge is the
highest-scoring candidate and the disliked edge the lowest. The order the
candidates are listed in cannot matter: no prompt holds two of them.

Methods (`[augment] edge_method`):
- `likelihood`: log P(candidate's text | the user's history);
- `pmi`: that minus log P(candidate's text | the content-free prompt, the same
  prompt with an empty history): domain-conditional PMI (Holtzman et al. 2021),
  so a title that is likely for everyone (short, famous) does not win for everyone;
- `yesno`: log P(" yes") - log P(" no") after "would this user enjoy <candidate>?",
  minus the same difference for the content-free prompt (Zhao et al. 2021,
  "calibrate before use"). The content-free input is per candidate: a per-user
  constant would shift every candidate of a user alike and change no edge;
- `control`: no LLM; the base recommender's own top-1 and last candidate, the
  edges an LLM must beat to be worth its cost (trained exactly like LLM edges).

Every scoring run computes both the history-conditioned score and the
content-free one (the latter once per item, so it is cheap), so the edge
audit can compare the raw and the calibrated form from one run; the table
`edge_scores.parquet` keeps both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec.augment.config import LIKELIHOOD, PMI, YESNO
from llmrec.augment.context import movie_descriptions, training_histories
from llmrec.augment.validate import EdgeChoice
from llmrec.backends.base import ScoreRequest
from llmrec.prompts import PromptTemplate, load_template

#: Methods that ask the LLM for scores, and the template each renders.
SCORING_TEMPLATES = {LIKELIHOOD: "edge_likelihood", PMI: "edge_likelihood", YESNO: "edge_yesno"}
YES, NO = " yes", " no"
#: Columns of `edge_scores.parquet` (the control's has the first four).
SCORE_COLUMNS = ("user", "item", "rank", "score", "conditional", "prior")


@dataclasses.dataclass(frozen=True)
class ScoringPlan:
    """Every score request of one run, and which requests make which (user, item) score.

    `conditional[(user, item)]` and `prior[item]` hold request indices: one
    (the candidate's likelihood) or two (its " yes" and " no" answers).
    """

    method: str
    template: PromptTemplate
    candidates: dict[int, list[int]]
    requests: list[ScoreRequest]
    conditional: dict[tuple[int, int], tuple[int, ...]]
    prior: dict[int, tuple[int, ...]]


def ranked_candidates(candidates: pd.DataFrame, users: Sequence[int]) -> dict[int, list[int]]:
    """Each selected user's candidate items in the base model's rank order (users with fewer than 2 left out)."""
    ranked = candidates.sort_values(["user", "rank"]).groupby("user")["item"].agg(list)
    chosen = {int(user): [int(item) for item in ranked.get(user, [])] for user in users}
    return {user: items for user, items in chosen.items() if len(items) >= 2}


def scoring_plan(
    method: str, tables: Any, candidates: pd.DataFrame, users: Sequence[int], history_budget: int, prompts_dir: Path | None
) -> ScoringPlan:
    """The score requests of `method` for the selected users' candidates (deterministic, so reruns hit the store)."""
    name = SCORING_TEMPLATES[method]
    template = load_template(name, prompts_dir)
    movies = movie_descriptions(tables.items)
    ranked = ranked_candidates(candidates, users)
    histories = training_histories(tables.train, list(ranked), history_budget)
    requests: list[ScoreRequest] = []

    def ask(history: list[dict[str, Any]], item: int) -> tuple[int, ...]:
        blocks = template.render_blocks(history=history, movie=movies[item])
        start = len(requests)
        if name == "edge_likelihood":
            requests.append(ScoreRequest(blocks["prompt"], " " + blocks["candidate"]))
        else:  # the question ends the prompt, so both answers are one next token after one shared text
            question = blocks["prompt"] + "\n" + blocks["question"]
            requests.extend(ScoreRequest(question, answer) for answer in (YES, NO))
        return tuple(range(start, len(requests)))

    conditional = {}
    for user, items in ranked.items():
        history = [movies[item] for item in histories[user]]
        for item in items:
            conditional[(user, item)] = ask(history, item)
    prior = {item: ask([], item) for item in sorted({i for items in ranked.values() for i in items})}
    return ScoringPlan(method, template, ranked, requests, conditional, prior)


def _value(indices: tuple[int, ...], logprobs: Sequence[float | None]) -> float | None:
    """A likelihood (one request) or a yes-minus-no log-odds (two); None when a request has no score."""
    values = [logprobs[i] for i in indices]
    if any(value is None for value in values):
        return None
    return values[0] if len(values) == 1 else values[0] - values[1]  # type: ignore[operator]


def score_table(plan: ScoringPlan, logprobs: Sequence[float | None]) -> pd.DataFrame:
    """One row per (user, candidate): its rank, the method's score, the conditional and content-free parts.

    `score` is `conditional` for `likelihood` and `conditional - prior` for
    `pmi` and `yesno`; a candidate with a request left unscored is NaN.
    """
    prior = {item: _value(indices, logprobs) for item, indices in plan.prior.items()}
    rows = []
    for user, items in plan.candidates.items():
        for rank, item in enumerate(items):
            conditional = _value(plan.conditional[(user, item)], logprobs)
            base = prior[item]
            if plan.method == LIKELIHOOD:
                score = conditional
            else:
                score = None if conditional is None or base is None else conditional - base
            rows.append((user, item, rank, score, conditional, base))
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    return frame.astype({"user": "int64", "item": "int64", "rank": "int64",
                         "score": "float64", "conditional": "float64", "prior": "float64"})  # fmt: skip


def control_table(candidates: Mapping[int, list[int]]) -> pd.DataFrame:
    """The no-LLM control's scores: the base model's own order (score = -rank); no conditional or prior part."""
    rows = [(user, item, rank, float(-rank)) for user, items in candidates.items() for rank, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "rank", "score"]).astype(
        {"user": "int64", "item": "int64", "rank": "int64", "score": "float64"}
    )


def edges_from_scores(scores: pd.DataFrame) -> dict[int, EdgeChoice]:
    """Per user, the highest-scoring candidate as liked and the lowest as disliked.

    Only users whose every candidate has a score get an edge (a partial list
    would make the pick depend on which requests failed). Ties go to the base
    model's order: the better-ranked candidate is liked, the worse-ranked disliked.
    """
    complete = scores.groupby("user")["score"].transform(lambda column: column.notna().all())
    usable = scores[complete.astype(bool)]
    edges = {}
    for user, group in usable.groupby("user", sort=True):
        if len(group) < 2:
            continue
        # ranks are distinct within a user, so this order is total and its last row is the lowest score, worst rank
        ordered = group.sort_values(["score", "rank"], ascending=[False, True])
        liked, disliked = int(ordered["item"].iloc[0]), int(ordered["item"].iloc[-1])
        if liked != disliked:
            edges[int(user)] = EdgeChoice(liked=liked, disliked=disliked)
    return edges
