"""The `llmrec-format` dataset: a data folder as the original LLMRec released it.

Read as released, nothing re-split: `train/val/test.json` map a user id (a
string) to a list of int item ids, `item_attribute.csv` has no header (MovieLens
columns id,title,genre; Netflix id,year,title), `text_feat.npy` /
`image_feat.npy` are n_items x d float arrays copied into the run's
`embeddings/`. The release's other files are pickles; unpickling runs code
from the file, so they are read only with `--trust-pickle`, and then become
the run's augmented edges, user-profile and item-attribute embeddings
(`llmrec.data.llmrec_pickles`), so `llmrec train` uses them as it would the
output of our own augment and embed stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmrec.artifacts import IMAGE_EMBEDDINGS, ITEM_TEXT_EMBEDDINGS
from llmrec.data.llmrec_pickles import import_pickles
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
FEATURE_FILES = {"text_feat.npy": ITEM_TEXT_EMBEDDINGS, "image_feat.npy": IMAGE_EMBEDDINGS}


def _read_split(path: Path) -> pd.DataFrame:
    """One split json -> (user_id, item_id) rows; users with an empty list are skipped."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply; expected user id -> list of item ids") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object mapping user id -> list of item ids")
    users, lengths, items = [], [], []
    for key, value in mapping.items():
        if not (isinstance(key, str) and key.strip().isdecimal()):  # isdigit() admits "²", which int() refuses
            raise DataError(f"{path}: key {key!r} is not an integer user id")
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise DataError(f"{path}: user {key}: expected a list of integer item ids, got {str(value)[:60]}")
        users.append(int(key))
        lengths.append(len(value))
        items.extend(value)
    try:
        item_ids = np.asarray(items, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{path}: an item id does not fit in 64 bits; expected ids 0..n_items-1") from None
    if item_ids.size and item_ids.min() < 0:
        raise DataError(f"{path}: item id {item_ids.min()} is negative; expected ids 0..n_items-1")
    return pd.DataFrame({"user_id": np.repeat(np.asarray(users, dtype=np.int64), lengths), "item_id": item_ids})


def _read_attributes(path: Path, config: PrepareConfig) -> tuple[pd.DataFrame, str]:
    frame = read_table(
        path, sep=",", encoding=config.encoding, names=["id", "a", "b"], quoted=True,
        what="LLMRec item_attribute.csv without header (id,title,genre or id,year,title)",
    )  # fmt: skip
    if frame.empty:
        raise DataError(f"{path}: no rows; expected one row per item (id,title,genre or id,year,title)")
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
    import zipfile

    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric .npy array ({exc}); object arrays are refused") from None
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc or type(exc).__name__})") from None
    if not isinstance(array, np.ndarray):  # a valid .npz archive
        raise DataError(f"{path}: an .npz archive; expected one .npy array (n_items x d)")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected a 2-D float array (n_items x d), got shape {array.shape} {array.dtype}")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise DataError(f"{path}: row {row} holds NaN or infinite values; expected finite features")
    return array.astype(np.float32)


def carve_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val): round(fraction * n) of each user's n train rows (at least 1, leaving 1) move to val, seeded.

    For releases whose val.json is a copy of test.json: a real validation split
    from train, disjoint from test. Users with one train item keep it.
    """
    shuffled = train.iloc[np.random.default_rng(seed).permutation(len(train))]
    position = shuffled.groupby("user_id").cumcount().to_numpy()
    size = shuffled.groupby("user_id")["item_id"].transform("size").to_numpy()
    n_val = np.where(size >= 2, np.clip(np.round(size * fraction), 1, size - 1), 0)
    to_val = position < n_val
    ordered = ["user_id", "item_id"]
    return (shuffled[~to_val].sort_values(ordered).reset_index(drop=True),
            shuffled[to_val].sort_values(ordered).reset_index(drop=True))


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
    if config.llmrec_val_from_train > 0:
        splits["train"], splits["val"] = carve_validation(splits["train"], config.llmrec_val_from_train, config.seed)
        notes.append(f"val.json ignored: validation carved out of train.json ({config.llmrec_val_from_train:g} of "
                     f"each user's items, seed {config.seed})")
    elif splits["val"].equals(splits["test"]):
        notes.append("val.json equals test.json (a known flaw of the release, LLMRec issue #31); training refuses "
                     "this run unless it is prepared with llmrec_val_from_train > 0")
    pickles = import_pickles(root, config.trust_pickle, splits["train"], n_users, n_items)
    all_items = pd.DataFrame({"item_id": np.arange(n_items, dtype=np.int64)}).merge(items, how="left")
    return RawDataset(
        name="llmrec-format",
        interactions=pd.concat(splits.values(), ignore_index=True).assign(rating=1.0, timestamp=0),
        items=all_items.astype({"year": "Int64"}),
        users=pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64)}),
        sources=checksums({**sources, **pickles.sources}),
        explicit_ratings=False,
        fixed_split=splits,
        features={**features, **pickles.arrays},
        extra_tables=pickles.tables,
        notes=notes + pickles.notes,
    )
