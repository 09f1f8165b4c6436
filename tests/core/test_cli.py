"""The CLI's contract: every command listed with help, user errors as one line."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmrec", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "info" in result.stdout


def test_info_reports_versions_and_backends() -> None:
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    import re
    from importlib.metadata import version

    versions = dict(re.findall(r"^(\S+)\s+(\S+.*)$", result.stdout, flags=re.MULTILINE))
    assert versions["torch"] == version("torch")
    assert versions["dgl"] == f"{version('dgl')} (ok)"  # installed, imports and is usable
    backends = result.stdout.split("backends:\n", 1)[1].split()
    assert backends[:2] == ["transformers", "ok"] and "openai" in backends and "vllm" in backends


def test_unknown_command_fails_without_traceback() -> None:
    result = run_cli("no-such-command")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
