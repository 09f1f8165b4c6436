"""The Ray Data side of the `ray` backend: runs inside the vLLM venv, by path.

llmrec's main venv (torch 2.2.1 + DGL) cannot import Ray's vLLM stack (it pins
its own torch), so `ray_backend` starts this file with `.venv-vllm`'s python
and talks JSON lines over the pipes. It imports only the standard library
and Ray, never llmrec.

stdin: one line of job settings, then batches: one line per request
`{"index": i, "body": <OpenAI request body>}` and `{"end": true, "endpoint":
"chat/completions" | "completions"}` after each batch (chat answers, or
scores: an echoed prompt with its log-probabilities); EOF ends the job. One
process (one Ray start) serves every batch of a run.
stdout: one line per answer as Ray Data hands it back
`{"index": i, "text": ..., "finish_reason": ..., "prompt_tokens": n,
"completion_tokens": n, "latency_s": s}` (for `completions`, `text` is the
server's whole JSON answer, read by the caller), flushed at once, so the caller can
commit each answer to its completion store while the job goes on (`latency_s`:
from the request's pre-processing to its answer's post-processing in the
pipeline), and `{"done": n}` after a batch. Logs go to stderr. The job stops when its parent
dies (a SIGKILLed llmrec must not leave a Ray cluster behind).

Two processors (`ray.data.llm`):
- `http`: Ray Data's HTTP-request processor against OpenAI-compatible
  servers (vLLM servers llmrec started, or `--base-url`); one processor per
  server, each over its own shard of the prompts.
- `engine`: Ray Data's vLLM engine processor: `replicas` vLLM engines on the
  cluster's GPUs, `tensor_parallel_size` GPUs each. Not run on the CPU CI
  (see docs/scaling.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import IO, Any

logger = logging.getLogger("llmrec.ray_job")
_ANSWER_FIELDS = ("index", "text", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s")
#: The OpenAI endpoint of chat answers (the other: "completions", for scores).
CHAT = "chat/completions"
#: Where answer lines go (set by `main`: the original stdout).
_ANSWERS: IO[str] = sys.stdout


def _watch_parent(parent: int) -> None:
    """SIGTERM ourselves once the process that started us is gone (its pipes are then dead too)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        logger.warning("ray job: parent process %d is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="llmrec-parent-watch", daemon=True).start()


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _read_batch() -> tuple[list[dict[str, Any]], str] | None:
    """The next batch of requests and the endpoint they go to, or None at EOF."""
    rows = []
    for line in sys.stdin:
        record = json.loads(line)
        if record.get("end"):
            return rows, record.get("endpoint", CHAT)
        rows.append(record)
    return None


def _claim_stdout() -> IO[str]:
    """The answers' channel: the original stdout, with fd 1 itself pointed at stderr.

    Ray, vLLM and their C++ parts print to stdout; only answer lines may reach the caller.
    """
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _emit(record: dict[str, Any]) -> None:
    _ANSWERS.write(json.dumps(record, ensure_ascii=False) + "\n")
    _ANSWERS.flush()


def _http_processors(settings: dict[str, Any], dataset_for: Any, endpoint: str) -> list[Any]:
    """One HTTP-request processor per server, each applied to its shard of the prompts."""
    from ray.data import ActorPoolStrategy
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {"index": row["index"], "payload": json.loads(row["body"]), "sent_at": time.time()}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        answer = row["http_response"]
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        chat = endpoint == CHAT
        return {
            "index": row["index"],
            # a score is read from the echoed log-probabilities by the caller, with the http backend's code
            "text": (choice["message"]["content"] or "") if chat else json.dumps(answer),
            "finish_reason": choice.get("finish_reason") or "unknown",
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "latency_s": time.time() - row["sent_at"],
        }

    processed = []
    urls = settings["urls"]
    for shard, url in enumerate(urls):
        dataset = dataset_for(shard, len(urls))
        if dataset is None:  # fewer prompts than servers
            continue
        config = HttpRequestProcessorConfig(
            url=f"{url}/{endpoint}",
            batch_size=settings["batch_size"],
            concurrency=settings["replicas"],
            max_retries=settings["max_retries"],
            base_retry_wait_time_in_s=0.5,
        )
        processor = build_processor(config, preprocess=preprocess, postprocess=postprocess)
        # The HTTP stage sends a batch's requests one after another, and a Ray Data actor runs
        # one batch at a time unless told otherwise: let each actor run `batches_in_flight`
        # batches at once (its UDF is async), or a server would see one request at a time.
        # (Ray 2.60 has no processor option for it; the stage's map arguments are public.)
        processor.stages["HttpRequestStage"].map_batches_kwargs["compute"] = ActorPoolStrategy(
            size=settings["replicas"], max_concurrent_calls_per_actor=settings["batches_in_flight"]
        )
        processed.append(processor(dataset))
    return processed


def _engine_processor(settings: dict[str, Any], dataset_for: Any, endpoint: str) -> list[Any]:
    """Ray Data's vLLM engine stage: `replicas` engines, each on `tensor_parallel_size` devices (chat only)."""
    if endpoint != CHAT:
        raise ValueError(f"the vLLM engine stage answers chat requests only, not {endpoint}")
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        body = json.loads(row["body"])
        sampling = {key: body[key] for key in ("temperature", "top_p", "max_tokens", "seed", "stop") if key in body}
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        if schema is not None:
            sampling["structured_outputs"] = {"json": schema}
        return {"index": row["index"], "messages": body["messages"], "sampling_params": sampling,
                "max_tokens": body["max_tokens"], "sent_at": time.time()}  # fmt: skip

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        generated = int(row["num_generated_tokens"])
        return {
            "index": row["index"],
            "text": row["generated_text"],
            # The engine stage reports no finish reason: an answer that used its
            # whole budget is taken as cut (what the validator needs to know).
            "finish_reason": "length" if generated >= row["max_tokens"] else "stop",
            "prompt_tokens": int(row["num_input_tokens"]),
            "completion_tokens": generated,
            "latency_s": time.time() - row["sent_at"],
        }

    config = vLLMEngineProcessorConfig(
        model_source=settings["model"],
        engine_kwargs=settings["engine_kwargs"],
        concurrency=settings["replicas"],
        batch_size=settings["batch_size"],
        placement_group_config=settings.get("placement_group_config"),
        # vLLM's Ray metrics need ray[serve], which the vLLM venv does not get.
        log_engine_metrics=False,
    )
    processor = build_processor(config, preprocess=preprocess, postprocess=postprocess)
    return [processor(dataset_for(0, 1))]


def start_ray(settings: dict[str, Any]) -> None:
    """Connect to the cluster at `address`, or start a local Ray for this job alone (it dies with us)."""
    import ray
    import ray.data

    if settings.get("address"):
        ray.init(address=settings["address"], log_to_driver=False)
    else:
        ray.init(num_cpus=settings["local_cpus"], include_dashboard=False, log_to_driver=False,
                 object_store_memory=settings["object_store_bytes"])  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False


def run_batch(settings: dict[str, Any], rows: list[dict[str, Any]], endpoint: str) -> int:
    """Run one batch through the processor and stream its answers to stdout; returns how many."""
    import ray.data

    items = [{"index": row["index"], "body": json.dumps(row["body"])} for row in rows]

    # One block per batch: a finished batch streams back to the caller at once.
    def dataset_for(shard: int, shards: int) -> Any:
        """Shard `shard` of `shards` as a dataset of one block per batch (None when empty)."""
        part = items[shard::shards]
        if not part:
            return None
        return ray.data.from_items(part, override_num_blocks=max(1, -(-len(part) // settings["batch_size"])))

    build = _http_processors if settings["mode"] == "http" else _engine_processor
    processed = build(settings, dataset_for, endpoint)
    dataset = processed[0].union(*processed[1:]) if len(processed) > 1 else processed[0]
    written = 0
    for answer in dataset.iter_rows():
        _emit({key: answer[key] for key in _ANSWER_FIELDS})
        written += 1
    return written


def main() -> int:
    global _ANSWERS
    _ANSWERS = _claim_stdout()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _sigterm)
    _watch_parent(os.getppid())
    settings = json.loads(sys.stdin.readline())
    import ray

    start_ray(settings)
    try:
        while (batch := _read_batch()) is not None:
            rows, endpoint = batch
            started = time.perf_counter()
            written = run_batch(settings, rows, endpoint) if rows else 0
            logger.info("ray job: %d answers in %.1f s", written, time.perf_counter() - started)
            _emit({"done": written})
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
