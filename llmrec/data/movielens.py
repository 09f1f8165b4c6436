"""Parsers for the MovieLens releases, in the exact formats GroupLens ships.

- ml-latest-small: CSV with header, UTF-8 (`ratings.csv`, `movies.csv`).
- ml-100k: tab-separated `u.data`, `|`-separated latin-1 `u.item` with 19 genre
  flags, `u.user` with age / gender / occupation.
- ml-1m: `::`-separated latin-1 `ratings.dat`, `movies.dat`, `users.dat`; age and
  occupation are codes, mapped to the labels of the ml-1m README.
"""

from __future__ import annotations

from pathlib import Path

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
from llmrec.errors import DataError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip


def _interactions(path: Path, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    user, item, rating, timestamp = columns
    return pd.DataFrame(
        {
            "user_id": int_column(path, frame, user),
            "item_id": int_column(path, frame, item),
            "rating": float_column(path, frame, rating).astype(np.float32),
            "timestamp": int_column(path, frame, timestamp),
        }
    )


def _items(path: Path, frame: pd.DataFrame, id_col: str, title_col: str, genres: pd.Series) -> pd.DataFrame:
    title, year = split_title_year(frame[title_col])
    item_ids = int_column(path, frame, id_col)
    check_unique(path, item_ids, id_col)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "title": title.to_numpy(),
            "year": year.to_numpy(),
            "genres": genres.astype(str).to_numpy(),
        }
    ).astype({"year": "Int64"})


def load_ml_latest_small(root: Path) -> RawDataset:
    ratings_path, movies_path = root / "ratings.csv", root / "movies.csv"
    ratings = read_table(
        ratings_path, sep=",", encoding="utf-8",
        usecols=["userId", "movieId", "rating", "timestamp"],
        what="MovieLens ratings.csv with header userId,movieId,rating,timestamp",
    )  # fmt: skip
    movies = read_table(
        movies_path, sep=",", encoding="utf-8", usecols=["movieId", "title", "genres"],
        what="MovieLens movies.csv with header movieId,title,genres",
    )  # fmt: skip
    return RawDataset(
        name="ml-latest-small",
        interactions=_interactions(ratings_path, ratings, ["userId", "movieId", "rating", "timestamp"]),
        items=_items(movies_path, movies, "movieId", "title", movies["genres"]),
        users=pd.DataFrame({"user_id": np.unique(int_column(ratings_path, ratings, "userId"))}),
        sources=checksums({"ratings.csv": ratings_path, "movies.csv": movies_path}),
    )


def load_ml_100k(root: Path) -> RawDataset:
    data_path, item_path, user_path = root / "u.data", root / "u.item", root / "u.user"
    data = read_table(
        data_path, sep="\t", encoding="latin-1", names=["user", "item", "rating", "timestamp"],
        what="ml-100k u.data (tab-separated user, item, rating, timestamp)",
    )  # fmt: skip
    item_names = ["id", "title", "release", "video_release", "url", *ML100K_GENRES]
    items = read_table(
        item_path, sep="|", encoding="latin-1", names=item_names,
        what="ml-100k u.item (|-separated id, title, dates, URL, 19 genre flags)",
    )  # fmt: skip
    flags = pd.DataFrame({g: int_column(item_path, items, g) == 1 for g in ML100K_GENRES})
    genres = flags.dot(pd.Index(ML100K_GENRES) + "|").str.rstrip("|")
    users = read_table(
        user_path, sep="|", encoding="latin-1", names=["id", "age", "gender", "occupation", "zip"],
        what="ml-100k u.user (|-separated id, age, gender, occupation, zip)",
    )  # fmt: skip
    item_table = _items(item_path, items, "id", "title", genres)
    check_unique(user_path, int_column(user_path, users, "id"), "id")
    # A few u.item titles lack '(year)'; their release date still has it.
    release_year = pd.to_numeric(items["release"].astype(str).str.extract(r"(\d{4})\s*$", expand=False)).astype("Int64")
    item_table["year"] = item_table["year"].fillna(pd.Series(release_year.to_numpy(), dtype="Int64"))
    return RawDataset(
        name="ml-100k",
        interactions=_interactions(data_path, data, ["user", "item", "rating", "timestamp"]),
        items=item_table,
        users=pd.DataFrame(
            {
                "user_id": int_column(user_path, users, "id"),
                "age": pd.array(int_column(user_path, users, "age"), dtype="Int64"),
                "gender": users["gender"].to_numpy(),
                "occupation": users["occupation"].to_numpy(),
            }
        ),
        sources=checksums({"u.data": data_path, "u.item": item_path, "u.user": user_path}),
    )


def load_ml_1m(root: Path) -> RawDataset:
    ratings_path, movies_path, users_path = root / "ratings.dat", root / "movies.dat", root / "users.dat"
    ratings = read_table(
        ratings_path, sep="::", encoding="latin-1", names=["user", "item", "rating", "timestamp"],
        what="ml-1m ratings.dat (UserID::MovieID::Rating::Timestamp)",
    )  # fmt: skip
    movies = read_table(
        movies_path, sep="::", encoding="latin-1", names=["id", "title", "genres"],
        what="ml-1m movies.dat (MovieID::Title::Genres)",
    )  # fmt: skip
    users = read_table(
        users_path, sep="::", encoding="latin-1", names=["id", "gender", "age", "occupation", "zip"],
        what="ml-1m users.dat (UserID::Gender::Age::Occupation::Zip-code)",
    )  # fmt: skip
    check_unique(users_path, int_column(users_path, users, "id"), "id")
    occupation_codes = int_column(users_path, users, "occupation")
    if occupation_codes.size and (occupation_codes.min() < 0 or occupation_codes.max() >= len(ML1M_OCCUPATIONS)):
        raise DataError(f"{users_path}: column 'occupation' must be a code 0..20 (ml-1m README)")
    return RawDataset(
        name="ml-1m",
        interactions=_interactions(ratings_path, ratings, ["user", "item", "rating", "timestamp"]),
        items=_items(movies_path, movies, "id", "title", movies["genres"]),
        users=pd.DataFrame(
            {
                "user_id": int_column(users_path, users, "id"),
                # ml-1m publishes age buckets by their lower bound (1 = under 18).
                "age": pd.array(int_column(users_path, users, "age"), dtype="Int64"),
                "gender": users["gender"].to_numpy(),
                "occupation": np.asarray(ML1M_OCCUPATIONS, dtype=object)[occupation_codes],
            }
        ),
        sources=checksums({"ratings.dat": ratings_path, "movies.dat": movies_path, "users.dat": users_path}),
    )
