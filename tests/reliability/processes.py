"""Helpers of the process-level reliability tests: run `llmrec`, SIGKILL it at chosen points, check stores.

A kill point is "once `progress()` has reached `target`, wait `delay` seconds,
then SIGKILL": progress is whatever the command commits (rows of the
completion store, texts in the embedding cache, checkpoint epochs, artifacts
written), so kills land inside real work rather than only during start-up.
`watch` observes an uninterrupted run to learn which progress values exist and
how fast they come; targets are drawn among them from a seeded RNG, so CI kills
at the same places on every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]


def llmrec_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmrec", *args]


def run_llmrec(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        llmrec_command(*args), capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class KillPoint:
    target: int  # progress() value to wait for
    delay: float  # seconds after reaching it


@dataclasses.dataclass
class KillRecord:
    point: KillPoint
    killed: bool  # False when the process finished before the point came
    progress_at_kill: int
    seconds_alive: float


@contextlib.contextmanager
def _llmrec_process(
    args: Sequence[str], env: dict[str, str] | None, log: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    """`llmrec args` running with its output appended to `log`; killed and reaped on the way out, whatever happens."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        llmrec_command(*args), cwd=REPO_ROOT, stdout=out, stderr=out, env={**os.environ, **(env or {})}
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if log:
            out.close()


def kill_at(
    args: Sequence[str], point: KillPoint, progress: Callable[[], int], *, env: dict[str, str] | None = None,
    timeout: float = 240, log: Path | None = None,
) -> KillRecord:  # fmt: skip
    """Start `llmrec args`, SIGKILL it at `point`; returns what happened."""
    started = time.monotonic()
    with _llmrec_process(args, env, log) as process:
        reached_at = None
        while process.poll() is None:
            now = time.monotonic()
            if now - started > timeout:
                raise AssertionError(f"llmrec {' '.join(args)} neither finished nor reached {point} in {timeout} s")
            if reached_at is None and progress() >= point.target:
                reached_at = now
            if reached_at is not None and now - reached_at >= point.delay:
                current = progress()  # read before the kill: nothing commits after it
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return KillRecord(point, True, current, time.monotonic() - started)
            time.sleep(0.02)
        return KillRecord(point, False, progress(), time.monotonic() - started)


@dataclasses.dataclass
class Watched:
    """An uninterrupted run, observed: when each progress value was first seen."""

    returncode: int
    seconds: float
    seen: list[tuple[int, float]]  # (progress value, seconds since start), in order

    @property
    def final(self) -> int:
        return self.seen[-1][0]

    @property
    def inside(self) -> list[int]:
        """Progress values strictly between the start (0) and the finished state."""
        return [value for value, _ in self.seen if 0 < value < self.final]

    def step_seconds(self) -> float:
        """Median time between two consecutive progress values during the work (not start-up)."""
        times = sorted(t for _, t in self.seen[1:])
        gaps = sorted(b - a for a, b in zip(times, times[1:]))
        return gaps[len(gaps) // 2] if gaps else 0.0


def watch(args: Sequence[str], progress: Callable[[], int], *, env: dict[str, str] | None = None,
          timeout: float = 900, log: Path | None = None) -> Watched:  # fmt: skip
    """Run `llmrec args` to the end, polling `progress`: where a kill can land, and how fast the work moves."""
    started = time.monotonic()
    seen = [(0, 0.0)]
    with _llmrec_process(args, env, log) as process:
        while process.poll() is None:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"llmrec {' '.join(args)} did not finish in {timeout} s")
            value = progress()
            if value > seen[-1][0]:
                seen.append((value, time.monotonic() - started))
            time.sleep(0.02)
    value = progress()
    if value > seen[-1][0]:
        seen.append((value, time.monotonic() - started))
    return Watched(process.returncode, time.monotonic() - started, seen)


def store_rows(path: Path) -> int:
    """Completions committed so far (0 while the file does not exist yet)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def check_store(path: Path) -> dict[str, int]:
    """integrity_check is ok, no key or request stored twice; returns counts."""
    with sqlite3.connect(path, timeout=30) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows, keys, requests = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT key), COUNT(DISTINCT backend || model || request) FROM completions"
        ).fetchone()
    assert rows == keys == requests, (rows, keys, requests)
    return {"rows": rows}


def check_sqlite(path: Path) -> None:
    with sqlite3.connect(path, timeout=30) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def assert_same_tables(run: Path, reference: Path, names: Sequence[str]) -> None:
    for name in names:
        got, expected = pd.read_parquet(run / name), pd.read_parquet(reference / name)
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)


def write_small_csv_dataset(folder: Path, n_users: int = 40, n_items: int = 60, per_user: int = 12, seed: int = 0) -> Path:
    """A small random dataset in the `csv` loader's default layout (MovieLens columns).

    Big enough for a graph model to train a few epochs and for every user to
    reach val and test, small enough that a process's time is start-up, not work.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for user in range(1, n_users + 1):
        for item in rng.choice(n_items, size=per_user, replace=False):
            rows.append((user, int(item) + 1, float(rng.integers(4, 6)), 1_000_000 + len(rows)))
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(folder / "ratings.csv", index=False)
    genres = ["Drama", "Comedy", "Action", "Romance", "Thriller"]
    movies = pd.DataFrame({
        "movieId": range(1, n_items + 1),
        "title": [f"Film number {i} ({1950 + i % 60})" for i in range(1, n_items + 1)],
        "genres": ["|".join(rng.choice(genres, size=2, replace=False)) for _ in range(n_items)],
    })  # fmt: skip
    movies.to_csv(folder / "movies.csv", index=False)
    return folder


class ForwardingProxy:
    """A counting HTTP proxy on a fixed 127.0.0.1 port that can go down and come back.

    Stands between `llmrec` and the real vLLM server: `stop()` is the server
    dying (connections refused), `start()` on the same port is it coming back,
    and `prompts` counts, at the server side, how often each prompt arrived.
    """

    def __init__(self, upstream: str) -> None:
        import collections
        import socket

        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.prompts: collections.Counter[str] = collections.Counter()
        self.refused = 0  # requests that arrived while the server was "down"
        self._down = False
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def total(self) -> int:
        return sum(self.prompts.values())

    def start(self) -> ForwardingProxy:
        import json as _json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str, body: bytes | None) -> None:
                with httpx.Client(timeout=300) as client:
                    upstream = client.request(method, proxy.upstream + self.path, content=body,
                                              headers={"Content-Type": "application/json"})  # fmt: skip
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def _refuse_when_down(self) -> bool:
                # Keep-alive connections outlive the listening socket: drop them too, unanswered.
                if proxy._down:
                    proxy.refused += 1
                    self.close_connection = True
                return proxy._down

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self._refuse_when_down():
                    return
                proxy.prompts[_json.dumps(_json.loads(body).get("messages"), sort_keys=True)] += 1
                self._forward("POST", body)

            def do_GET(self) -> None:  # noqa: N802
                if not self._refuse_when_down():
                    self._forward("GET", None)

        self._down = False
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
