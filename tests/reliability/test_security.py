"""Security: template sandbox, pickle refusal, API-key hygiene, paths confined to the run.

- Templates are user input (`--prompts-dir`): every escape attempt below ends
  in a one-line `PromptError` naming the template, never in Python internals,
  a marker file or a traceback - also through the real `llmrec augment` CLI.
- Pickles run code when loaded: a release pickle whose loading would create a
  marker file is skipped (and said so) without `--trust-pickle`; the same
  file does create the marker with it, so the payload is real. Training
  checkpoints are loaded with `weights_only=True`: a booby-trapped
  `checkpoint.pt` is refused without running.
- API keys: `llmrec augment --backend openai` against a local OpenAI-compatible
  endpoint on 127.0.0.1 (standing in for a hosted API, which cannot be reached
  here; the real vLLM server is covered by tests/backends) with the key in
  `OPENAI_API_KEY`; the endpoint sees the key, while no file in the run
  directory, the completion store (WAL included), LLMREC_HOME or the captured
  stdout/stderr contains it - also when the server answers 401 quoting it.
- Paths from configs and options stay in the run directory (`inside_run`,
  `train --name`).
"""

from __future__ import annotations

import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrec.errors import ArtifactError, ConfigError
from llmrec.paths import inside_run
from llmrec.prompts import PromptError, load_template
from tests.data import fixtures
from tests.reliability.processes import run_llmrec

ESCAPES = {
    "class mro subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "template globals": "{{ self.__init__.__globals__ }}",
    "lipsum os.popen": "{{ lipsum.__globals__['os'].popen('touch MARKER') }}",
    "cycler os": "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "joiner globals": "{{ joiner.__init__.__globals__ }}",
    "namespace globals": "{% set ns = namespace() %}{{ ns.__class__.__init__.__globals__ }}",
    "attr filter": "{{ history|attr('__class__') }}",
    "str.format field": "{{ '{0.__class__.__base__.__subclasses__}'.format(history) }}",
    "percent format": "{{ '%s' % history.__class__ }}",
    "bound method self": "{{ (history.copy).__self__ }}",
    "mutate context": "{% set _ = history.append(1) %}",
    "pop from context": "{{ history.pop() }}",
    "huge range": "{{ range(10**9)|list|length }}",
    "include a file": "{% include '/etc/passwd' %}",
    "import a module": "{% import 'os' as os %}",
    "extends a file": "{% extends '/etc/passwd' %}",
    "flask config": "{{ config.items() }}",
    "request globals": "{{ request.application.__globals__ }}",
    "endless recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
}


def _evil_template(folder: Path, body: str, name: str = "profiles") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jinja").write_text(
        "{% block system %}You are helpful.{% endblock %}{% block user %}" + body + "{% endblock %}"
    )
    return folder


