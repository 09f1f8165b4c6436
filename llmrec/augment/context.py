"""What a prompt may show: movie descriptions and leakage-free user histories.

Histories come from the TRAINING split only (validation/test items in a
prompt would leak the answers into augmented edges and profiles) and are cut
to a budget of the most recent interactions, newest first, ties broken by item
id, so the same run always renders the same prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

_NO_GENRES = "(no genres listed)"


def movie_descriptions(items: pd.DataFrame) -> list[dict[str, Any]]:
    """Per item id (list index): `{title, year, genres}` ready for a template.

    Titles that still carry their year in parentheses (MovieLens style) lose it,
    so templates can print `title (year)` without repeating the year.
    """
    titles = items["title"].fillna("").astype(str).tolist()
    years = [None if pd.isna(year) else int(year) for year in items["year"].tolist()]
    genres = items["genres"].fillna("").astype(str).tolist()
    described = []
    for title, year, genre in zip(titles, years, genres):
        if year is not None:
            title = re.sub(rf"\s*\({year}\)\s*$", "", title)
        genre_text = "" if genre.strip() == _NO_GENRES else ", ".join(g for g in genre.split("|") if g)
        described.append({"title": title.strip(), "year": year, "genres": genre_text})
    return described


def training_histories(train: pd.DataFrame, users: Sequence[int], budget: int) -> dict[int, list[int]]:
    """Each user's most recent `budget` training items, newest first, ties by item id."""
    wanted = train[train["user"].isin(list(users))]
    ordered = wanted.sort_values(["user", "timestamp", "item"], ascending=[True, False, True], kind="stable")
    if budget > 0:
        ordered = ordered.groupby("user", sort=False).head(budget)
    grouped = ordered.groupby("user", sort=False)["item"].agg(list)
    return {int(user): [int(item) for item in grouped.get(user, [])] for user in users}


def training_item_sets(train: pd.DataFrame, users: Sequence[int]) -> dict[int, frozenset[int]]:
    """Each user's full set of training items (the validator's "in history" check)."""
    wanted = train[train["user"].isin(list(users))]
    grouped = wanted.groupby("user")["item"].agg(frozenset)
    return {int(user): frozenset(int(i) for i in grouped.get(user, frozenset())) for user in users}
