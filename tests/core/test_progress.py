"""Progress off a terminal: a log line at a steady interval, for augmentation, embedding and the helper itself.

The real cases: `llmrec augment` with stderr going to a file, as under CI or
`nohup` where tqdm draws nothing (tests/augment/test_augment_progress.py),
training epochs (tests/recommender/test_training_progress.py) and embedding
(here).
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time

import pytest

from llmrec.errors import ConfigError
from llmrec.progress import INTERVAL_ENV, Progress, progress_interval, track


class FakeClock:
    """Seconds that move only when the test says so: rates and durations come out exact on any machine."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _progress_threads() -> int:
    return sum(thread.name == "llmrec-progress" for thread in threading.enumerate())


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llmrec.progress"]


def test_lines_carry_counts_rate_and_time_left() -> None:
    clock = FakeClock()
    with Progress(10, "edges m", "prompt", interval_s=3600, terminal=False, count_valid=True, clock=clock) as progress:
        progress.update(2, valid=2, free=True)  # two answers from the store: done, but not in the rate
        assert progress.line() == "edges m: 2/10 prompts (20%), 2 from the store, 2 valid, time left unknown yet"
        for step in range(8):  # one answer every 0.5 s, every other one valid
            clock.advance(0.5)
            progress.update(1, valid=step % 2 == 0)
            if step == 3:
                # 3 answers in the 1.5 s since the first: 2/s, the 4 left take ~2 s
                middle = "edges m: 6/10 prompts (60%), 2 from the store, 4 valid, 2 prompts/s, ~2s left"
                assert progress.line() == middle
        assert progress.line() == "edges m: 10/10 prompts (100%), 2 from the store, 6 valid, 2 prompts/s, in 4s"


def test_the_timer_logs_lines_while_nothing_is_done(caplog: pytest.LogCaptureFixture) -> None:
    """A server starting or one long batch: the timer still says where things stand, line after line."""
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    with Progress(80, "profiles m", "prompt", interval_s=0.01, terminal=False, clock=FakeClock()) as progress:
        deadline = time.monotonic() + 60  # waits for the timer's lines; a slow machine only takes longer
        while len(_lines(caplog)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        timer_lines = progress.lines
    lines = _lines(caplog)
    assert timer_lines >= 2 and len(lines) == progress.lines + 1, lines  # the timer's lines, then close's final one
    assert set(lines) == {"profiles m: 0/80 prompts (0%), time left unknown yet"}, lines


def test_short_runs_stay_quiet_and_the_timer_stops(caplog: pytest.LogCaptureFixture) -> None:
    """No line for a run shorter than the interval; a final line for one that outlasted it, timer line or not."""
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    before = _progress_threads()
    clock = FakeClock()
    with Progress(3, "quick", interval_s=30, terminal=False, clock=clock) as progress:
        assert _progress_threads() == before + 1
        clock.advance(29.5)
        progress.update(3)
    assert _lines(caplog) == [] and _progress_threads() == before
    with Progress(3, "slow", interval_s=30, terminal=False, clock=clock) as progress:
        clock.advance(10)
        progress.update(1)
        clock.advance(10)
        progress.update(2)
        clock.advance(10)
    assert _lines(caplog) == ["slow: 3/3 items (100%), 0.1 items/s, in 30s"] and _progress_threads() == before


def test_track_stops_its_timer_when_the_loop_is_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmrec.progress")
    before = _progress_threads()
    clock = FakeClock()
    epochs = track(range(100), "lightgcn seed 0", "epoch", interval_s=5, terminal=False, clock=clock)
    for epoch in epochs:
        epochs.set_postfix(loss="0.5")
        clock.advance(1)  # one epoch a second
        if epoch == 5:
            break  # early stopping, after the 6th epoch
    assert _progress_threads() == before
    assert _lines(caplog)[-1] == "lightgcn seed 0: 6/100 epochs (6%), 1 epochs/s, ~1m34s left, loss 0.5"

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
    """A server slow to start, or a first batch arriving at once: the rate is measured from that first batch on."""
    clock = FakeClock()
    with Progress(100, "edges m", "prompt", interval_s=3600, terminal=False, clock=clock) as progress:
        clock.advance(2.0)  # start-up: nothing arrives
        for _ in range(3):
            progress.update(1)
            clock.advance(0.5)
        # 2 more in the 1.5 s after the first answer: 1.33/s; over all 3.5 s it would be 0.857/s, ~1m53s left
        assert progress.line() == "edges m: 3/100 prompts (3%), 1.33 prompts/s, ~1m13s left"
    with Progress(100, "edges m", "prompt", interval_s=3600, terminal=False, clock=clock) as progress:
        clock.advance(2.0)
        for _ in range(8):  # one batch of 8 answers, read out one by one within 0.25 s
            progress.update(1)
            clock.advance(0.01)
        clock.advance(0.92)
        progress.update(2)  # the next 2, 1 s after the batch began: 2/s (counting the batch, 9/s)
        assert progress.line() == "edges m: 10/100 prompts (10%), 2 prompts/s, ~45s left"
