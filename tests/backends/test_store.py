"""The completion store with a real backend (SmolLM2 in-process) and real SQLite.

The multi-process and crash tests against a real server are in
test_http_backends.py; these need no server.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from llmrec.backends import get_backend
from llmrec.backends.base import Backend, Completion
from llmrec.cli import app
from llmrec.errors import ConfigError
from llmrec.backends.store import CachedBackend, CompletionStore, request_key
from tests.backends.conftest import chat

QUESTIONS = ["Name a fruit.", "Name a river.", "Name a city."]


def test_rerun_is_served_from_the_store_without_loading_the_model(smollm2, tmp_path):
    requests = [chat(q, max_tokens=3) for q in QUESTIONS]
    with CompletionStore(tmp_path / "store.sqlite") as store:
        first = store.generate(smollm2, requests)
        assert first.usage.generated == 3 and first.usage.cache_hits == 0
        assert first.usage.completion_tokens == sum(c.completion_tokens for c in first.completions)
        fresh = get_backend("transformers", model="smollm2-135m")  # not loaded yet
        again = store.generate(fresh, requests)
    assert fresh._model is None
    assert [c.text for c in again.completions] == [c.text for c in first.completions]
    assert all(c.cached for c in again.completions)
    assert (again.usage.cache_hits, again.usage.generated) == (3, 0)


def test_duplicates_in_a_batch_are_generated_once(smollm2, tmp_path):
    cached = CachedBackend(smollm2, CompletionStore(tmp_path / "store.sqlite"))
    completions = cached.generate([chat(QUESTIONS[0], max_tokens=2)] * 3 + [chat(QUESTIONS[1], max_tokens=2)])
    assert completions[0].text == completions[1].text == completions[2].text
    assert (cached.last_usage.generated, cached.last_usage.cache_hits) == (2, 2)
    (count,) = sqlite3.connect(tmp_path / "store.sqlite").execute("SELECT COUNT(*) FROM completions").fetchone()
    assert count == 2


def test_key_covers_sampling_schema_model_and_revision(smollm2):
    base = chat(QUESTIONS[0])
    keys = {
        request_key(smollm2, base),
        request_key(smollm2, chat(QUESTIONS[0], max_tokens=7)),
        request_key(smollm2, chat(QUESTIONS[0], json_schema={"type": "string"})),
        request_key(get_backend("transformers", model="qwen2.5-7b"), base),
        request_key(get_backend("transformers", model="qwen2.5-7b", revision="abc"), base),
    }
    assert len(keys) == 5
    assert request_key(smollm2, base) == request_key(smollm2, chat(QUESTIONS[0]))


def test_not_a_store_is_a_config_error(tmp_path):
    bogus = tmp_path / "store.sqlite"
    bogus.write_text("these are not the bytes of a database" * 100)
    with pytest.raises(ConfigError, match="not a usable completion store"):
        CompletionStore(bogus)


def _foreign_claim(path, key: str, pid: int, lease_s: float = 600.0) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO claims VALUES (?, 'other-host-or-process', ?, ?, ?)",
                     (key, CompletionStore(path)._host, pid, time.time() + lease_s))  # fmt: skip
    conn.close()


def test_claims_of_a_dead_process_are_taken_over(smollm2, tmp_path):
    """A dead owner's claim is taken over at once (pid check), not after its lease runs out."""
    path = tmp_path / "store.sqlite"
    CompletionStore(path).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    request = chat(QUESTIONS[2], max_tokens=2)
    smollm2.generate([chat(QUESTIONS[0], max_tokens=1)])  # load the model first: only the takeover is timed
    lease_s = 120.0
    _foreign_claim(path, request_key(smollm2, request), dead.pid, lease_s=lease_s)
    started = time.monotonic()
    with CompletionStore(path, poll_s=0.05) as store:
        result = store.generate(smollm2, [request])
    waited = time.monotonic() - started
    assert result.usage.generated == 1
    # Generating 2 tokens takes well under a second; a broken dead-process check would wait out the lease.
    assert waited < lease_s / 4, f"took {waited:.1f} s: the dead owner's claim was not taken over"


def test_every_answer_records_the_process_that_generated_it(smollm2, tmp_path):
    path = tmp_path / "store.sqlite"
    with CompletionStore(path) as store:
        store.generate(smollm2, [chat(q, max_tokens=2) for q in QUESTIONS[:2]])
        owner = store.owner
    with CompletionStore(path) as store:
        records = list(store.iter_records())
    assert len(records) == 2 and {r["owner"] for r in records} == {owner}
    assert owner.split(":")[1] == str(os.getpid())


