"""SQLite plumbing shared by the completion store and the embedding cache.

Both are one SQLite file that several processes open at once (parallel runs, a
killed run and its rerun), so both need the same two things: WAL mode, switched
on without tripping over another process switching it in the same instant, and
`IN (...)` lookups split under SQLite's limit on host parameters.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Keys per `IN (...)` query. SQLite's default limit on host parameters per statement is 999 on
#: old builds; this leaves room for the query's other parameters.
IN_CHUNK = 500


def enable_wal(conn: sqlite3.Connection, *, timeout_s: float) -> None:
    """Switch a database to WAL, retrying while another process switches it too.

    Changing the journal mode needs an exclusive lock, and SQLite answers
    "database is locked" at once (its busy handler is not called) when several
    processes open a new database in the same instant: measured 6 of 240 opens by
    four processes at once. So retry here, up to the busy timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect_wal(path: Path, *, timeout_s: float = 60.0, autocommit: bool) -> sqlite3.Connection:
    """Open `path` (creating its folder) in WAL mode with a busy timeout of `timeout_s`.

    `autocommit=True` leaves transactions to the caller (`BEGIN IMMEDIATE` where it
    must hold the write lock); False keeps Python's implicit transaction per
    `with conn:` block.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None if autocommit else "")
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    enable_wal(conn, timeout_s=timeout_s)
    return conn


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`, one `IN (...)` query each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int) -> str:
    """`?,?,...` for an `IN (...)` of `count` values."""
    return ",".join("?" * count)
