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
import logging
import os
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process serving `model_path` as `served_name`.

    Defaults are the ones measured on CPU: float32 (no native bf16 there) and
    `--enforce-eager` (torch.compile makes start-up ~3.5 min instead of ~55 s).
    """

    def __init__(
        self,
        model_path: str | Path,
        served_name: str,
        *,
        python: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "float32",
        enforce_eager: bool = True,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 300.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.model_path = str(model_path)
        self.served_name = served_name
        self.python = Path(python).expanduser() if python else default_vllm_python()
        self.host = host
        self.port = port
        self.dtype = dtype
        self.enforce_eager = enforce_eager
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
            "--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
        ]  # fmt: skip
        if self.enforce_eager:
            args.append("--enforce-eager")
        return args + self.extra_args

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
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GB of KV cache; vLLM's CPU default takes much more
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
                raise BackendError(
                    f"vLLM server exited with code {self._process.returncode} while starting; see {self.log_path}"
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
