"""Datasets and the prepared run tables.

Public API for the other stages (keep these names stable):

- `load_split(run_dir) -> RunTables` (`llmrec.data.tables`): the prepared
  `train`, `val`, `test` interactions (`user`, `item`, `rating`, `timestamp`),
  `items` (`item`, `original_id`, `title`, `year`, `genres`) and `users`
  (`user`, `original_id`, plus `age`/`gender`/`occupation` where the dataset
  has them) as pandas DataFrames, with `n_users` / `n_items`. Ids are
  contiguous `0..n-1`; columns and id ranges are checked on load.
- `PrepareConfig` (`llmrec.data.config`, the `[data]` table), `prepare_run(run_dir, config)`
  (`llmrec.data.prepare`): what `llmrec data prepare` runs.
- `DATASETS`, `get_spec(name)` (`llmrec.data.registry`): the dataset registry.

Conventions of the prepared tables: interactions are implicit feedback
(ratings >= `min_rating` unless `keep_all_ratings`); `title` is the title
without the trailing "(year)", which is parsed into `year`; `genres` is
`|`-separated as MovieLens writes it; the split is per user (see
`llmrec.data.split`). Tables are read lazily so `import llmrec.data` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrec.data.config import PrepareConfig
    from llmrec.data.prepare import prepare_run
    from llmrec.data.registry import DATASETS, get_spec
    from llmrec.data.tables import RunTables, load_split

_EXPORTS = {
    "load_split": "llmrec.data.tables",
    "RunTables": "llmrec.data.tables",
    "PrepareConfig": "llmrec.data.config",
    "prepare_run": "llmrec.data.prepare",
    "DATASETS": "llmrec.data.registry",
    "get_spec": "llmrec.data.registry",
}

__all__ = ["DATASETS", "PrepareConfig", "RunTables", "get_spec", "load_split", "prepare_run"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmrec.data' has no attribute {name!r}")
