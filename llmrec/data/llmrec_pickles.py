"""The pickled files of an original LLMRec release, turned into run artifacts.

Unpickling runs code from the file, so nothing here is called unless the user
passed `--trust-pickle`. What each file becomes (formats: the original
`main.py`; see docs/artifacts.md for the targets):

- `train_mat` (scipy sparse user x item) is only checked against `train.json`.
- `augmented_sample_dict` {user -> {0: liked, 1: disliked}} becomes
  `augmented_edges.parquet` (model `llmrec-release`). Pairs with an id out of
  range are dropped and counted, as `main.py` dropped them at batch time.
- `augmented_user_init_embedding` {user -> vector} becomes
  `embeddings/user_profiles.npy`, one row per user id; a user without a
  vector gets a zero row (the artifact's "missing" marker), counted.
- `augmented_atttribute_embedding_dict` {attribute -> {item -> vector}}
  becomes `embeddings/item_attributes.npy`: see `item_attribute_matrix`.

`main.py` rebuilt `augmented_user_init_embedding_final` and
`augmented_total_embed_dict` from those two dicts on every run and never used
a copy already on disk, so the dicts are read when present and the stacked
re-dumps only when a release ships them alone.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.errors import DataError

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
# source dict -> the stacked copy main.py derived from it
USER_SOURCES = ("augmented_user_init_embedding", "augmented_user_init_embedding_final")
ATTRIBUTE_SOURCES = ("augmented_atttribute_embedding_dict", "augmented_total_embed_dict")
LLM_ATTRIBUTES = ("director", "country", "language")
DATASET_ATTRIBUTES = ("year", "title", "genre")  # from item_attribute.csv; already in the text features
EDGES_TARGET = "augmented_edges.parquet"
USER_PROFILES_TARGET = "embeddings/user_profiles.npy"
ITEM_ATTRIBUTES_TARGET = "embeddings/item_attributes.npy"
RELEASE_MODEL = "llmrec-release"


@dataclass
class PickleImport:
    """What the trusted pickles added to the run, ready to be written with the split."""

    sources: dict[str, Path] = field(default_factory=dict)  # file name -> path actually unpickled
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # run-relative parquet -> frame
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # run-relative npy -> float32 matrix
    notes: list[str] = field(default_factory=list)


def unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)  # noqa: S301 - only with --trust-pickle
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None


def _index(path: Path, key: Any, bound: int, what: str) -> int:
    """A dict key as a row index; the original indexed with ints, so nothing else is accepted."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
        raise DataError(f"{path}: key {key!r} is not an integer {what} index (expected 0..{bound - 1})")
    if not 0 <= key < bound:
        raise DataError(f"{path}: {what} index {key} is outside 0..{bound - 1}")
    return int(key)


def _vectors(path: Path, where: str, keys: list[Any], values: list[Any]) -> np.ndarray:
    """Equal-length numeric vectors -> float32 (n x d); the offending key is named on failure."""
    try:
        matrix = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] == 0:
        first = np.asarray(values[0], dtype=object)
        expected = f"a vector of {first.shape[0]} floats like the first key's" if first.ndim == 1 else "a float vector"
        for key, value in zip(keys, values):
            vector = np.asarray(value, dtype=object)
            if vector.ndim != 1 or vector.shape != first.shape:
                raise DataError(
                    f"{path}: {where}key {key!r}: expected {expected}, "
                    f"got {type(value).__name__} of shape {vector.shape}"
                )
        raise DataError(f"{path}: {where}values are not numeric vectors (first: {str(values[0])[:60]})")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: {where}key {keys[int(np.argmin(finite))]!r}: vector holds NaN or infinite values")
    return matrix