def test_a_store_from_before_owners_gets_the_column(smollm2, tmp_path):
    """Stores written before the `owner` column keep their answers and take new ones."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE completions (key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, "
        "request TEXT NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID;"
    )
    old = chat(QUESTIONS[0], max_tokens=2)
    conn.execute("INSERT INTO completions VALUES (?, 'transformers', 'smollm2-135m', ?, 'Apple', 'stop', 1, 1, 0.1, 0)",
                 (request_key(smollm2, old), old.canonical()))  # fmt: skip
    conn.commit()
    conn.close()
    with CompletionStore(path) as store:
        result = store.generate(smollm2, [old, chat(QUESTIONS[1], max_tokens=2)])
        owners = {r["text"]: r["owner"] for r in store.iter_records()}
    assert result.completions[0].text == "Apple" and result.usage.cache_hits == 1
    assert owners["Apple"] == "" and len(owners) == 2 and store.owner in owners.values()


@pytest.mark.parametrize("value", ["0", "-3", "many", ""])
def test_a_bad_claim_chunk_setting_is_one_clear_line(value, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CLAIM_CHUNK", value)
    with pytest.raises(ConfigError, match="LLMREC_CLAIM_CHUNK=.*expected a whole number >= 1"):
        CompletionStore(tmp_path / "store.sqlite")


def test_claim_chunk_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CLAIM_CHUNK", "3")
    with CompletionStore(tmp_path / "store.sqlite") as store:
        assert store.claim_chunk == 3
        assert store._claim([f"k{i}" for i in range(5)]) == (["k0", "k1", "k2"], [])


def test_a_live_claim_is_waited_for_not_generated_twice(smollm2, tmp_path):
    """Another live owner holds the key: we wait and take its answer."""
    path = tmp_path / "store.sqlite"
    request = chat(QUESTIONS[2], max_tokens=2)
    key = request_key(smollm2, request)
    CompletionStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _foreign_claim(path, key, holder.pid)

        def answer_later() -> None:
            time.sleep(0.5)
            other = CompletionStore(path)
            other._put(key, smollm2, request, Completion("from the other process", "stop", 1, 1, 0.1))
            other.close()

        writer = threading.Thread(target=answer_later)
        writer.start()
        with CompletionStore(path, poll_s=0.05) as store:
            result = store.generate(smollm2, [request])
        writer.join()
    finally:
        holder.kill()
        holder.wait()
    assert result.completions[0].text == "from the other process"
    assert (result.usage.generated, result.usage.cache_hits) == (0, 1)


def test_cache_cli_stats_export_clear(smollm2, tmp_path):
    path = tmp_path / "store.sqlite"
    with CompletionStore(path) as store:
        store.generate(smollm2, [chat(q, max_tokens=2) for q in QUESTIONS[:2]])
    runner = CliRunner()
    stats = runner.invoke(app, ["cache", "stats", "--store", str(path), "--json"])
    assert stats.exit_code == 0, stats.output
    figures = json.loads(stats.output)
    assert figures["completions"] == 2
    assert figures["by_model"] == [{"backend": "transformers", "model": "smollm2-135m", "completions": 2}]

    exported = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["cache", "export", str(exported), "--store", str(path)]).exit_code == 0
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(r["request"]["messages"][0]["content"] for r in records) == sorted(QUESTIONS[:2])

    cleared = runner.invoke(app, ["cache", "clear", "--store", str(path), "--yes"])
    assert cleared.exit_code == 0 and "deleted 2" in cleared.output
    with CompletionStore(path) as store:
        assert store.stats()["completions"] == 0


def _open_store_at_the_barrier(path: str, barrier, outcomes) -> None:
    barrier.wait()
    try:
        CompletionStore(path).close()
        outcomes.put("ok")
    except ConfigError as exc:
        outcomes.put(str(exc))


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    """Switching a new store to WAL raced: 3 of 40 rounds of 4 simultaneous opens
    failed with "database is locked" (seen in CI as an augment process exiting 2)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(40):
        path = str(tmp_path / f"store{round_}.sqlite")
        barrier, outcomes = context.Barrier(4), context.Queue()
        processes = [context.Process(target=_open_store_at_the_barrier, args=(path, barrier, outcomes)) for _ in range(4)]
        for process in processes:
            process.start()
        results = [outcomes.get(timeout=120) for _ in processes]
        for process in processes:
            process.join()
        assert len(results) == 4
        failures += [result for result in results if result != "ok"]
    assert failures == []


