"""A vLLM server that cannot start says why in one line: the cause from its log, not only "see <log>"."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrec.backends.vllm_server import VLLMServer, start_failure_cause
from llmrec.errors import BackendError


@pytest.mark.vllm
def test_model_not_available_offline_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vllm_python: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    log = tmp_path / "vllm.log"
    server = VLLMServer("mistralai/Mistral-7B-Instruct-v0.3", "mistral", python=vllm_python, log_path=log, start_timeout_s=240)
    with pytest.raises(BackendError) as caught:
        server.start()
    message = str(caught.value)
    assert "\n" not in message and "'mistral' (mistralai/Mistral-7B-Instruct-v0.3) exited with code" in message
    # The real cause, as huggingface_hub words it, is in the message itself.
    assert "LocalEntryNotFoundError" in message and "outgoing traffic has been disabled" in message
    assert str(log) in message and not server.running


def test_cause_is_the_last_exception_line_else_the_last_meaningful_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "(APIServer pid=7) INFO starting\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    raise ValueError('bad')\n"
        "    ^^^^^^^^^^^^^^^^^^^^^^^\n"
        "(APIServer pid=7) ValueError: max_model_len 99999 exceeds the model's 8192\n"
        "\n"
    )
    assert start_failure_cause(log) == "ValueError: max_model_len 99999 exceeds the model's 8192"
    log.write_text("INFO loading\nKilled\n\n")
    assert start_failure_cause(log) == "Killed"
    assert start_failure_cause(tmp_path / "absent.log") is None
