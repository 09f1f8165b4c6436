"""`python -m bench [NAME ...]` runs the benchmarks (all by default); `python -m bench NAME --option ...` one.

Each `bench/bench_<name>.py` has a `main()` that measures against a baseline in
the same run and writes its figures to `bench/results/<name>.md`. Options after
a single name go to that benchmark's `main(argv)` (e.g. `train --peer recbole`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from llmrec.logs import configure_logging

log = logging.getLogger("bench")


def main(argv: list[str]) -> int:
    configure_logging()
    available = sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    first_option = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    if options and len(names) != 1:
        log.error("options %s need exactly one benchmark before them: python -m bench NAME %s", options,
                  " ".join(options))
        return 2
    selected = names or available
    unknown = sorted(set(selected) - set(available))
    if unknown:
        log.error("unknown benchmark(s) %s; available: %s", unknown, available)
        return 2
    for name in selected:
        log.info("running bench_%s", name)
        module = importlib.import_module(f"bench.bench_{name}")
        if options:
            module.main(options)
        else:
            module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
