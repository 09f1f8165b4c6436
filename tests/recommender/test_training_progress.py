"""Training epochs off a terminal: a progress line at a steady interval (real LightGCN on ml-latest-small)."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import pytest

from llmrec.progress import INTERVAL_ENV
from llmrec.recommender.data import load_run_data
from llmrec.recommender.options import TrainConfig
from llmrec.recommender.trainer import fit


def test_training_logs_epoch_progress_off_a_terminal(
    ml_small_run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    config = TrainConfig(model="lightgcn", lr=1e-2, max_epochs=3, min_epochs=3, device="cpu")
    fit(load_run_data(ml_small_run), config, 0, lambda model: {"recall@20": 0.1})
    lines = [r.getMessage() for r in caplog.records if r.name == "llmrec.progress"]
    assert lines, "no progress line in 3 real epochs at a 0.05 s interval"
    assert all(line.startswith("lightgcn seed 0: ") for line in lines)
    assert re.fullmatch(r"lightgcn seed 0: 3/3 epochs \(100%\), [\d.e+-]+ epochs/s, in \d+s.*", lines[-1]), lines[-1]
