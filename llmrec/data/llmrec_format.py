"""The `llmrec-format` dataset: a data folder as the original LLMRec released it.

Read as released, nothing re-split: `train/val/test.json` map a user id (a
string) to a list of int item ids, `item_attribute.csv` has no header (MovieLens
columns id,title,genre; Netflix id,year,title), `text_feat.npy` /
`image_feat.npy` are n_items x d float arrays copied into the run's
`embeddings/`. The release's other files are pickles; unpickling runs code
from the file, so they are read only with `--trust-pickle` (`train_mat` is
then checked against `train.json`, `augmented_sample_dict` becomes
`release/augmented_edges.parquet`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmrec.data.raw import RawDataset
from llmrec.data.readers import (
    check_unique,
    checksums,
    int_column,
    read_table,
    split_title_year,
)
from llmrec.errors import DataError

if TYPE_CHECKING:
    from llmrec.data.prepare import PrepareConfig

SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
FEATURE_FILES = {"text_feat.npy": "embeddings/item_text.npy", "image_feat.npy": "embeddings/image.npy"}
PICKLED_FILES = (
    "train_mat",
    "augmented_sample_dict",
    "augmented_user_init_embedding",
    "augmented_user_init_embedding_final",
    "augmented_atttribute_embedding_dict",
    "augmented_total_embed_dict",
    "augmented_attribute_dict",
    "augmented_user_profiling_dict",
    "candidate_indices",
)


def _read_split(path: Path) -> pd.DataFrame:
    """One split json -> (user_id, item_id) rows; users with an empty list are skipped."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object mapping user id -> list of item ids")
    users, lengths, items = [], [], []
    for key, value in mapping.items():
        if not (isinstance(key, str) and key.strip().isdigit()):
            raise DataError(f"{path}: key {key!r} is not an integer user id")
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise DataError(f"{path}: user {key}: expected a list of integer item ids, got {str(value)[:60]}")
        users.append(int(key))
        lengths.append(len(value))
        items.extend(value)
    item_ids = np.asarray(items, dtype=np.int64)
    if item_ids.size and item_ids.min() < 0:
        raise DataError(f"{path}: item id {item_ids.min()} is negative; expected ids 0..n_items-1")
    return pd.DataFrame({"user_id": np.repeat(np.asarray(users, dtype=np.int64), lengths), "item_id": item_ids})


def _read_attributes(path: Path, config: PrepareConfig) -> tuple[pd.DataFrame, str]:
    frame = read_table(
        path, sep=",", encoding=config.encoding, names=["id", "a", "b"], quoted=True,
        what="LLMRec item_attribute.csv without header (id,title,genre or id,year,title)",
    )  # fmt: skip
    layout = config.llmrec_layout
    if layout == "auto":
        numeric = pd.to_numeric(frame["a"], errors="coerce").notna() | frame["a"].isin(["", "NULL"])
        layout = "netflix" if len(frame) and numeric.mean() >= 0.95 else "movielens"
    ids = int_column(path, frame, "id")
    check_unique(path, ids, "id")
    if layout == "movielens":
        title, year = split_title_year(frame["a"])
        genres = frame["b"]
    else:
        title, year = frame["b"].str.strip(), pd.to_numeric(frame["a"], errors="coerce").astype("Int64")
        genres = pd.Series([""] * len(frame))
    items = pd.DataFrame(
        {"item_id": ids, "title": title.to_numpy(), "year": year.to_numpy(), "genres": genres.to_numpy()}
    ).astype({"year": "Int64"})
    return items, layout


def _read_features(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric .npy array ({exc}); object arrays are refused") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected a 2-D float array (n_items x d), got shape {array.shape} {array.dtype}")
    return array.astype(np.float32)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)  # noqa: S301 - only with --trust-pickle
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None


def _check_train_mat(path: Path, train: pd.DataFrame) -> str:
    matrix = _unpickle(path)
    if not hasattr(matrix, "tocoo"):
        raise DataError(f"{path}: expected a scipy sparse user x item matrix, got {type(matrix).__name__}")
    coo = matrix.tocoo()
    released = set(zip(coo.row.tolist(), coo.col.tolist()))
    from_json = set(zip(train["user_id"].tolist(), train["item_id"].tolist()))
    if released != from_json:
        raise DataError(
            f"{path}: {len(released ^ from_json)} edges differ from train.json; the release is inconsistent"
        )
    return f"train_mat agrees with train.json ({len(released)} edges, shape {matrix.shape})"