@pytest.mark.parametrize("body", list(ESCAPES.values()), ids=list(ESCAPES))
def test_template_escape_attempts_fail_with_a_prompt_error(body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a `touch MARKER` that ran would leave the file here
    template = load_template("profiles", _evil_template(tmp_path / "prompts", body))
    with pytest.raises(PromptError) as caught:
        template.render(history=[{"title": "Heat", "year": 1995, "genres": "Crime"}])
    message = str(caught.value)
    assert "profiles.jinja" in message and "\n" not in message
    assert not (tmp_path / "MARKER").exists()


def test_malicious_prompts_dir_through_the_cli(tmp_path: Path, isolated_home: Path) -> None:
    """`llmrec augment --prompts-dir evil/`: exit 2, one line naming the template, nothing run or written."""
    source = fixtures.write_movielens_csv(tmp_path / "source")
    run = tmp_path / "run"
    assert run_llmrec("data", "prepare", "csv", "--data-dir", str(source), "--run", str(run)).returncode == 0
    before = sorted(p.name for p in run.iterdir())
    prompts = _evil_template(tmp_path / "evil", ESCAPES["lipsum os.popen"])
    result = run_llmrec(
        "augment", str(run), "--what", "profiles", "--prompts-dir", str(prompts), "--limit-users", "1",
        "--store", str(tmp_path / "store.sqlite"), env={"LLMREC_HOME": str(isolated_home)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "profiles.jinja" in errors[0] and "sandbox" in errors[0], result.stderr
    assert not list(tmp_path.rglob("MARKER")) and not (Path.cwd() / "MARKER").exists()
    assert sorted(p.name for p in run.iterdir()) == before


# --- pickles -----------------------------------------------------------------------------


class _Trap:
    """Unpickling this calls `Path(marker).touch()`: what a malicious release file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("pickled_name", ["augmented_sample_dict", "augmented_user_init_embedding", "train_mat"])
def test_release_pickles_are_refused_without_trust_pickle(pickled_name: str, tmp_path: Path) -> None:
    source = fixtures.write_llmrec_release(tmp_path / "release")
    marker = tmp_path / "MARKER"
    (source / pickled_name).write_bytes(pickle.dumps(_Trap(marker)))
    run = tmp_path / "run"
    result = run_llmrec("data", "prepare", "llmrec-format", "--data-dir", str(source), "--run", str(run))
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "a pickle was loaded without --trust-pickle"
    assert "--trust-pickle" in result.stderr and pickled_name in result.stderr  # the skip is said, not silent
    manifest = json.loads((run / "manifest.json").read_text())
    assert pickled_name not in manifest["stages"]["prepare"]["inputs"]

    # With the opt-in the file IS unpickled (so the payload above was live): the marker appears,
    # and what it unpickled to (None, not the expected object) is refused in one line naming the file.
    trusted = run_llmrec(
        "data", "prepare", "llmrec-format", "--data-dir", str(source), "--run", str(tmp_path / "trusted"), "--trust-pickle"
    )  # fmt: skip
    assert marker.exists()
    assert trusted.returncode == 2 and "Traceback" not in trusted.stderr, trusted.stderr[-1500:]
    errors = [line for line in trusted.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{pickled_name}: expected" in errors[0] and "got NoneType" in errors[0], errors
    assert not (tmp_path / "trusted").exists()


def test_booby_trapped_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    """Checkpoints load with weights_only=True: a pickle payload inside one never runs."""
    import torch

    from llmrec.recommender.checkpoints import load_checkpoint

    marker = tmp_path / "MARKER"
    path = tmp_path / "checkpoint.pt"
    torch.save({"state": _Trap(marker)}, path)
    with pytest.raises(ArtifactError, match=r"checkpoint.pt: not a readable llmrec checkpoint \(UnpicklingError"):
        load_checkpoint(path)
    assert not marker.exists()


# --- API keys ------------------------------------------------------------------------------

API_KEY = "sk-reliability-4f9c2e7d1b8a-SECRET"


class _OpenAIEndpoint:
    """A minimal OpenAI-compatible chat endpoint on 127.0.0.1: valid profile JSON, or 401 quoting the key."""

    def __init__(self, unauthorised: bool = False) -> None:
        self.authorization: list[str] = []
        self.unauthorised = unauthorised
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._reply(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization", "")
                endpoint.authorization.append(auth)
                if endpoint.unauthorised:
                    self._reply(401, {"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"}})
                    return
                answer = {"age": 34, "gender": "female", "liked_genres": ["Drama"], "disliked_genres": ["Horror"],
                          "liked_directors": ["Agnès Varda"], "country": "France", "language": "French"}  # fmt: skip
                self._reply(200, {
                    "id": "cmpl-1", "object": "chat.completion", "model": "fake-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": json.dumps(answer)}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                })  # fmt: skip

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _files_containing(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.parametrize("unauthorised", [False, True], ids=["answers", "401 quoting the key"])
def test_api_key_never_reaches_logs_stores_manifests_or_reports(unauthorised: bool, tmp_path: Path) -> None:
    source = fixtures.write_movielens_csv(tmp_path / "source")
    run, store, home = tmp_path / "run", tmp_path / "store" / "completions.sqlite", tmp_path / "home"
    assert run_llmrec("data", "prepare", "csv", "--data-dir", str(source), "--run", str(run)).returncode == 0
    endpoint = _OpenAIEndpoint(unauthorised=unauthorised)
    try:
        result = run_llmrec(
            "--verbose", "augment", str(run), "--what", "profiles", "--backend", "openai",
            "--base-url", endpoint.base_url, "--model", "fake-model", "--limit-users", "3",
            "--backend-option", "max_retries=1", "--store", str(store),
            env={"OPENAI_API_KEY": API_KEY, "LLMREC_HOME": str(home)}, timeout=180,
        )  # fmt: skip
    finally:
        endpoint.stop()
    assert endpoint.authorization and all(a == f"Bearer {API_KEY}" for a in endpoint.authorization)
    if unauthorised:
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "refused the credentials (HTTP 401" in errors[0], result.stderr[-1500:]
        assert not (run / "user_profiles.parquet").exists()
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert (run / "user_profiles.parquet").is_file() and (run / "augment_report.json").is_file()
    secret = API_KEY.encode()
    assert secret not in result.stdout.encode() and secret not in result.stderr.encode()
    assert API_KEY[-12:] not in result.stderr  # not even a tail of it
    for root in (run, store.parent, home):
        if root.exists():
            assert not _files_containing(root, secret), f"API key written under {root}"


# --- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["../outside.parquet", "/etc/passwd", "model/../../x", "a/b/../../../y"])
def test_inside_run_refuses_escapes(relative: str, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="escapes the run directory"):
        inside_run(tmp_path / "run", relative)


def test_inside_run_refuses_a_symlink_out(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigError):
        inside_run(run, "link/escaped.json")
    assert inside_run(run, "embeddings/item_text.npy") == (run / "embeddings" / "item_text.npy").resolve()


def test_train_name_cannot_write_outside_the_run(tmp_path: Path) -> None:
    """`train --name ../../../victim` once wrote (and could rmtree) outside the run; now refused."""
    source = fixtures.write_movielens_csv(tmp_path / "source")
    run = tmp_path / "runs" / "run"
    assert run_llmrec("data", "prepare", "csv", "--data-dir", str(source), "--run", str(run)).returncode == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    result = run_llmrec("train", str(run), "--model", "popularity", "--name", "../../../victim", timeout=180)
    assert result.returncode == 2, result.stderr[-1500:]
    assert "Traceback" not in result.stderr and "escapes" in result.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "precious"