class _FailsOnce(Backend):
    """A plug-in whose first try at each request fails transiently (finish_reason "error"), then answers.

    A stand-in for a remote engine that drops a request under load: nothing here fails that way on demand.
    """

    name = "fails-once"

    def __init__(self) -> None:
        self.asked: list[str] = []

    @property
    def model_id(self) -> str:
        return "fails-once"

    def generate_iter(self, requests):
        for index, request in enumerate(requests):
            question = request.messages[-1]["content"]
            first_time = question not in self.asked
            self.asked.append(question)
            if first_time:
                yield index, Completion("engine overloaded, try again", "error", 0, 0, 0.0)
            else:
                yield index, Completion(f"answer to {question}", "stop", 3, 2, 0.0)


def test_a_failed_answer_is_not_stored_and_the_next_run_asks_again(tmp_path):
    backend = _FailsOnce()
    requests = [chat(q) for q in QUESTIONS]
    with CompletionStore(tmp_path / "store.sqlite") as store:
        first = store.generate(backend, requests)
        assert [c.finish_reason for c in first.completions] == ["error"] * 3
        assert (first.usage.generated, first.usage.failures) == (0, 3)
        assert store.stats()["completions"] == 0 and store.stats()["claims_pending"] == 0
        second = store.generate(backend, requests)
        assert [c.text for c in second.completions] == [f"answer to {q}" for q in QUESTIONS]
        assert (second.usage.generated, second.usage.failures) == (3, 0)
        third = store.generate(backend, requests)
    assert third.usage.cache_hits == 3 and len(backend.asked) == 6  # stored answers are final: asked twice each


# --- leases: a slow generation keeps its claim while it heartbeats, and loses it when the heartbeat stops ---------

LEASE_S = 2.0  # the heartbeat renews every LEASE_S / 3: a holder is late only if it stalls for 2/3 of a lease
LEASE_QUESTION = "Name a mountain."

#: The holder: a process whose backend answers only once the test creates the `release` file.
_HOLDER = r"""
import json, sys, time
from pathlib import Path
from llmrec.backends.base import Backend, ChatRequest, Completion, SamplingParams
from llmrec.backends.store import CompletionStore

path, release, lease_s, question = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]


class Slow(Backend):
    name = "lease-test"

    @property
    def model_id(self):
        return "lease-test"

    def generate_iter(self, requests):
        while not release.exists():  # slower than any lease: answers when the test says so
            time.sleep(0.02)
        for index, _ in enumerate(requests):
            yield index, Completion("answer of " + store.owner, "stop", 1, 1, 0.0)


store = CompletionStore(path, lease_s=lease_s)
print(store.owner, flush=True)
request = ChatRequest(({"role": "user", "content": question},), SamplingParams(temperature=0.0, max_tokens=6, seed=0))
result = store.generate(Slow(), [request])
print(json.dumps({"text": result.completions[0].text, "generated": result.usage.generated}), flush=True)
"""


class _Instant(Backend):
    """The taker's backend (the holder's name and model, so the same key): answers at once, records each question."""

    name = "lease-test"

    def __init__(self) -> None:
        self.asked: list[str] = []

    @property
    def model_id(self) -> str:
        return "lease-test"

    def generate_iter(self, requests):
        for index, request in enumerate(requests):
            self.asked.append(request.messages[-1]["content"])
            yield index, Completion("answer of the taker", "stop", 1, 1, 0.0)


class _WatchedStore(CompletionStore):
    """A store that records when each of its claim attempts ended and what it claimed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attempts: list[tuple[float, list[str]]] = []

    def _claim(self, pending):
        mine, foreign = super()._claim(pending)
        self.attempts.append((time.time(), mine))
        return mine, foreign


class _Taker(threading.Thread):
    """A second store on the same file (own connection, own owner) asking the holder's question."""

    def __init__(self, path, backend: Backend) -> None:
        super().__init__(daemon=True)
        self.path, self.backend = path, backend
        self.attempts: list[tuple[float, list[str]]] = []
        self.result = None
        self.owner = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with _WatchedStore(self.path, lease_s=LEASE_S, poll_s=0.05) as store:
                self.owner, self.attempts = store.owner, store.attempts
                self.result = store.generate(self.backend, [chat(LEASE_QUESTION)])
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            self.error = exc


def _start_holder(path, release) -> tuple[subprocess.Popen, str]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(release), str(LEASE_S), LEASE_QUESTION],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = holder.stdout.readline().strip()
    assert owner, holder.communicate(timeout=60)[1][-3000:]
    return holder, owner


