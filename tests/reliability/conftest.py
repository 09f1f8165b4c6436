"""Fixtures shared by the reliability process tests, and the session's measured figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.processes import run_llmrec


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-latest-small from the mirror, prepared by the real CLI once per session (read-only: tests copy it)."""
    run = tmp_path_factory.mktemp("prepared") / "run"
    result = run_llmrec("data", "prepare", "--run", str(run))
    assert result.returncode == 0, result.stderr
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the reliability tests measured (kills, fuzz cases) for docs/reliability.md."""
    from tests.reliability.figures import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("reliability figures (measured in this session)")
        for line in lines:
            terminalreporter.write_line(line)
