"""Progress a person can follow: a bar on a terminal, a log line at a steady interval anywhere else.

tqdm draws only on a terminal; in CI, under `nohup` or into a log file its bars
vanish, and an 80-prompt vLLM job printed nothing for 4 minutes. `Progress`
keeps the tqdm bar on a terminal and otherwise logs one line every
`interval_s` seconds (default 30, or `$LLMREC_PROGRESS_INTERVAL`):

    edges smollm2-135m: 40/80 prompts (50%), 38 valid, 0.35 prompts/s, ~1m54s left

The line comes from a timer thread, so it also comes while nothing finishes (a
server starting, one long batch). Items served without work (answers from the
completion store) count as done but not in the rate, so the time left is not
flattered by a warm cache; and the rate counts from the first item worked on,
so a server's start-up or a model's loading does not stretch the time left. A run that outlasted one interval ends with a final
line; short ones stay quiet.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from llmrec.errors import ConfigError

logger = logging.getLogger(__name__)

INTERVAL_ENV = "LLMREC_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0

T = TypeVar("T")
#: Items finished within this many seconds of the first one arrived together (one batch):
#: the rate is measured from that first batch on.
_BURST_S = 0.25


def progress_interval() -> float:
    """Seconds between progress lines: `$LLMREC_PROGRESS_INTERVAL`, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ConfigError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts done / total (and valid, when asked) for one long loop; shows them as a bar or as log lines.

    `terminal=None` asks whether stderr is a terminal. `count_valid=True`
    adds "N valid" to the line (augmentation answers). `clock` gives the
    seconds that rates, time left and the final line's duration are measured
    in (default `time.monotonic`; tests pass a fake one); the timer thread
    waits `interval_s` of real time between lines either way. Use as a
    context manager, or call `close()`.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "item",
        *,
        interval_s: float | None = None,
        terminal: bool | None = None,
        count_valid: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval_s = progress_interval() if interval_s is None else interval_s
        self.count_valid = count_valid
        self.done = 0
        self.free = 0
        self.valid = 0
        self.postfix: dict[str, Any] = {}
        self.lines = 0
        self._clock = clock
        self._started = clock()
        self._first_work: float | None = None
        self._first_burst = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        else:
            self._thread = threading.Thread(target=self._tick, name="llmrec-progress", daemon=True)
            self._thread.start()

    def update(self, n: int = 1, *, valid: int | bool = 0, free: bool = False) -> None:
        """`n` more items done (`free`: without work, e.g. from a cache); `valid` of them valid."""
        with self._lock:
            self.done += n
            self.valid += int(valid)
            if free:
                self.free += n
            else:
                now = self._clock()
                if self._first_work is None:
                    self._first_work = now
                if now - self._first_work <= _BURST_S:
                    self._first_burst += n
        if self._bar is not None:
            if self.count_valid:
                self._bar.set_postfix({"valid": self.valid, **self.postfix}, refresh=False)
            self._bar.update(n)

    def set_postfix(self, **fields: Any) -> None:
        """Extra `name value` pairs shown after the counts (e.g. loss, validation metric)."""
        with self._lock:
            self.postfix = dict(fields)
        if self._bar is not None:
            self._bar.set_postfix(fields, refresh=False)

    def line(self) -> str:
        """The current state in one line (what the log shows)."""
        with self._lock:
            done, free, valid, postfix = self.done, self.free, self.valid, dict(self.postfix)
        elapsed = self._clock() - self._started
        parts = [f"{done}/{self.total} {self.unit}s" + (f" ({done / self.total:.0%})" if self.total else "")]
        if free:
            parts.append(f"{free} from the store")
        if self.count_valid:
            parts.append(f"{valid} valid")
        worked = done - free
        rate = self._rate(worked, elapsed)
        if worked:
            parts.append(f"{rate:.3g} {self.unit}s/s")
        if done < self.total:
            parts.append(f"~{_duration((self.total - done) / rate)} left" if rate > 0 else "time left unknown yet")
        else:
            parts.append(f"in {_duration(elapsed)}")
        parts += [f"{name} {value}" for name, value in postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)

    def _rate(self, worked: int, elapsed: float) -> float:
        """Items per second since the first batch finished; before a second one, over the whole elapsed time."""
        with self._lock:
            first, burst = self._first_work, self._first_burst
        if first is not None and worked > burst:
            return (worked - burst) / max(self._clock() - first, 1e-9)
        return worked / elapsed if elapsed > 0 else 0.0

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            logger.info("%s", self.line())
            self.lines += 1

    def close(self) -> None:
        """Stop the bar or the timer; a run that outlasted one interval gets a final line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lines or self._clock() - self._started >= self.interval_s:
            logger.info("%s", self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Tracked(Progress, Generic[T]):
    """`Progress` over an iterable: one item done per step, closed when the loop ends or is left."""

    def __init__(self, iterable: Iterable[T], total: int, desc: str, unit: str = "item", **options: Any) -> None:
        super().__init__(total, desc, unit, **options)
        self._iterable = iterable

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self._iterable:
                try:
                    yield item
                except GeneratorExit:  # the loop was left (early stop) with this item's step behind it
                    self.update(1)
                    raise
                self.update(1)
        finally:
            self.close()


def track(iterable: Iterable[T], desc: str, unit: str = "item", *, total: int | None = None, **options: Any) -> Tracked[T]:
    """Iterate with progress, like `tqdm(iterable)` but readable in a log file too."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    return Tracked(iterable, total, desc, unit, **options)