def _claim_of(path, key: str):
    conn = sqlite3.connect(path, timeout=60)
    try:
        return conn.execute("SELECT owner, pid, lease_until FROM claims WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()


def _wait_for_claim(path, key: str, holder: subprocess.Popen, owner: str) -> float:
    """The lease_until of the holder's claim on `key` as first seen (every later value is at least as late)."""
    deadline = time.monotonic() + 120
    while (claim := _claim_of(path, key)) is None:
        assert holder.poll() is None, holder.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the holder never claimed the key"
        time.sleep(0.02)
    assert claim[:2] == (owner, holder.pid)
    return claim[2]


def _stored(path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path, timeout=60)
    try:
        return conn.execute("SELECT text, owner FROM completions").fetchall()
    finally:
        conn.close()


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_a_generation_slower_than_its_lease_keeps_its_claim_while_it_heartbeats(tmp_path):
    """The holder answers after several leases; the taker asks all along and must wait for its answer."""
    path, release = tmp_path / "store.sqlite", tmp_path / "release"
    CompletionStore(path).close()
    backend = _Instant()
    key = request_key(backend, chat(LEASE_QUESTION))
    holder, owner = _start_holder(path, release)
    try:
        first_lease = _wait_for_claim(path, key, holder, owner)
        taker = _Taker(path, backend)
        taker.start()
        # Let the taker ask until two full leases past the holder's first one have run out (or until it answers,
        # which it may only do if the holder's lease lapsed), then let the holder answer.
        deadline = time.monotonic() + 120
        while taker.is_alive() and not any(at > first_lease + 2 * LEASE_S for at, _ in taker.attempts):
            assert time.monotonic() < deadline, "the taker stopped asking"
            time.sleep(0.05)
        release.touch()
        taker.join(timeout=120)
        assert not taker.is_alive() and taker.error is None, taker.error
        out, err = holder.communicate(timeout=120)
    finally:
        release.touch()
        _end(holder)
    assert holder.returncode == 0, err[-3000:]
    late = [mine for at, mine in taker.attempts if at > first_lease]
    assert all(mine == [] for mine in late), "the claim was taken over while its holder's heartbeat renewed it"
    assert len(late) >= 2  # the taker did ask after the holder's first lease had run out
    assert backend.asked == []  # answered once, by the holder only
    assert json.loads(out.splitlines()[-1]) == {"text": f"answer of {owner}", "generated": 1}
    assert taker.result.completions[0].text == f"answer of {owner}" and taker.result.completions[0].cached
    assert (taker.result.usage.generated, taker.result.usage.cache_hits) == (0, 1)
    assert _stored(path) == [(f"answer of {owner}", owner)]


def _stop_outside_a_transaction(process: subprocess.Popen, path) -> None:
    """SIGSTOP `process` (alive, its heartbeat frozen) at a moment it holds no write lock on the store."""
    for _ in range(50):
        os.kill(process.pid, signal.SIGSTOP)
        probe = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # stopped inside its heartbeat's write: let it finish, stop it again
            os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the holder always held the store's write lock")


def test_a_claim_whose_heartbeat_stopped_is_taken_over_when_its_lease_runs_out(tmp_path):
    """A live holder that stops heartbeating (SIGSTOP: the pid stays alive) loses its claim once its lease ends."""
    path, release = tmp_path / "store.sqlite", tmp_path / "release"
    CompletionStore(path).close()
    backend = _Instant()
    key = request_key(backend, chat(LEASE_QUESTION))
    holder, owner = _start_holder(path, release)
    stopped = False
    try:
        _wait_for_claim(path, key, holder, owner)
        _stop_outside_a_transaction(holder, path)
        stopped = True
        owner_now, _, frozen_lease = _claim_of(path, key)  # the holder renews no more
        assert owner_now == owner
        taker = _Taker(path, backend)
        taker.start()
        taker.join(timeout=20 * LEASE_S)
        assert not taker.is_alive(), "the claim of a holder that stopped heartbeating was never taken over"
        assert taker.error is None, taker.error
        os.kill(holder.pid, signal.SIGCONT)
        stopped = False
        release.touch()
        out, err = holder.communicate(timeout=120)
    finally:
        if stopped:
            os.kill(holder.pid, signal.SIGCONT)
        release.touch()
        _end(holder)
    assert holder.returncode == 0, err[-3000:]
    claimed = [at for at, mine in taker.attempts if mine]
    assert len(claimed) == 1 and claimed[0] >= frozen_lease  # taken over only once the lease had run out
    assert backend.asked == [LEASE_QUESTION]
    assert taker.result.completions[0].text == "answer of the taker" and taker.result.usage.generated == 1
    # The holder, resumed, still finishes its generation, but the store keeps the first answer, the taker's.
    assert json.loads(out.splitlines()[-1])["text"] == f"answer of {owner}"
    assert _stored(path) == [("answer of the taker", taker.owner)]
