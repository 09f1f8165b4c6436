"""What machine a benchmark ran on, for its results header."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows.

    `platform.processor()` is empty on most Linux boxes, and results measured
    on machines of different kinds are only comparable when the header says
    which kind each was.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
