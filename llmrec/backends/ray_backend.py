"""`ray` backend: augmentation as a Ray Data batch job (`ray.data.llm`) over vLLM.

For catalogues that outgrow one server: the prompts the completion store lacks
become a Ray dataset, a Ray Data LLM processor runs them on a Ray cluster
(`ray_address`; default a local Ray started for the job), and the answers
stream back and are committed to the store as they arrive, so a job killed
mid-way resumes with only the missing prompts (the store does that for any
backend that yields answers as they finish).

Ray and vLLM live in the vLLM venv (vLLM pins its own torch; the main venv has
DGL's), so this module only drives `ray_job.py` there as a subprocess and
exchanges JSON lines with it; it imports neither Ray nor vLLM. One job process
(and one Ray connection) serves every batch of a run.

Two ways to run (`engine`):
- `http` (default): Ray Data's HTTP-request processor against vLLM
  OpenAI-compatible servers: the `--base-url` fleet, or `replicas` vLLM
  servers llmrec starts here (`tensor_parallel_size` devices each). JSON
  schemas go through the servers' structured output. This is what runs in CI.
- `vllm`: Ray Data's vLLM engine processor: `replicas` vLLM engines placed by
  Ray on the cluster's GPUs, `tensor_parallel_size` each. Needs GPUs: on the
  CPU box it is untested (docs/scaling.md).

Scoring (`edge_method` likelihood / pmi / yesno) goes through the `http`
engine: the job's HTTP stage posts the http backends' own score bodies (echo +
logprobs) to the servers' `/completions`, and the answers are read by the same
code as theirs, so Ray scores equal the server's. `engine=vllm` cannot score
(Ray's vLLM engine stage returns no prompt log-probabilities) and says so
before any work is sent.

All options are `--backend-option KEY=VALUE` (`ray_address=auto`, `replicas=4`,
`batch_size=16`, `tensor_parallel_size=2`, `engine=vllm`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from llmrec.backends import register_backend
from llmrec.backends.aliases import resolve_model
from llmrec.backends.base import ChatRequest, Completion, ScoreRequest, ServedModelBackend
from llmrec.backends.gguf_convert import gguf_revision, is_gguf, weights_folder
from llmrec.backends.http_client import OpenAICompatibleBackend, normalise_base_url
from llmrec.backends.vllm_server import EngineSettings, VLLMServer, default_vllm_python, start_failure_cause
from llmrec.devices import resolve_device
from llmrec.errors import BackendError, ConfigError

logger = logging.getLogger(__name__)

ENGINES = ("http", "vllm")
_JOB_SCRIPT = Path(__file__).with_name("ray_job.py")
#: Object store of a local Ray started for the job: prompts are text, and the box is shared.
_LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"ray backend: {name} must be an integer >= 1, got {value!r}")
    return value


@register_backend("ray")
class RayBackend(ServedModelBackend):
    """A Ray Data + vLLM batch job behind the common backend interface (see the module docstring)."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        base_url: str | Sequence[str] | None = None,
        *,
        engine: str = "http",
        ray_address: str | None = None,
        replicas: int = 1,
        batch_size: int = 4,
        batches_in_flight: int = 8,
        tensor_parallel_size: int | None = None,
        device: str = "auto",
        python: str | None = None,
        max_retries: int = 3,
        send_seed: bool | None = None,
        revision: str | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"ray backend: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.base_urls = [normalise_base_url(url) for url in ([base_url] if isinstance(base_url, str) else base_url or [])]
        if engine == "vllm" and self.base_urls:
            raise ConfigError("ray backend: engine=vllm runs its own vLLM engines on the Ray cluster; "
                              "drop --base-url, or use engine=http for running servers")  # fmt: skip
        if self.base_urls and (replicas != 1 or tensor_parallel_size is not None):
            logger.warning("ray: replicas and tensor_parallel_size apply to the servers llmrec starts or to engine=vllm; "
                           "with --base-url each given server is one replica")  # fmt: skip
        self.engine = engine
        #: Scores go through the servers' /completions (echo + logprobs); Ray's vLLM engine stage has no such answer.
        self.can_score = engine == "http"
        self.ray_address = ray_address
        self.replicas = _positive("replicas", replicas)
        self.batch_size = _positive("batch_size", batch_size)
        self.batches_in_flight = _positive("batches_in_flight", batches_in_flight)
        self.max_retries = max_retries
        self.settings = EngineSettings(resolve_device(device), tensor_parallel_size=tensor_parallel_size)
        self.python = Path(python).expanduser() if python else default_vllm_python()
        self.start_timeout_s = start_timeout_s
        self._source = resolve_model(model)
        if is_gguf(self._source) and revision is None:
            revision = gguf_revision(self._source)
        super().__init__(model, revision)
        # The request bodies are exactly those of the vllm backend (OpenAI chat-completions
        # with the schema as response_format), built by the same code.
        seed_ok = send_seed if send_seed is not None else bool(self.base_urls) or self.settings.device == "cuda"
        self._bodies = OpenAICompatibleBackend(model, [], schema_mode="response_format", send_seed=seed_ok)
        self.servers: list[VLLMServer] = []
        self._job: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()  # the job's stdout lines (`_read_lines`)
        self.log_path: Path | None = None

    def __repr__(self) -> str:
        where = self.ray_address or "local Ray"
        return f"RayBackend(model={self._model_name!r}, engine={self.engine!r}, ray={where!r}, replicas={self.replicas})"

    # --- the job process ------------------------------------------------------------------

    def _weights_path(self) -> str:
        return weights_folder(self._source)

    def _server_urls(self) -> list[str]:
        """The servers the HTTP processor talks to: the given fleet, or `replicas` started here."""
        if self.base_urls:
            return self.base_urls
        if not self.servers:
            weights = self._weights_path()
            for _ in range(self.replicas):
                server = VLLMServer(weights, self.model_id, python=self.python, engine=self.settings,
                                    start_timeout_s=self.start_timeout_s)  # fmt: skip
                self.servers.append(server.start())
        return [server.base_url for server in self.servers]

    def job_settings(self) -> dict[str, Any]:
        """The first line the job reads: where Ray runs and how the processor is built."""
        settings: dict[str, Any] = {
            "mode": self.engine,
            "address": self.ray_address,
            "batch_size": self.batch_size,
            "batches_in_flight": self.batches_in_flight,
            "max_retries": self.max_retries,
            "object_store_bytes": _LOCAL_OBJECT_STORE_BYTES,
        }
        if self.engine == "http":
            urls = self._server_urls()
            # Ray's logical CPUs, not cores: HTTP actors wait on the servers, and one per
            # server must fit beside the pre/post-processing tasks.
            settings.update(urls=urls, replicas=1, local_cpus=(os.cpu_count() or 1) + len(urls))
        else:
            engine_kwargs: dict[str, Any] = {"tensor_parallel_size": self.settings.tensor_parallel_size or 1,
                                             "dtype": self.settings.resolved_dtype,
                                             "enforce_eager": self.settings.eager}  # fmt: skip
            settings.update(model=self._weights_path(), engine_kwargs=engine_kwargs, replicas=self.replicas,
                            local_cpus=os.cpu_count() or 1)  # fmt: skip
            if self.settings.device == "cpu":  # Ray's default bundle asks for a GPU per engine worker
                settings["placement_group_config"] = {"bundles": [{"CPU": 1}] * engine_kwargs["tensor_parallel_size"]}
        return settings

    def _start_job(self) -> subprocess.Popen[str]:
        if not os.access(self.python, os.X_OK):
            raise ConfigError(f"vLLM python not found at {self.python}; run `make setup-vllm` "
                              "(it installs Ray too) or set LLMREC_VLLM_PYTHON")  # fmt: skip
        settings = self.job_settings()
        handle, name = tempfile.mkstemp(prefix="llmrec-ray-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        logger.info("starting the Ray job (%s, %s; log: %s)", self.engine, self.ray_address or "local Ray", self.log_path)
        with open(self.log_path, "ab") as log:
            job = subprocess.Popen(
                [str(self.python), "-P", str(_JOB_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, encoding="utf-8", env=env, start_new_session=True,
            )  # fmt: skip
        assert job.stdin is not None and job.stdout is not None
        self._lines = queue.Queue()
        threading.Thread(target=self._read_lines, args=(job.stdout, self._lines), name="llmrec-ray-read",
                         daemon=True).start()  # fmt: skip
        job.stdin.write(json.dumps(settings) + "\n")
        job.stdin.flush()
        return job

    def _failure(self, job: subprocess.Popen[str], what: str) -> BackendError:
        code = job.wait()
        cause = start_failure_cause(self.log_path) if self.log_path else None
        return BackendError(f"ray job {what} (exit code {code}): {cause or 'no cause in its log'}; see {self.log_path}")

    def generate_iter(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        bodies = (self._bodies.request_body(request, schema_in_prompt=False) for request in requests)
        for index, record in self._run(bodies, len(requests), "chat/completions"):
            yield index, Completion(record["text"], record["finish_reason"], record["prompt_tokens"],
                                    record["completion_tokens"], record["latency_s"])  # fmt: skip

    def score_iter(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[int, Completion]]:
        """Scores as the http backends get them (echo + logprobs on /completions), sent by Ray's HTTP stage."""
        if not self.can_score:
            raise BackendError("ray backend: engine=vllm cannot score (Ray's vLLM engine stage returns no prompt "
                               "log-probabilities); use engine=http, or edge_method = \"choose\"")  # fmt: skip
        bodies = (self._bodies.score_body(request) for request in requests)
        for index, record in self._run(bodies, len(requests), "completions"):
            payload = json.loads(record["text"])
            yield index, self._bodies.read_score_payload(requests[index], payload, "the ray job", record["latency_s"])

    def _run(self, bodies: Iterator[dict[str, Any]], count: int, endpoint: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Send one batch of request bodies to `endpoint` through the job; yield (index, answer record) as they come."""
        if not count:
            return
        if self._job is None or self._job.poll() is not None:
            self._job = self._start_job()
        job = self._job
        assert job.stdin is not None
        writer = threading.Thread(target=self._send, args=(job.stdin, bodies, endpoint), name="llmrec-ray-send",
                                  daemon=True)  # fmt: skip
        writer.start()
        finished = False
        try:
            answered = 0
            while (record := self._next_record()) is not None:
                if "done" in record:
                    break
                answered += 1
                yield record["index"], record
            else:
                raise self._failure(job, f"stopped after {answered} of {count} answers")
            if answered != count:
                raise BackendError(f"ray job answered {answered} of {count} requests; see {self.log_path}")
            finished = True
        finally:
            writer.join()
            if not finished:  # stopped mid-job: the job's state is unknown, start afresh next time
                self._stop_job(interrupt=True)

    def _next_record(self) -> dict[str, Any] | None:
        """The job's next line as JSON, None at its end of output.

        Lines come through a reader thread and a queue polled with a timeout, so
        Ctrl-C reaches this (main) thread while the job is quiet; a blocking read
        of the pipe would hold the signal until the next answer.
        """
        while True:
            try:
                line = self._lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                return None
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                raise BackendError(
                    f"ray job wrote a line that is not an answer: {line[:200]!r}; see {self.log_path}"
                ) from None

    @staticmethod
    def _read_lines(stdout: IO[str], lines: queue.Queue[str | None]) -> None:
        try:
            for line in stdout:
                lines.put(line)
        finally:
            stdout.close()
            lines.put(None)

    def _send(self, stdin: IO[str], bodies: Iterator[dict[str, Any]], endpoint: str) -> None:
        """Write the batch and its end mark (from a thread, so a full pipe never blocks the reader)."""
        try:
            for index, body in enumerate(bodies):
                stdin.write(json.dumps({"index": index, "body": body}, ensure_ascii=False) + "\n")
            stdin.write(json.dumps({"end": True, "endpoint": endpoint}) + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):  # the job died (or was stopped); the reader reports why
            pass

    def _stop_job(self, *, interrupt: bool = False, grace_s: float = 20.0) -> None:
        """End the job: close its input (it then finishes and shuts Ray down), or SIGTERM it mid-batch.

        Whatever is left of its process group (the local Ray) after `grace_s` is killed.
        """
        job, self._job = self._job, None
        if job is None:
            return
        try:
            if job.stdin is not None:
                job.stdin.close()
        except OSError:  # it is gone already
            pass
        if interrupt and job.poll() is None:
            job.terminate()
        try:
            job.wait(grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("ray job did not stop within %.0f s; killing it", grace_s)
        _signal_group(job.pid, signal.SIGKILL)
        job.wait()

    def close(self) -> None:
        self._stop_job()
        for server in self.servers:
            server.stop()
        self.servers = []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
