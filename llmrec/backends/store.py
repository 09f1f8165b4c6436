"""The completion store: every LLM answer is paid for once.

A SQLite file (WAL mode) maps the sha256 of (backend kind, model id and
revision, canonical request) to the answer. `CompletionStore.generate` serves
hits from the file without touching the backend and sends only the misses,
committing each answer the moment the backend yields it - so a run killed with
SIGKILL loses at most the requests that were in flight, and the rerun picks up
where it stopped. The key is a PRIMARY KEY, so an answer can never be stored
twice.

Several processes may share one store (two augmentation stages, a notebook and
a CLI run). SQLite keeps the file consistent; on top of that, pending keys are
*claimed* in a `claims` table (owner, pid, lease) inside a `BEGIN IMMEDIATE`
transaction before they are sent, so two processes never pay for the same
prompt: a process waits for keys another live process holds and takes over
keys whose owner died (dead pid on this host, or a lease not renewed by the
owner's heartbeat thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from llmrec.backends.base import FAILED, Backend, ChatRequest, Completion, ScoreRequest
from llmrec.errors import ConfigError
from llmrec.sqlite_files import chunks, connect_wal, placeholders

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    lease_until REAL NOT NULL
) WITHOUT ROWID;
"""
#: Environment variable that sets how many prompts a process claims at a time (see CompletionStore).
CLAIM_CHUNK_ENV = "LLMREC_CLAIM_CHUNK"


#: What the store answers: a chat completion, or a score (`ScoreRequest`); both have `canonical()`.
Request = ChatRequest | ScoreRequest


