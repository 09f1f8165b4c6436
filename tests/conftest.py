"""Shared test fixtures.

Tests run against real data: the MovieLens mirror that CI points
`LLMREC_DATA_MIRROR` at (`../shared/data` beside the checkout). Each test gets
its own `LLMREC_HOME` so caches and completion stores never leak between tests.
"""

from __future__ import annotations

import json
import os
import tempfile
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
#: "-gw0", "-gw1", ... in a pytest-xdist worker (`make test` runs two), "" in a plain pytest run.
_WORKER_SUFFIX = f"-{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else ""
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
        self.python = python
        self.shared_home = shared_home
        self.server = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Start the server on a thread (once)."""
        if self._thread is not None:
            return
        from llmrec.backends.gguf_convert import ensure_converted
        from llmrec.backends.vllm_server import VLLMServer
        from llmrec.bundled import smollm2_gguf_path

        folder = ensure_converted(smollm2_gguf_path())  # here, not on the thread: tests convert the same file
        # No prefix caching: a request then computes the same way whenever it is sent, alone, so a
        # resumed run's answers equal an uninterrupted run's bit for bit (the augment kill chain,
        # tests/reliability/test_kill_resume.py, resends the prompts its reference run already sent).
        self.server = VLLMServer(folder, "smollm2-135m", python=self.python,
                                 extra_args=["--no-enable-prefix-caching"],
                                 log_path=self.shared_home / "logs" / f"vllm-tests{_WORKER_SUFFIX}.log")  # fmt: skip
        environment = self.server.environment()  # read os.environ here: tests change it while the thread runs
        self.server.environment = lambda: environment  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._start, name="vllm-server-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # re-raised by `ready` in the test that needs the server
            self.error = exc

    def ready(self):
        """The healthy server (started now if it was not yet); raises what its start raised."""
        self.begin()
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.server

    def stop(self) -> None:
        if self._thread is None:
            return
        self._thread.join()
        self.server.stop()


@pytest.fixture(scope="session", autouse=True)
def _vllm_server_launch(request: pytest.FixtureRequest, shared_home: Path):
    """The session's vLLM server launch, started at the session's first test when a test here will use it.

    Under pytest-xdist every worker collects every test, but only the worker
    that is sent the "vllm" work unit (see `pytest_collection_modifyitems`) uses
    the server: there it starts at that unit's first test instead.
    """
    from llmrec.backends.vllm_server import default_vllm_python

    python = default_vllm_python()
    wanted = any("vllm_server" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if not wanted or not python.exists():  # absent venv: `vllm_python` skips or fails those tests
        yield None
        return
    launch = _ServerLaunch(python, shared_home)
    if not _WORKER_SUFFIX:
        launch.begin()
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


# --- pytest-xdist work units (`make test`: `-n 2 --dist loadscope --no-loadscope-reorder`) ---
#: Modules of long tests, sent right after the LLM units so that no worker ends the run alone on them.
_LONG_MODULES = ("tests/recommender/test_stopping.py", "tests/reliability/test_kill_resume.py")
#: Where the workers write test -> work unit for the controller's scheduler (set by the controller).
_GROUPS_FILE_VARIABLE = "LLMREC_TEST_GROUPS_FILE"


def _module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def _work_unit(item: pytest.Item) -> str:
    fixtures = getattr(item, "fixturenames", ())
    if "vllm_server" in fixtures:
        return "vllm"  # one session server, on the worker that runs these tests
    if "smollm2" in fixtures:
        return "smollm2"  # one in-process SmolLM2 load
    return _module_of(item.nodeid)  # the module's own fixtures are built once


def pytest_configure(config: pytest.Config) -> None:
    """In the xdist controller: a file for the workers to say which work unit each test belongs to."""
    if not _WORKER_SUFFIX and getattr(config.option, "numprocesses", None):
        handle, name = tempfile.mkstemp(prefix="llmrec-test-groups-", suffix=".json")
        os.close(handle)
        os.environ[_GROUPS_FILE_VARIABLE] = name  # the workers, started after this hook, inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _WORKER_SUFFIX and os.environ.get(_GROUPS_FILE_VARIABLE):
        Path(os.environ.pop(_GROUPS_FILE_VARIABLE)).unlink(missing_ok=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: one work unit per shared LLM, else per module, the long units first.

    Every test that uses the session's vLLM server goes to one worker in one
    unit (one server, ~55 s to start and 3 GB), likewise the tests of the
    in-process SmolLM2; the other tests of a module are a unit of their own so
    that its module fixtures are built once. The LLM units and `_LONG_MODULES` come first
    (xdist hands units out in collection order with `--no-loadscope-reorder`):
    the longest work starts while the short modules fill the other worker.
    The test -> unit map goes to the controller through a file, not through
    `xdist_group` marks: those travel inside node ids, which pytest 9.2 no
    longer lets a plugin change (pytest-xdist issue #1386: loadgroup silently
    stops grouping). Plain `pytest` runs are left in file order (the server
    then starts at the first test and overlaps the tests before the first
    vLLM test).
    """
    if not _WORKER_SUFFIX:
        return
    units = {item.nodeid: _work_unit(item) for item in items}
    rank = {"vllm": 0, "smollm2": 1, **{module: 2 for module in _LONG_MODULES}}
    items.sort(key=lambda item: rank.get(units[item.nodeid], 3))
    groups_file = os.environ.get(_GROUPS_FILE_VARIABLE)
    if groups_file:  # every worker writes the same map; the rename makes each write whole
        partial = Path(f"{groups_file}.{_WORKER_SUFFIX}")
        partial.write_text(json.dumps(units))
        partial.replace(groups_file)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadscope` with the workers' units (`pytest_collection_modifyitems`) as its scopes."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """Load-scope scheduling whose scope of a test is its work unit (default: its module)."""

        _units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._units is None:  # read once, after every worker has collected
                groups_file = os.environ.get(_GROUPS_FILE_VARIABLE)
                text = Path(groups_file).read_text() if groups_file else ""
                self._units = json.loads(text) if text else {}
            return self._units.get(nodeid, _module_of(nodeid))

    return UnitScheduling(config, log)


# --- the reliability tests' measured figures (tests/reliability/figures.py), from every worker ---
_WORKER_FIGURES: list[str] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: hand this worker's figures to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.reliability.figures import summary_lines

        workeroutput["reliability_figures"] = summary_lines()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    _WORKER_FIGURES.extend(getattr(node, "workeroutput", {}).get("reliability_figures", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the reliability tests measured (kills, fuzz cases) for docs/reliability.md."""
    from tests.reliability.figures import summary_lines

    lines = summary_lines() + _WORKER_FIGURES
    if lines:
        terminalreporter.section("reliability figures (measured in this session)")
        for line in lines:
            terminalreporter.write_line(line)
