"""Where llmrec keeps things: cache home, data mirror, paths inside a run.

Settings come from the environment so tests, CI and users on shared clusters
can redirect them without editing configs:
- `LLMREC_HOME` (default `~/.cache/llmrec`): downloaded datasets, converted
  models, the default completion store.
- `LLMREC_DATA_MIRROR`: a folder laid out as GroupLens ships the datasets
  (e.g. `<mirror>/ml-latest-small/ratings.csv`), read before any download.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmrec.errors import ConfigError


def llmrec_home() -> Path:
    return Path(os.environ.get("LLMREC_HOME") or Path.home() / ".cache" / "llmrec").expanduser()


def data_mirror() -> Path | None:
    mirror = os.environ.get("LLMREC_DATA_MIRROR")
    return Path(mirror).expanduser() if mirror else None


def datasets_cache() -> Path:
    return llmrec_home() / "datasets"


def default_store_path() -> Path:
    """The completion store shared by all runs unless a run names its own."""
    return llmrec_home() / "completions.sqlite"


def inside_run(run_dir: Path | str, relative: str | Path) -> Path:
    """Resolve `relative` under `run_dir`, refusing anything that escapes it.

    Config values name artifacts relative to the run directory; an absolute
    path or `..` must not let a config write elsewhere on disk.
    """
    root = Path(run_dir).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise ConfigError(f"path '{relative}' escapes the run directory {root}")
    return candidate