def _answer(backend: Backend, batch: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
    """The backend's answers to a batch of one kind of request (a batch never mixes the two)."""
    if batch and isinstance(batch[0], ScoreRequest):
        return backend.score_iter(batch)  # type: ignore[arg-type]
    return backend.generate_iter(batch)  # type: ignore[arg-type]


def request_key(backend: Backend, request: Request) -> str:
    """sha256 of everything that decides the answer (never credentials or URLs)."""
    identity = {
        "backend": backend.name,
        "model": backend.model_id,
        "revision": backend.model_revision,
        "request": request.canonical(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


@dataclasses.dataclass
class UsageSummary:
    """What a generation run cost; stages put it into their reports.

    Token counts are those of answers generated in this run (what was paid
    for); answers served from the store count only as `cache_hits`.
    """

    prompts: int = 0
    cache_hits: int = 0
    generated: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def add(self, other: UsageSummary) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        rate = self.generated / self.wall_s if self.wall_s > 0 else 0.0
        tokens_rate = self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0
        return (
            f"{self.prompts} prompts: {self.cache_hits} from the store, {self.generated} generated, "
            f"{self.failures} failed; tokens in/out {self.prompt_tokens}/{self.completion_tokens}; "
            f"{self.wall_s:.1f} s ({rate:.2f} prompts/s, {tokens_rate:.1f} tokens/s generated)"
        )


@dataclasses.dataclass
class GenerationResult:
    """Completions in input order plus the run's usage."""

    completions: list[Completion]
    usage: UsageSummary


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs on this host (zombies count as dead: they hold nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _claim_chunk_from_env() -> int:
    text = os.environ.get(CLAIM_CHUNK_ENV, "1024")
    if not text.isdecimal() or int(text) < 1:
        raise ConfigError(f"{CLAIM_CHUNK_ENV}={text!r}: expected a whole number >= 1 (prompts claimed at a time)")
    return int(text)


def _add_owner_column(conn: sqlite3.Connection) -> None:
    """Stores made before answers recorded their owner get the column (old rows: '')."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(completions)")}
    if "owner" in columns:
        return
    try:
        conn.execute("ALTER TABLE completions ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another process added it meanwhile
            raise


#: The fields of an exported completion and the types an import accepts for each.
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,), "backend": (str,), "model": (str,), "request": (dict,), "text": (str,),
    "finish_reason": (str,), "prompt_tokens": (int,), "completion_tokens": (int,),
    "latency_s": (int, float), "created_at": (int, float), "owner": (str,),
}  # fmt: skip


def read_export(path: Path) -> list[dict[str, Any]]:
    """The records of a `llmrec cache export` file (`.jsonl`, or `.jsonl.gz`), each checked.

    A bad line is one `ConfigError` naming the file, the line and the field,
    raised before any record reaches a store.
    """
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}: not a JSON object ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
                for field, types in _RECORD_TYPES.items():
                    value = record.get(field)
                    if not isinstance(value, types) or isinstance(value, bool):
                        expected = " or ".join(t.__name__ for t in types)
                        raise ConfigError(f"{where}: field '{field}' must be {expected}, got {value!r:.60}")
                if len(record["key"]) != 64 or any(c not in "0123456789abcdef" for c in record["key"]):
                    raise ConfigError(f"{where}: field 'key' must be 64 lowercase hex digits (a sha256)")
                records.append(record)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the export ({exc})") from None
    return records


class CompletionStore:
    """A crash-safe, multi-process SQLite cache of completions.

    One instance per thread (SQLite connections are not shared across
    threads). `lease_s` is how long a claim survives without a heartbeat;
    `claim_chunk` bounds how many keys one process claims at a time, so two
    processes started on the same batch share the work instead of one waiting
    for the other to finish everything (default `$LLMREC_CLAIM_CHUNK`, else
    1024: one process takes a whole augmentation; set it to about a backend
    batch when several workers run the same prompts). Every stored answer
    records the `owner` (host:pid:nonce) that generated it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        claim_chunk: int | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.claim_chunk = _claim_chunk_from_env() if claim_chunk is None else claim_chunk
        self._host = socket.gethostname()
        self.owner = f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = connect_wal(self.path, timeout_s=60.0, autocommit=True)
            # NORMAL in WAL mode: a commit survives the process being killed
            # (it is in the WAL file); only an OS crash can lose the last ones.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            _add_owner_column(conn)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not a usable completion store (SQLite: {exc})") from None
        return conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> CompletionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so check-then-insert is atomic."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> dict[str, Completion]:
        """Stored completions of `keys` (absent keys are simply missing)."""
        found: dict[str, Completion] = {}
        for chunk in chunks(list(keys)):
            marks = placeholders(len(chunk))
            rows = self._conn.execute(
                "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, latency_s "
                f"FROM completions WHERE key IN ({marks})",
                tuple(chunk),
            )
            for key, text, finish, n_prompt, n_completion, latency in rows:
                found[key] = Completion(text, finish, n_prompt, n_completion, latency, cached=True)
        return found

    def stats(self) -> dict[str, Any]:
        """Counts for `llmrec cache stats`."""
        total, n_prompt, n_completion = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM completions"
        ).fetchone()
        per_model = [
            {"backend": backend, "model": model, "completions": count}
            for backend, model, count in self._conn.execute(
                "SELECT backend, model, COUNT(*) FROM completions GROUP BY backend, model ORDER BY 3 DESC"
            )
        ]
        (claims,) = self._conn.execute("SELECT COUNT(*) FROM claims").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path),
            "completions": total,
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "claims_pending": claims,
            "bytes": size,
            "by_model": per_model,
        }

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Every stored completion as a JSON-able dict (for `llmrec cache export`)."""
        rows = self._conn.execute(
            "SELECT key, backend, model, request, text, finish_reason, prompt_tokens, "
            "completion_tokens, latency_s, created_at, owner FROM completions ORDER BY created_at, key"
        )
        for key, backend, model, request, text, finish, n_prompt, n_completion, latency, created, owner in rows:
            yield {
                "key": key,
                "backend": backend,
                "model": model,
                "request": json.loads(request),
                "text": text,
                "finish_reason": finish,
                "prompt_tokens": n_prompt,
                "completion_tokens": n_completion,
                "latency_s": latency,
                "created_at": created,
                "owner": owner,
            }

    # --- writing -------------------------------------------------------------------------

    def import_records(self, records: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Add exported completions (`llmrec cache export` records); returns (added, already present).

        One transaction: a bad record raises before anything is committed, so a
        store is never left holding half an import. Keys are taken as exported
        (they hash the backend, model, revision and request, which a record does
        not fully carry), so import only exports you trust, like any cache.
        """
        added = present = 0
        with self._write_transaction() as conn:
            for record in records:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO completions (key, backend, model, request, text, finish_reason, "
                    "prompt_tokens, completion_tokens, latency_s, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record["key"], record["backend"], record["model"],
                        json.dumps(record["request"], sort_keys=True, ensure_ascii=False), record["text"],
                        record["finish_reason"], record["prompt_tokens"], record["completion_tokens"],
                        record["latency_s"], record["created_at"], record["owner"],
                    ),
                ).rowcount  # fmt: skip
                added += inserted
                present += 1 - inserted
        return added, present

    def clear(self, model: str | None = None) -> int:
        """Delete stored completions (all, or one model's); returns how many."""
        with self._write_transaction() as conn:
            if model is None:
                deleted = conn.execute("DELETE FROM completions").rowcount
                conn.execute("DELETE FROM claims")
            else:
                deleted = conn.execute("DELETE FROM completions WHERE model = ?", (model,)).rowcount
        self._conn.execute("VACUUM")
        return deleted

    def _put(self, key: str, backend: Backend, request: Request, completion: Completion) -> None:
        with self._write_transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO completions (key, backend, model, request, text, finish_reason, "
                "prompt_tokens, completion_tokens, latency_s, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    backend.name,
                    backend.model_id,
                    request.canonical(),
                    completion.text,
                    completion.finish_reason,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    completion.latency_s,
                    time.time(),
                    self.owner,
                ),
            )
            conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def _expire_stale_claims(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM claims WHERE lease_until < ?", (time.time(),))
        local_pids = conn.execute(
            "SELECT DISTINCT pid FROM claims WHERE host = ? AND owner != ?", (self._host, self.owner)
        ).fetchall()
        for (pid,) in local_pids:
            if not _pid_alive(pid):
                logger.info("taking over completion claims of dead process %d", pid)
                conn.execute("DELETE FROM claims WHERE host = ? AND pid = ?", (self._host, pid))

    def _claim(self, pending: Sequence[str]) -> tuple[list[str], list[str]]:
        """Claim up to `claim_chunk` of `pending`; returns (claimed by us, held by others).

        Keys answered meanwhile by another process are in neither list; the
        caller finds them with `lookup`.
        """
        mine: list[str] = []
        foreign: list[str] = []
        lease_until = time.time() + self.lease_s
        with self._write_transaction() as conn:
            self._expire_stale_claims(conn)
            done = set(self._keys_present(conn, "completions", pending))
            for key in pending:
                if key in done:
                    continue
                if len(mine) >= self.claim_chunk:
                    break
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?, ?)",
                    (key, self.owner, self._host, os.getpid(), lease_until),
                ).rowcount
                (mine if inserted else foreign).append(key)
        return mine, foreign

    @staticmethod
    def _keys_present(conn: sqlite3.Connection, table: str, keys: Sequence[str]) -> list[str]:
        present: list[str] = []
        for chunk in chunks(list(keys)):
            marks = placeholders(len(chunk))
            present += [row[0] for row in conn.execute(f"SELECT key FROM {table} WHERE key IN ({marks})", tuple(chunk))]
        return present

    def _release_claim(self, key: str) -> None:
        with self._write_transaction() as conn:
            conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def _release_claims(self) -> None:
        with self._write_transaction() as conn:
            conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Renew our claims' leases from a thread while the backend works."""
        stop = threading.Event()

        def renew() -> None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            try:
                while not stop.wait(self.lease_s / 3):
                    conn.execute(
                        "UPDATE claims SET lease_until = ? WHERE owner = ?",
                        (time.time() + self.lease_s, self.owner),
                    )
            finally:
                conn.close()

        thread = threading.Thread(target=renew, name="llmrec-store-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # --- generation ----------------------------------------------------------------------

    def generate_iter(
        self, backend: Backend, requests: Sequence[Request], usage: UsageSummary, *, progress: bool | None = None
    ) -> Iterator[tuple[int, Completion]]:
        """Yield `(index, completion)`: hits first, then misses as the backend answers them.

        `requests` are all chat requests or all `ScoreRequest`s (scores).
        Identical requests in one batch are sent once. `usage` is filled in as
        the run goes (so it is right even when the backend raises).
        """
        from tqdm.auto import tqdm

        started = time.perf_counter()
        usage.prompts += len(requests)
        positions: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            positions.setdefault(request_key(backend, request), []).append(index)
        pending = dict.fromkeys(positions)  # insertion-ordered set of unanswered keys
        # progress=None: a bar on a terminal only (tqdm's own rule).
        bar = tqdm(
            total=len(requests),
            unit="prompt",
            desc=f"{backend.name}:{backend.model_id}"[-40:],
            disable=None if progress is None else not progress,
        )
        try:
            while pending:
                for key, completion in self.lookup(list(pending)).items():
                    del pending[key]
                    usage.cache_hits += len(positions[key])
                    bar.update(len(positions[key]))
                    for index in positions[key]:
                        yield index, completion
                if not pending:
                    break
                mine, foreign = self._claim(list(pending))
                if not mine:
                    if foreign:  # another live process is answering them: wait, then look again
                        time.sleep(self.poll_s)
                    continue
                yield from self._generate_claimed(backend, requests, mine, positions, pending, usage, bar, started)
        finally:
            usage.failures += sum(len(positions[key]) for key in pending)
            usage.wall_s += time.perf_counter() - started
            bar.close()
            if pending:
                self._release_claims()

    def _generate_claimed(
        self,
        backend: Backend,
        requests: Sequence[Request],
        claimed: list[str],
        positions: dict[str, list[int]],
        pending: dict[str, None],
        usage: UsageSummary,
        bar: Any,
        started: float,
    ) -> Iterator[tuple[int, Completion]]:
        batch = [requests[positions[key][0]] for key in claimed]
        with self._heartbeat():
            for batch_index, completion in _answer(backend, batch):
                key = claimed[batch_index]
                del pending[key]
                if completion.finish_reason == FAILED:  # not an answer: release it, the next run asks again
                    self._release_claim(key)
                    usage.failures += len(positions[key])
                else:
                    self._put(key, backend, batch[batch_index], completion)
                    usage.generated += 1
                    usage.cache_hits += len(positions[key]) - 1  # duplicates in the batch ride along
                usage.prompt_tokens += completion.prompt_tokens
                usage.completion_tokens += completion.completion_tokens
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(
                    {"prompts/s": f"{usage.generated / elapsed:.2f}", "tok/s": f"{usage.completion_tokens / elapsed:.1f}"},
                    refresh=False,
                )
                bar.update(len(positions[key]))
                for index in positions[key]:
                    yield index, completion

    def generate(
        self, backend: Backend, requests: Sequence[ChatRequest], *, progress: bool | None = None
    ) -> GenerationResult:
        """All completions in input order, with the run's usage (also logged)."""
        usage = UsageSummary()
        results: list[Completion | None] = [None] * len(requests)
        try:
            for index, completion in self.generate_iter(backend, requests, usage, progress=progress):
                results[index] = completion
        finally:
            logger.info("%s %s: %s", backend.name, backend.model_id, usage.describe())
        return GenerationResult(results, usage)  # type: ignore[arg-type]


class CachedBackend(Backend):
    """Any backend behind a completion store; looks like a plain `Backend` to callers.

    `usage` accumulates over calls; `last_usage` is the most recent call's.
    """

    def __init__(self, backend: Backend, store: CompletionStore, *, progress: bool | None = None) -> None:
        self.inner = backend
        self.store = store
        self.progress = progress
        self.name = backend.name  # type: ignore[misc]
        self.usage = UsageSummary()
        self.last_usage = UsageSummary()

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def model_revision(self) -> str:
        return self.inner.model_revision

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        self.last_usage = UsageSummary()
        try:
            yield from self.store.generate_iter(self.inner, requests, self.last_usage, progress=self.progress)
        finally:
            self.usage.add(self.last_usage)
            logger.info("%s %s: %s", self.inner.name, self.inner.model_id, self.last_usage.describe())

    def close(self) -> None:
        self.inner.close()
