"""Shared test fixtures.

Tests run against real data: the MovieLens mirror that CI points
`LLMREC_DATA_MIRROR` at (`../shared/data` beside the checkout). Each test gets
its own `LLMREC_HOME` so caches and completion stores never leak between tests.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("DGLBACKEND", "pytorch")
# One OpenMP thread per process: tests run several processes at once (CLI
# subprocesses, the vLLM server), and two threads per process on 2 cores spin
# against each other - SmolLM2 generation measured 5.7x slower that way.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The tests' vLLM server shares the cores with the tests themselves: keep vLLM's own reservation of a
# core for its scheduler (one model thread) rather than llmrec's all-cores default for small boxes,
# whose bound threads would wait on each other whenever a test computes beside them.
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_default_mirror = REPO_ROOT.parent / "shared" / "data"
if "LLMREC_DATA_MIRROR" not in os.environ and _default_mirror.is_dir():
    os.environ["LLMREC_DATA_MIRROR"] = str(_default_mirror)


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The offline MovieLens mirror; a missing mirror is a set-up error, not a skip."""
    mirror = os.environ.get("LLMREC_DATA_MIRROR")
    if not mirror or not (Path(mirror) / "ml-latest-small" / "ratings.csv").is_file():
        pytest.fail("LLMREC_DATA_MIRROR must point at a folder holding ml-latest-small/ (see README)")
    return Path(mirror)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LLMREC_HOME per test, unless a test asks for the shared one."""
    home = tmp_path_factory.mktemp("llmrec_home")
    monkeypatch.setenv("LLMREC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_home() -> Path:
    """The session-wide LLMREC_HOME: converted models live here so they are built once."""
    return Path(os.environ.get("LLMREC_SHARED_HOME", REPO_ROOT / ".cache" / "llmrec"))


# --- LLM backends (owned by the backend layer, llmrec/backends) ---
# Converted models (GGUF -> HF folder, ~25-50 s each) are shared by the whole
# session through LLMREC_MODELS_DIR, while LLMREC_HOME stays per test.
os.environ.setdefault(
    "LLMREC_MODELS_DIR",
    str(Path(os.environ.get("LLMREC_SHARED_HOME", REPO_ROOT / ".cache" / "llmrec")) / "models"),
)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM venv's python; skips without it, or fails under LLMREC_REQUIRE_VLLM=1 (.ci/run)."""
    from llmrec.backends.vllm_server import default_vllm_python

    python = default_vllm_python()
    if not python.exists():
        message = f"vLLM venv not found ({python}); run `make setup-vllm` or set LLMREC_VLLM_PYTHON"
        if os.environ.get("LLMREC_REQUIRE_VLLM") == "1":
            pytest.fail(f"{message} (LLMREC_REQUIRE_VLLM=1: the vLLM tests must run here)")
        pytest.skip(message)
    return python


class _ServerLaunch:
    """The session's vLLM server, started on a thread so that its start-up overlaps other tests.

    The server takes ~55 s to become healthy, mostly on one core, while the
    tests before the first vLLM test run on the other one (OMP_NUM_THREADS=1).
    """

    def __init__(self, python: Path, shared_home: Path) -> None:
        from llmrec.backends.gguf_convert import ensure_converted
        from llmrec.backends.vllm_server import VLLMServer
        from llmrec.bundled import smollm2_gguf_path

        folder = ensure_converted(smollm2_gguf_path())  # here, not on the thread: tests convert the same file
        # No prefix caching: a request then computes the same way whenever it is sent, alone, so a
        # resumed run's answers equal an uninterrupted run's bit for bit (the augment kill chain,
        # tests/reliability/test_kill_resume.py, resends the prompts its reference run already sent).
        self.server = VLLMServer(folder, "smollm2-135m", python=python, extra_args=["--no-enable-prefix-caching"],
                                 log_path=shared_home / "logs" / "vllm-tests.log")  # fmt: skip
        environment = self.server.environment()  # read os.environ here: tests change it while the thread runs
        self.server.environment = lambda: environment  # type: ignore[method-assign]
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="vllm-server-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # re-raised by `ready` in the test that needs the server
            self.error = exc

    def ready(self):
        """The healthy server; raises what its start raised."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.server

    def stop(self) -> None:
        self._thread.join()
        self.server.stop()


@pytest.fixture(scope="session", autouse=True)
def _vllm_server_launch(request: pytest.FixtureRequest, shared_home: Path):
    """Starts the vLLM server at the session's first test when a collected test will use it."""
    from llmrec.backends.vllm_server import default_vllm_python

    python = default_vllm_python()
    wanted = any("vllm_server" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if not wanted or not python.exists():  # absent venv: `vllm_python` skips or fails those tests
        yield None
        return
    launch = _ServerLaunch(python, shared_home)
    yield launch
    launch.stop()


@pytest.fixture(scope="session")
def vllm_server(vllm_python: Path, _vllm_server_launch: _ServerLaunch | None):
    """A real vLLM-CPU server on 127.0.0.1 serving the bundled SmolLM2 as `smollm2-135m`.

    Started once per session (~55 s to healthy) from `.venv-vllm` (or
    `$LLMREC_VLLM_PYTHON`), in the background from the session's first test
    on, and stopped at the end. Returns the `VLLMServer`: use `.base_url` and
    `.served_name`. Skips when the vLLM venv is absent (`make setup-vllm`
    builds it; `make test` always does), except where `LLMREC_REQUIRE_VLLM=1`
    (CI's `.ci/run` sets it): there a missing venv fails every vLLM test
    instead of quietly skipping them.
    """
    assert _vllm_server_launch is not None, "the vLLM venv exists, so the session started its server"
    return _vllm_server_launch.ready()


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2 through the real transformers backend, loaded once for the whole session.

    Shared by the backend and augmentation tests (one load, one copy in memory);
    converted once into LLMREC_MODELS_DIR.
    """
    from llmrec.backends import get_backend

    backend = get_backend("transformers", model="smollm2-135m", batch_size=4)
    yield backend
    backend.close()


# --- end of LLM backends ---
