"""The `csv` dataset: any interactions file plus an item metadata file.

Column names, delimiter and encoding come from `PrepareConfig.csv_*`, so a
user's own export is read without renaming columns first. An empty rating
column means the interactions are already implicit; an empty timestamp column
means there is no time (temporal splits then fall back to item order).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmrec.data.raw import RawDataset
from llmrec.data.readers import (
    check_unique,
    checksums,
    float_column,
    int_column,
    read_table,
    split_title_year,
)

if TYPE_CHECKING:
    from llmrec.data.prepare import PrepareConfig


def load_csv(root: Path, config: PrepareConfig) -> RawDataset:
    interactions_path = root / config.csv_interactions
    items_path = root / config.csv_items
    id_columns = [config.csv_user_column, config.csv_item_column]
    optional = [c for c in (config.csv_rating_column, config.csv_timestamp_column) if c]
    interactions = read_table(
        interactions_path, sep=config.csv_delimiter, encoding=config.encoding,
        usecols=id_columns + optional,
        what=f"an interactions file with columns {id_columns + optional} separated by {config.csv_delimiter!r}",
    )  # fmt: skip
    item_columns = [config.csv_item_id_column, config.csv_title_column]
    if config.csv_genres_column:
        item_columns.append(config.csv_genres_column)
    items = read_table(
        items_path, sep=config.csv_delimiter, encoding=config.encoding, usecols=item_columns,
        what=f"an item file with columns {item_columns} separated by {config.csv_delimiter!r}",
    )  # fmt: skip
    n = len(interactions)
    ratings = (
        float_column(interactions_path, interactions, config.csv_rating_column)
        if config.csv_rating_column
        else np.ones(n)
    )
    timestamps = (
        int_column(interactions_path, interactions, config.csv_timestamp_column)
        if config.csv_timestamp_column
        else np.zeros(n, dtype=np.int64)
    )
    user_ids = int_column(interactions_path, interactions, config.csv_user_column)
    item_ids = int_column(items_path, items, config.csv_item_id_column)
    check_unique(items_path, item_ids, config.csv_item_id_column)
    title, year = split_title_year(items[config.csv_title_column])
    genres = items[config.csv_genres_column] if config.csv_genres_column else pd.Series([""] * len(items))
    return RawDataset(
        name="csv",
        interactions=pd.DataFrame(
            {
                "user_id": user_ids,
                "item_id": int_column(interactions_path, interactions, config.csv_item_column),
                "rating": ratings.astype(np.float32),
                "timestamp": timestamps,
            }
        ),
        items=pd.DataFrame(
            {"item_id": item_ids, "title": title.to_numpy(), "year": year.to_numpy(), "genres": genres.to_numpy()}
        ).astype({"year": "Int64"}),
        users=pd.DataFrame({"user_id": np.unique(user_ids)}),
        sources=checksums({config.csv_interactions: interactions_path, config.csv_items: items_path}),
        explicit_ratings=bool(config.csv_rating_column),
    )