def _rows_from_dict(path: Path, where: str, mapping: Any, bound: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """{index -> vector} -> (float32 bound x d with zero rows where absent, bool mask of present rows)."""
    if not isinstance(mapping, dict) or not mapping:
        got = type(mapping).__name__
        raise DataError(f"{path}: {where}expected a non-empty dict {what} index -> vector, got {got}")
    keys = list(mapping)
    rows = np.fromiter((_index(path, key, bound, what) for key in keys), dtype=np.int64, count=len(keys))
    vectors = _vectors(path, where, keys, list(mapping.values()))
    matrix = np.zeros((bound, vectors.shape[1]), dtype=np.float32)
    matrix[rows] = vectors
    present = np.zeros(bound, dtype=bool)
    present[rows] = True
    return matrix, present


def _rows_from_array(path: Path, where: str, array: Any, bound: int, what: str) -> np.ndarray:
    """A stacked re-dump (row i = index i) -> float32 bound x d; main.py needed exactly `bound` rows."""
    if not isinstance(array, np.ndarray) or array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        got = f"{type(array).__name__} {getattr(array, 'shape', '')} {getattr(array, 'dtype', '')}".rstrip()
        raise DataError(f"{path}: {where}expected a 2-D float array ({what}s x d), got {got}")
    if array.shape[0] != bound:
        raise DataError(f"{path}: {where}has {array.shape[0]} rows; expected one per {what} ({bound})")
    return _vectors(path, where, list(range(bound)), array)


def _pick(root: Path, candidates: tuple[str, str], notes: list[str]) -> Path | None:
    """The source dict if shipped, else its stacked re-dump (read only when alone)."""
    source, derived = (root / name for name in candidates)
    if source.is_file():
        if derived.is_file():
            notes.append(f"{derived.name} not read: main.py rebuilt it from {source.name} on every run")
        return source
    return derived if derived.is_file() else None


def user_profile_matrix(path: Path, n_users: int) -> tuple[np.ndarray, int]:
    """The released profile embeddings as float32 n_users x d (row = user id), and how many users lack one."""
    released = unpickle(path)
    if isinstance(released, dict):
        matrix, present = _rows_from_dict(path, "", released, n_users, "user")
        return matrix, int((~present).sum())
    return _rows_from_array(path, "", released, n_users, "user"), 0


def item_attribute_matrix(path: Path, n_items: int) -> tuple[np.ndarray, list[str], list[str], int]:
    """The LLM-written attribute embeddings as one float32 n_items x d matrix (their per-item mean).

    Our model takes one item-attribute feature. The original projected each
    attribute table with one shared Linear layer, propagated it over the
    graph, L2-normalised each result and summed them. Projection (one shared
    affine map) and propagation are linear, so projecting the mean equals the
    mean of the projections: the two differ only in the normalisation. The
    original normalised each attribute before summing; here the mean is
    normalised once, so an attribute whose propagated vectors are longer
    weighs more here than there. The original's per-attribute loss terms (a
    user-profile x attribute BPR term and a reconstruction target per table)
    likewise see one averaged table here, and its attribute weight
    (item_cat_rate) multiplied a sum of five unit-length rows (year/title or
    title/genre included), ours one. An item is averaged over the
    attributes it has; one with none gets a zero row (the artifact's
    "missing" marker). The dataset's own attributes (year, title, genre),
    which the original also embedded with ada-002, are left out: the
    release's text features already encode that text.

    Returns (matrix, attributes averaged, attributes left out, items with none).
    """
    released = unpickle(path)
    if not isinstance(released, dict):
        raise DataError(f"{path}: expected a dict attribute name -> item vectors, got {type(released).__name__}")
    unknown = [key for key in released if key not in LLM_ATTRIBUTES + DATASET_ATTRIBUTES]
    if unknown:
        raise DataError(
            f"{path}: unknown attribute key(s) {unknown}; the original used {list(LLM_ATTRIBUTES + DATASET_ATTRIBUTES)}"
        )
    used = [name for name in LLM_ATTRIBUTES if name in released]
    if not used:
        raise DataError(f"{path}: none of the LLM attributes {list(LLM_ATTRIBUTES)} (has {list(released)})")
    total: np.ndarray | None = None
    counts = np.zeros(n_items, dtype=np.int64)
    for name in used:
        table, where = released[name], f"attribute {name!r}: "
        if isinstance(table, dict):
            matrix, present = _rows_from_dict(path, where, table, n_items, "item")
        else:
            matrix, present = _rows_from_array(path, where, table, n_items, "item"), np.ones(n_items, dtype=bool)
        if total is not None and matrix.shape[1] != total.shape[1]:
            raise DataError(
                f"{path}: {where}vectors have {matrix.shape[1]} dims; {used[0]!r} has {total.shape[1]} "
                f"(the original projected all attributes with one shared layer)"
            )
        total = matrix if total is None else total + matrix
        counts += present
    assert total is not None
    total /= np.maximum(counts, 1).astype(np.float32)[:, None]
    left_out = [key for key in released if key in DATASET_ATTRIBUTES]
    return total, used, left_out, int((counts == 0).sum())


def augmented_edges(path: Path, n_users: int, n_items: int) -> tuple[pd.DataFrame, int]:
    """{user -> {0: liked, 1: disliked}} -> (edges in the augment stage's columns, pairs dropped)."""
    samples = unpickle(path)
    if not isinstance(samples, dict):
        raise DataError(f"{path}: expected a dict user -> {{0: liked, 1: disliked}}, got {type(samples).__name__}")
    rows = []
    for user, pair in samples.items():
        if isinstance(user, (bool, np.bool_)) or not isinstance(user, (int, np.integer)):
            raise DataError(f"{path}: key {user!r} is not an integer user index")
        try:
            liked, disliked = pair[0], pair[1]
        except (TypeError, KeyError, IndexError):
            raise DataError(f"{path}: user {user}: expected {{0: liked item, 1: disliked item}}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (liked, disliked)):
            raise DataError(f"{path}: user {user}: item ids must be integers, got {liked!r}, {disliked!r}")
        rows.append((int(user), int(liked), int(disliked)))
    edges = pd.DataFrame(rows, columns=["user", "liked", "disliked"], dtype=np.int64)
    in_range = edges["user"].between(0, n_users - 1) & edges[["liked", "disliked"]].apply(
        lambda column: column.between(0, n_items - 1)
    ).all(axis=1)
    kept = edges[in_range].reset_index(drop=True)
    kept["model"] = RELEASE_MODEL
    kept["template_hash"] = ""
    return kept, int((~in_range).sum())


def check_train_mat(path: Path, train: pd.DataFrame) -> str:
    matrix = unpickle(path)
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


def import_pickles(root: Path, trust: bool, train: pd.DataFrame, n_users: int, n_items: int) -> PickleImport:
    """Convert the release's pickles when trusted; otherwise only say which were skipped and why."""
    result = PickleImport()
    pickled = [name for name in PICKLED_FILES if (root / name).is_file()]
    if not pickled:
        return result
    if not trust:
        result.notes.append(
            f"skipped pickled files {pickled}: unpickling runs code from the file; pass --trust-pickle to load them"
        )
        return result
    notes = result.notes
    if "train_mat" in pickled:
        notes.append(check_train_mat(root / "train_mat", train))
        result.sources["train_mat"] = root / "train_mat"
    if "augmented_sample_dict" in pickled:
        path = root / "augmented_sample_dict"
        edges, dropped = augmented_edges(path, n_users, n_items)
        result.tables[EDGES_TARGET] = edges
        result.sources[path.name] = path
        notes.append(
            f"{path.name} -> {EDGES_TARGET}: {len(edges)} pairs; {dropped} dropped "
            f"(a user or item id outside the run, as main.py dropped them)"
        )
    path = _pick(root, USER_SOURCES, notes)
    if path is not None:
        matrix, missing = user_profile_matrix(path, n_users)
        result.arrays[USER_PROFILES_TARGET] = matrix
        result.sources[path.name] = path
        notes.append(
            f"{path.name} -> {USER_PROFILES_TARGET}: {n_users} x {matrix.shape[1]}; "
            f"{missing} user(s) without a profile get a zero row"
        )
    path = _pick(root, ATTRIBUTE_SOURCES, notes)
    if path is not None:
        matrix, used, left_out, missing = item_attribute_matrix(path, n_items)
        result.arrays[ITEM_ATTRIBUTES_TARGET] = matrix
        result.sources[path.name] = path
        notes.append(
            f"{path.name} -> {ITEM_ATTRIBUTES_TARGET}: mean of {used}, {n_items} x {matrix.shape[1]}; "
            f"{missing} item(s) without any get a zero row; {left_out or 'no dataset attributes'} left out "
            f"(the text features hold them)"
        )
    handled = set(result.sources) | set(USER_SOURCES) | set(ATTRIBUTE_SOURCES)
    ignored = [name for name in pickled if name not in handled]
    if ignored:
        notes.append(f"pickled files not imported (no converter): {ignored}")
    return result
