"""Fixtures shared by the reliability process tests (their figures are printed by tests/conftest.py)."""

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

