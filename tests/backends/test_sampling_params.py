"""`SamplingParams` refuses values no backend can honour, in Python and from the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.backends import SamplingParams
from llmrec.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": -1.0}, r"temperature must be >= 0 \(0 = greedy\), got -1.0"),
        ({"temperature": float("nan")}, "temperature must be >= 0 .*, got nan"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"max_tokens": 0}, "max_tokens must be >= 1, got 0"),
    ],
)
def test_bad_sampling_values_are_one_clear_config_error(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^sampling: {message}$"):
        SamplingParams(**values)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=1)
    assert (greedy.temperature, greedy.top_p, greedy.max_tokens) == (0.0, 1.0, 1)


def test_a_negative_temperature_on_the_command_line_stops_before_any_answer(prepared_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir)
    store = tmp_path / "store.sqlite"
    result = subprocess.run(
        [sys.executable, "-m", "llmrec", "augment", str(run_dir), "--what", "profiles", "--limit-users", "1", "--temperature", "-1",
         "--store", str(store)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "sampling: temperature must be >= 0 (0 = greedy), got -1.0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "user_profiles.parquet").exists()
