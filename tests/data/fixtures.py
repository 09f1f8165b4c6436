"""Tiny datasets written in the exact published formats, for loader tests.

Hand-written, not copied from any release: a handful of users and movies
(one with a non-ASCII latin-1 title, "Léon") are enough to check parsing,
encodings, demographics and the split rules.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

# (user, movie, rating, timestamp): user 1-4 rate enough positives to be split;
# user 5 has only two positives (train only); user 6 has no positive at all.
RATINGS = [
    (1, 10, 5, 900000001), (1, 20, 4, 900000002), (1, 30, 4, 900000003), (1, 40, 5, 900000004),
    (1, 50, 2, 900000005),
    (2, 10, 4, 900000010), (2, 30, 5, 900000011), (2, 50, 4, 900000012), (2, 60, 1, 900000013),
    (3, 20, 5, 900000020), (3, 40, 4, 900000021), (3, 60, 4, 900000022), (3, 10, 3, 900000023),
    (4, 10, 4, 900000030), (4, 20, 4, 900000031), (4, 30, 4, 900000032), (4, 40, 4, 900000033),
    (4, 50, 4, 900000034), (4, 60, 4, 900000035),
    (5, 10, 5, 900000040), (5, 20, 4, 900000041), (5, 30, 1, 900000042),
    (6, 40, 2, 900000050),
]  # fmt: skip
# movie id -> (title with year, genres)
MOVIES = {
    10: ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    20: ("Léon: The Professional (1994)", ["Crime", "Drama", "Thriller"]),
    30: ("Heat (1995)", ["Action", "Crime", "Thriller"]),
    40: ("Amélie (2001)", ["Comedy", "Romance"]),
    50: ("Babe (1995)", ["Children's", "Comedy", "Drama"]),
    60: ("Casablanca (1942)", ["Drama", "Romance", "War"]),
}
# user id -> (age, gender, ml-100k occupation, ml-1m occupation code)
USERS = {
    1: (24, "M", "technician", 17),
    2: (53, "F", "other", 0),
    3: (23, "M", "writer", 20),
    4: (35, "F", "educator", 1),
    5: (18, "M", "student", 10),
    6: (45, "F", "librarian", 9),
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def write_ml_100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    (folder / "u.data").write_text(data, encoding="latin-1")
    lines = []
    for movie, (title, genres) in MOVIES.items():
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = "http://us.imdb.com/M/title-exact?" + title.replace(" ", "%20")
        lines.append(f"{movie}|{title}|01-Jan-{title[-5:-1]}||{url}|{flags}\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1")
    users = "".join(f"{u}|{age}|{g}|{occ}|55105\n" for u, (age, g, occ, _) in USERS.items())
    (folder / "u.user").write_text(users, encoding="latin-1")
    return folder


def write_ml_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ratings = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS)
    (folder / "ratings.dat").write_text(ratings, encoding="latin-1")
    movies = "".join(f"{m}::{title}::{'|'.join(g)}\n" for m, (title, g) in MOVIES.items())
    (folder / "movies.dat").write_text(movies, encoding="latin-1")
    ml1m_age = {24: 18, 53: 50, 23: 18, 35: 35, 18: 18, 45: 45}
    users = "".join(f"{u}::{g}::{ml1m_age[age]}::{code}::55105\n" for u, (age, g, _, code) in USERS.items())
    (folder / "users.dat").write_text(users, encoding="latin-1")
    return folder


def write_movielens_csv(folder: Path, encoding: str = "utf-8") -> Path:
    """ml-latest-small's layout (header, CRLF, quoted titles with commas)."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = "userId,movieId,rating,timestamp\r\n" + "".join(
        f"{u},{i},{float(r)},{t}\r\n" for u, i, r, t in RATINGS
    )
    (folder / "ratings.csv").write_bytes(ratings.encode(encoding))
    movies = "movieId,title,genres\r\n" + "".join(
        f'{m},"{title}",{"|".join(g)}\r\n' for m, (title, g) in MOVIES.items()
    )
    (folder / "movies.csv").write_bytes(movies.encode(encoding))
    return folder


def zip_folder(folder: Path, zip_path: Path, inner_name: str) -> Path:
    """Zip `folder`'s files under `inner_name/`, as GroupLens ships its zips."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{inner_name}/{path.name}")
    return zip_path


# The LLMRec release: users 0..3, items 0..5 (contiguous), val == test as in issue #31.
LLMREC_TRAIN = {"0": [0, 1, 2], "1": [2, 3], "2": [4, 5, 0], "3": []}
LLMREC_VAL = {"0": [3], "1": [4], "2": [1]}
LLMREC_ITEMS_MOVIELENS = [
    (0, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (1, "Léon: The Professional (1994)", "Crime|Drama|Thriller"),
    (2, "Heat (1995)", "Action|Crime|Thriller"),
    (3, "Amélie (2001)", "Comedy|Romance"),
    (4, "Babe (1995)", "Children's|Comedy|Drama"),
    (5, "Casablanca (1942)", "Drama|Romance|War"),
]


def write_llmrec_release(folder: Path, *, netflix: bool = False, with_features: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(LLMREC_TRAIN))
    (folder / "val.json").write_text(json.dumps(LLMREC_VAL))
    (folder / "test.json").write_text(json.dumps(LLMREC_VAL))
    if netflix:
        rows = [f'{i},{1990 + i},"{title[:-7]}"\n' for i, title, _ in LLMREC_ITEMS_MOVIELENS]
    else:
        rows = [f'{i},"{title}",{genre}\n' for i, title, genre in LLMREC_ITEMS_MOVIELENS]
    (folder / "item_attribute.csv").write_text("".join(rows), encoding="utf-8")
    if with_features:
        rng = np.random.default_rng(0)
        np.save(folder / "text_feat.npy", rng.random((6, 8)).astype(np.float64))
        np.save(folder / "image_feat.npy", rng.random((6, 4)).astype(np.float32))
    return folder
