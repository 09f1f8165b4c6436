"""Interaction tables (parquet `user`, `item` columns) as sparse user x item matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec.errors import DataError


def interactions_to_csr(frame: pd.DataFrame, n_users: int, n_items: int, name: str = "interactions") -> sp.csr_matrix:
    """A 0/1 float32 CSR matrix [n_users, n_items] with a 1 at every (user, item) row of `frame`.

    Repeated pairs count once: the evaluator and the samplers treat an
    interaction as a set membership, not a count. `name` labels the table in errors.
    """
    missing = [column for column in ("user", "item") if column not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; expected integer columns 'user' and 'item'")
    users = _ids(frame["user"], n_users, f"{name}.user")
    items = _ids(frame["item"], n_items, f"{name}.item")
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items), dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _ids(column: pd.Series, n: int, label: str) -> np.ndarray:
    if not pd.api.types.is_integer_dtype(column.dtype):
        raise DataError(f"{label}: expected integer ids, got dtype {column.dtype}")
    ids = column.to_numpy(dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise DataError(f"{label}: ids must lie in 0..{n - 1}, found {ids.min()}..{ids.max()}")
    return ids