def _augmented_edges(path: Path, n_users: int, n_items: int) -> pd.DataFrame:
    samples = _unpickle(path)
    if not isinstance(samples, dict):
        raise DataError(f"{path}: expected a dict user -> {{0: liked, 1: disliked}}, got {type(samples).__name__}")
    rows = []
    for user, pair in samples.items():
        try:
            rows.append((int(user), int(pair[0]), int(pair[1])))
        except (TypeError, KeyError, ValueError, IndexError):
            raise DataError(f"{path}: user {user!r}: expected {{0: liked item, 1: disliked item}}") from None
    edges = pd.DataFrame(rows, columns=["user", "liked", "disliked"], dtype=np.int64)
    in_range = edges["user"].between(0, n_users - 1) & edges[["liked", "disliked"]].lt(n_items).all(axis=1)
    edges = edges[in_range].reset_index(drop=True)
    edges["model"] = "llmrec-release"
    edges["template_hash"] = ""
    return edges


def _import_pickles(
    root: Path, config: PrepareConfig, train: pd.DataFrame, n_users: int, n_items: int
) -> tuple[dict[str, Path], dict[str, pd.DataFrame], list[str]]:
    """Read the release's pickles only when trusted; otherwise say which were skipped and why."""
    pickled = [name for name in PICKLED_FILES if (root / name).is_file()]
    if not pickled:
        return {}, {}, []
    if not config.trust_pickle:
        note = f"skipped pickled files {pickled}: unpickling runs code from the file; pass --trust-pickle to load them"
        return {}, {}, [note]
    sources: dict[str, Path] = {}
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    if "train_mat" in pickled:
        notes.append(_check_train_mat(root / "train_mat", train))
        sources["train_mat"] = root / "train_mat"
    if "augmented_sample_dict" in pickled:
        path = root / "augmented_sample_dict"
        tables["release/augmented_edges.parquet"] = _augmented_edges(path, n_users, n_items)
        sources["augmented_sample_dict"] = path
    ignored = [p for p in pickled if p not in sources]
    if ignored:
        notes.append(f"pickled files not imported (no converter): {ignored}")
    return sources, tables, notes


def load_llmrec_format(root: Path, config: PrepareConfig) -> RawDataset:
    splits = {name: _read_split(root / file) for name, file in SPLIT_FILES.items()}
    items, layout = _read_attributes(root / "item_attribute.csv", config)
    sources = {file: root / file for file in (*SPLIT_FILES.values(), "item_attribute.csv")}
    notes = [f"item_attribute.csv read as the {layout} layout"]
    features = {}
    for file, target in FEATURE_FILES.items():
        if (root / file).is_file():
            features[target] = _read_features(root / file)
            sources[file] = root / file
    # As in the original code, feature rows may define n_items beyond the largest id used.
    max_item = max([int(f["item_id"].max()) for f in splits.values() if len(f)] + [int(items["item_id"].max())])
    n_items = max([max_item + 1] + [a.shape[0] for a in features.values()])
    for target, array in features.items():
        if array.shape[0] != n_items:
            raise DataError(
                f"{root}: {target} source has {array.shape[0]} rows; "
                f"expected n_items = {n_items} (ids up to {max_item})"
            )
    n_users = max(int(f["user_id"].max()) for f in splits.values() if len(f)) + 1
    if splits["val"].equals(splits["test"]):
        notes.append("val.json equals test.json (a known flaw of the release, LLMRec issue #31)")
    pickle_sources, extra, pickle_notes = _import_pickles(root, config, splits["train"], n_users, n_items)
    all_items = pd.DataFrame({"item_id": np.arange(n_items, dtype=np.int64)}).merge(items, how="left")
    return RawDataset(
        name="llmrec-format",
        interactions=pd.concat(splits.values(), ignore_index=True).assign(rating=1.0, timestamp=0),
        items=all_items.astype({"year": "Int64"}),
        users=pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64)}),
        sources=checksums({**sources, **pickle_sources}),
        explicit_ratings=False,
        fixed_split=splits,
        features=features,
        extra_tables=extra,
        notes=notes + pickle_notes,
    )
