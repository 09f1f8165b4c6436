"""`[augment]` settings and running an augmentation from them.

Shared by `llmrec augment` and `llmrec run`, so both build the backend and the
options the same way from a config file plus overrides.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from llmrec.augment.pipeline import AugmentOptions, AugmentSummary, run_augmentation
from llmrec.augment.tasks import DEFAULT_EDGE_ORDERS


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Options of `llmrec augment` (TOML section `[augment]`)."""

    what: tuple[str, ...] = ("edges", "profiles", "attributes")
    backend: str = "transformers"
    model: str = "smollm2-135m"
    base_url: tuple[str, ...] = ()
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    store: str | None = None
    limit_users: int = 20
    limit_items: int | None = None
    history_budget: int = 30
    prompts_dir: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int = 0
    candidates_k: int = 10
    edge_orders: int = DEFAULT_EDGE_ORDERS
    candidates_epochs: int | None = None
    device: str = "auto"

    def options(self) -> AugmentOptions:
        return AugmentOptions(
            what=tuple(self.what), limit_users=self.limit_users, limit_items=self.limit_items,
            history_budget=self.history_budget,
            prompts_dir=Path(self.prompts_dir) if self.prompts_dir else None,
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
            seed=self.seed, candidates_k=self.candidates_k, edge_orders=self.edge_orders,
        )  # fmt: skip

    def backend_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.backend_options)
        if self.base_url:
            kwargs["base_url"] = list(self.base_url) if len(self.base_url) > 1 else self.base_url[0]
        return kwargs


def augment_with_settings(run_dir: Path | str, settings: AugmentConfig) -> AugmentSummary:
    """Open the configured backend, run the augmentations, close the backend (and any server it started)."""
    from llmrec.backends import get_backend

    with get_backend(settings.backend, model=settings.model, **settings.backend_kwargs()) as llm:
        return run_augmentation(
            run_dir, llm, store_path=settings.store, options=settings.options(),
            candidates_device=settings.device, candidates_epochs=settings.candidates_epochs,
        )  # fmt: skip
