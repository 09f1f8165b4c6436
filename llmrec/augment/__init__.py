"""LLM augmentation of the user-item graph (LLMRec §2): edges, user profiles, item attributes.

Entry points for other stages and the `llmrec run` driver:
- `AugmentConfig` (`llmrec.augment.config`): the `[augment]` table, every option of a run;
- `generate_candidates(run_dir, k)`: the base LightGCN's top-k unseen items per user;
- `augment_run(run_dir, config)`: opens the configured backend and runs
  `run_augmentation(run_dir, backend, config)`: prompts -> validated artifacts,
  resumable through the completion store.
Submodules are imported lazily so `import llmrec.augment` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AugmentConfig", "AugmentSummary", "augment_run", "generate_candidates", "run_augmentation"]


def __getattr__(name: str) -> Any:
    if name == "generate_candidates":
        from llmrec.augment.candidates import generate_candidates

        return generate_candidates
    if name == "AugmentConfig":
        from llmrec.augment.config import AugmentConfig

        return AugmentConfig
    if name in ("AugmentSummary", "augment_run", "run_augmentation"):
        from llmrec.augment import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'llmrec.augment' has no attribute {name!r}")
