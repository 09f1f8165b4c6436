"""The completion store with a real backend (SmolLM2 in-process) and real SQLite.

The multi-process and crash tests against a real server are in
test_http_backends.py; these need no server.
"""

from __future__ import annotations

import json
import os
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
