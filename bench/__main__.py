"""`python -m bench [NAME ...]` runs the benchmarks (all by default).

Each `bench/bench_<name>.py` has a `main()` that measures against a baseline in
the same run and writes its figures to `bench/results/<name>.md`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from llmrec.logs import configure_logging

log = logging.getLogger("bench")


def main(names: list[str]) -> int:
    configure_logging()
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    selected = names or available
    unknown = sorted(set(selected) - set(available))
    if unknown:
        log.error("unknown benchmark(s) %s; available: %s", unknown, available)
        return 2
    for name in selected:
        log.info("running bench_%s", name)
        importlib.import_module(f"bench.bench_{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
