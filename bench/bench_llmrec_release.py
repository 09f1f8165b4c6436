"""Importing the LLMRec release's embedding pickles at Netflix size.

A synthetic release with the published sizes (13,187 users, 17,366 items,
1536-d ada-002 vectors; five attribute tables of lists of Python floats, as
the original scripts pickled them) is written once, then:
- `unpickle only`: `pickle.load` of each file, the cost every reader pays;
- `original stacking`: on the loaded dicts, what `main.py` did (append
  `dict[i]` for i in range(len), `np.array`), plus the mean of the three LLM
  attributes that our single attribute feature needs;
- `llmrec import`: `user_profile_matrix` + `item_attribute_matrix` (unpickle,
  validation, stacking, NaN check, mean) as `data prepare --trust-pickle`
  runs them.
The two stacked results are asserted equal.

Run: `python -m bench llmrec_release` (writes bench/results/llmrec_release.md).
"""

from __future__ import annotations

import gc
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from llmrec.data.llmrec_pickles import LLM_ATTRIBUTES, item_attribute_matrix, user_profile_matrix

N_USERS, N_ITEMS, DIM = 13_187, 17_366, 1536
ATTRIBUTES = ("year", "title", "director", "country", "language")
RESULTS = Path(__file__).parent / "results" / "llmrec_release.md"


def _write_release(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    users = {user: rng.normal(size=DIM) for user in range(N_USERS)}
    user_path = folder / "augmented_user_init_embedding"
    user_path.write_bytes(pickle.dumps(users, protocol=4))
    del users
    attributes = {}
    for name in ATTRIBUTES:
        table = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32).astype(np.float64)
        attributes[name] = dict(enumerate(table.tolist()))
    attribute_path = folder / "augmented_atttribute_embedding_dict"
    with open(attribute_path, "wb") as handle:
        pickle.dump(attributes, handle, protocol=4)
    return user_path, attribute_path


def _timed(function, *args):  # type: ignore[no-untyped-def]
    gc.collect()
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _load(path: Path) -> object:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _original_stacking(users: dict, attributes: dict) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    user_matrix = np.array([users[i] for i in range(len(users))])
    stacked = {name: np.array([table[i] for i in range(len(table))]) for name, table in attributes.items()}
    return user_matrix, np.mean([stacked[name] for name in LLM_ATTRIBUTES], axis=0)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_release_") as tmp:
        user_path, attribute_path = _write_release(Path(tmp))
        sizes_mb = [path.stat().st_size / 2**20 for path in (user_path, attribute_path)]
        (users, t_users), (attributes, t_attrs) = _timed(_load, user_path), _timed(_load, attribute_path)
        (expected_users, expected_attrs), t_original = _timed(_original_stacking, users, attributes)
        del users, attributes
        (ours_users, t_our_users) = _timed(user_profile_matrix, user_path, N_USERS)
        (ours_attrs, t_our_attrs) = _timed(item_attribute_matrix, attribute_path, N_ITEMS)
    np.testing.assert_allclose(ours_users[0], expected_users, rtol=1e-6)
    np.testing.assert_allclose(ours_attrs[0], expected_attrs, rtol=1e-5, atol=1e-6)
    t_unpickle = t_users + t_attrs
    rows = [
        ("unpickle only", t_unpickle, "-"),
        ("original stacking (after unpickle)", t_unpickle + t_original, f"{t_original:.1f}"),
        ("llmrec import (unpickle + validate + stack)", t_our_users + t_our_attrs,
         f"{t_our_users + t_our_attrs - t_unpickle:.1f}"),
    ]  # fmt: skip
    lines = [
        "# LLMRec release import: embedding pickles at Netflix size",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, one run each "
        f"(the 2-core machine was shared with other jobs). Synthetic release: {N_USERS:,} users x {DIM} "
        f"({sizes_mb[0]:.0f} MiB pickle), {len(ATTRIBUTES)} attribute tables x {N_ITEMS:,} items x {DIM} "
        f"lists of floats ({sizes_mb[1]:.0f} MiB pickle). Both stacked results asserted equal.",
        "",
        "| step | total s | s beyond unpickling |",
        "|---|---:|---:|",
        *(f"| {name} | {total:.1f} | {extra} |" for name, total, extra in rows),
        "",
        "Regenerate: `python -m bench llmrec_release`.",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
