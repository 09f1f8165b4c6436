"""Progress off a terminal: a log line at a steady interval, for augmentation, embedding and the helper itself.

The real cases: `llmrec augment` with stderr going to a file, as under CI or
`nohup` where tqdm draws nothing (tests/augment/test_augment_progress.py),
training epochs (tests/recommender/test_training_progress.py) and embedding
(here).
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import pytest

from llmrec.errors import ConfigError
from llmrec.progress import INTERVAL_ENV, Progress, progress_interval, track

def _progress_threads() -> int:
    return sum(thread.name == "llmrec-progress" for thread in threading.enumerate())


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llmrec.progress"]


def test_lines_come_at_the_interval_with_counts_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    with Progress(10, "edges m", "prompt", interval_s=0.05, terminal=False, count_valid=True) as progress:
        progress.update(2, valid=2, free=True)  # two answers from the store: done, but not in the rate
        for step in range(8):
            time.sleep(0.03)
            progress.update(1, valid=step % 2 == 0)
    lines = _lines(caplog)
    assert len(lines) >= 3, lines
    middle = [line for line in lines if "left" in line]
    assert middle, lines
    assert re.fullmatch(r"edges m: \d+/10 prompts \(\d+%\), 2 from the store, \d+ valid, [\d.e+-]+ prompts/s, ~\d+s left",
                        middle[-1]), middle[-1]  # fmt: skip
    assert lines[-1].startswith("edges m: 10/10 prompts (100%), 2 from the store, 6 valid, ")
    assert re.search(r"in \d+s$", lines[-1])


def test_nothing_done_yet_still_gives_lines(caplog: pytest.LogCaptureFixture) -> None:
    """A server starting or one long batch: the timer still says where things stand."""
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    with Progress(80, "profiles m", "prompt", interval_s=0.05, terminal=False):
        time.sleep(0.2)
    assert any(line == "profiles m: 0/80 prompts (0%), time left unknown yet" for line in _lines(caplog))


def test_short_runs_stay_quiet_and_the_timer_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    before = _progress_threads()
    with Progress(3, "quick", interval_s=30, terminal=False) as progress:
        assert _progress_threads() == before + 1
        progress.update(3)
    assert _lines(caplog) == [] and _progress_threads() == before


def test_track_stops_its_timer_when_the_loop_is_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    before = _progress_threads()
    epochs = track(range(100), "lightgcn seed 0", "epoch", interval_s=0.02, terminal=False)
    for epoch in epochs:
        epochs.set_postfix(loss="0.5")
        time.sleep(0.01)
        if epoch == 5:
            break  # early stopping
    assert _progress_threads() == before
    assert re.fullmatch(r"lightgcn seed 0: 6/100 epochs \(6%\), [\d.e+-]+ epochs/s, ~\S+ left, loss 0.5", _lines(caplog)[-1])

    def interrupted() -> None:
        for epoch in track(range(100), "x", interval_s=0.02, terminal=False):
            if epoch == 2:
                raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        interrupted()
    assert _progress_threads() == before


def test_a_bad_interval_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    with pytest.raises(ConfigError, match="LLMREC_PROGRESS_INTERVAL='soon': expected a number of seconds > 0"):
        progress_interval()
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5


def test_embedding_logs_progress_off_a_terminal(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from llmrec.embed import TextEncoder, open_cache

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    monkeypatch.setenv(INTERVAL_ENV, "0.01")
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    texts = [f"Movie number {n}, a {['comedy', 'drama', 'western'][n % 3]} from {1950 + n}" for n in range(300)]
    encoder = TextEncoder(device="cpu", batch_size=8)
    with open_cache() as cache:
        vectors = encoder.encode(texts, cache)
    assert vectors.shape[0] == 300 and encoder.encoded == 300
    lines = _lines(caplog)
    assert lines and lines[-1].startswith("embed all-MiniLM-L6-v2: 300/300 texts (100%), "), lines


def test_start_up_time_does_not_stretch_the_time_left() -> None:
    """A server that takes long to start: the rate is measured from the first answer on."""
    with Progress(100, "edges m", "prompt", interval_s=60, terminal=False) as progress:
        time.sleep(1.5)  # start-up: nothing arrives
        for _ in range(3):
            progress.update(1)
            time.sleep(0.3)
        line = progress.line()
    rate = float(re.search(r"([\d.]+) prompts/s", line).group(1))
    assert rate > 1.8, line  # 2 more in 0.9 s after the first answer: ~2.2/s; over all 2.4 s it would be ~1.25/s
