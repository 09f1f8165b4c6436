"""Training options (`[train]` in a config TOML) and their per-model defaults.

Defaults that depend on the model (`lr`, `max_epochs`, `min_epochs`) are None
in the dataclass and resolved per model by `resolve`.

Why these defaults (measured on ml-latest-small, ratings >= 4, seeded 8:1:1
per-user split, batch 2048, d 64; popularity's validation Recall@20 is 0.141):
- Slow starts fool plain early stopping. At lr 1e-3 LightGCN peaks at epoch
  2, dips for ~20 epochs, then climbs for hundreds with 20-epoch plateaus: a
  fixed patience stopped it at epoch 89 (test Recall@20 .206; RecBole reaches
  .2527 at that lr): on the prepared split its validation best of epoch 69 is
  beaten only at epoch 115, after a 46-epoch plateau. Hence patience relative
  to the time the best took (x1: no new best in the last half of the run), a
  flat-trend condition (trainer `_should_stop`), a warm-up (`min_epochs`) as a
  floor, and lr 5e-3.
- LightGCN, lr 5e-3: best 0.260 at epoch 111 (stopped at 131 with patience 20).
- With that stopping rule, on the prepared split (torch engine, seed 0): lr 1e-3
  runs to its 300-epoch cap, test Recall@20 .2674 (best epoch 298); lr 5e-3
  stops at epoch 216, test .2644 (best epoch 108).
  lr 1e-2 peaks earlier (0.257 at 38) but fluctuates more.
- MF-BPR, lr 5e-3: best 0.218 at epoch 46; it overfits afterwards (lr 1e-2:
  0.202 at 31, then down to 0.17), so a shorter warm-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from llmrec.config import option
from llmrec.errors import ConfigError

MODELS = ("llmrec", "lightgcn", "mf", "popularity")
PROTOCOLS = ("standard", "paper")
MODEL_VARIANTS = ("project", "original")
# prune_rate per model variant: this project drops the highest-loss 20% of the augmented samples; the original
# keeps only the hardest (1 - 0.71) = 29% of all samples of the batch (reference notes §3.4)
PRUNE_RATE_DEFAULTS = {"project": 0.2, "original": 0.71}

# model -> defaults for the options left None; measured on ml-latest-small. Popularity has none: it counts, never trains.
MODEL_DEFAULTS: dict[str, dict[str, float | int]] = {
    "mf": {"lr": 5e-3, "max_epochs": 300, "min_epochs": 30},
    "lightgcn": {"lr": 5e-3, "max_epochs": 300, "min_epochs": 50},
    "llmrec": {"lr": 5e-3, "max_epochs": 300, "min_epochs": 50},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (plus where it runs); TOML table `[train]`."""

    section: ClassVar[str] = "train"

    model: str = option("llmrec", "--model", help="llmrec | lightgcn | mf | popularity (default {default}).")
    embedding_dim: int = 64
    n_layers: int = 2
    lr: float | None = option(None, "--lr", help="Learning rate (default per model).")
    max_epochs: int | None = option(None, "--epochs", help="Maximum epochs (default per model).")
    min_epochs: int | None = None  # warm-up: no early stopping before this epoch
    patience: int = 20  # evaluations without a better validation Recall@20 (after the warm-up) ...
    relative_patience: float = 1.0  # ... and this times the evaluations it took to reach the best ...
    trend_tolerance: float = 0.01  # ... and a trend over them projecting less than this relative gain
    eval_every: int = 1
    batch_size: int = 2048
    l2_reg: float = 1e-4
    max_grad_norm: float = 1.0  # 0 disables clipping
    # LLMRec: augmented edges, pruning, side features, masked reconstruction
    aug_sample_rate: float = 0.1
    prune_rate: float | None = None  # per model_variant (PRUNE_RATE_DEFAULTS)
    modality_weight: float = 0.02
    item_attribute_weight: float = 0.005
    user_profile_weight: float = 0.2
    mask_rate: float = 0.1
    reconstruction_weight: float = 0.1
    sce_alpha: float = 2.0
    # "original": the original code's normalisation, softmax, optimiser, pruning and attribute BPR (models.py)
    model_variant: str = option(
        "project", "--model-variant",
        help="project (default) | original: the original LLMRec model's normalisation, softmax, AdamW, pruning "
             "and attribute BPR (for reproducing it; labelled in every output).",
    )  # fmt: skip
    # run
    seed: int = option(0, "--seed", help="First seed (default {default}).")
    seeds: int = option(1, "--seeds", help="Number of seeds; reports mean and std.")
    device: str = option("auto", "--device", help="auto | cpu | cuda.")
    engine: str = option("auto", "--engine", help="Graph engine: auto | dgl | torch.")
    protocol: str = option(
        "standard", "--protocol",
        help="standard (select on val, test once) | paper (the original code's test-set selection; labelled).",
    )  # fmt: skip
    eval_batch_size: int = 2048
    checkpoint_every: int = 1
    stop_after_epochs: int | None = option(
        None, "--stop-after-epochs", help="Stop after N epochs, leaving a checkpoint that the next run resumes."
    )

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"[train] option 'model' = {self.model!r}: expected one of {MODELS}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"[train] option 'protocol' = {self.protocol!r}: expected one of {PROTOCOLS}")
        for name in ("embedding_dim", "batch_size", "eval_every", "seeds", "checkpoint_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[train] option '{name}' must be >= 1, got {getattr(self, name)}")
        if self.model_variant not in MODEL_VARIANTS:
            raise ConfigError(
                f"[train] option 'model_variant' = {self.model_variant!r}: expected one of {MODEL_VARIANTS}"
            )
        for name in ("trend_tolerance", "relative_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[train] option '{name}' must be >= 0, got {getattr(self, name)}")
        for name in ("prune_rate", "mask_rate"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"[train] option '{name}' must lie in [0, 1), got {getattr(self, name)}")

    @property
    def uses_graph(self) -> bool:
        return self.model in ("lightgcn", "llmrec")

    def resolve(self) -> TrainConfig:
        """This config with the model-dependent defaults filled in."""
        defaults = MODEL_DEFAULTS.get(self.model, {})
        filled = {key: value for key, value in defaults.items() if getattr(self, key) is None}
        if self.prune_rate is None:
            filled["prune_rate"] = PRUNE_RATE_DEFAULTS[self.model_variant]
        resolved = dataclasses.replace(self, **filled)
        if resolved.min_epochs is None or resolved.max_epochs is None:  # popularity: no epochs to run
            return resolved
        # a short run (--epochs below the warm-up) still selects its best epoch
        return dataclasses.replace(resolved, min_epochs=min(resolved.min_epochs, resolved.max_epochs))

    def fingerprint(self) -> dict[str, object]:
        """The options that decide the weights (a resumed run must match them)."""
        ignored = {"seeds", "device", "stop_after_epochs", "checkpoint_every", "eval_batch_size"}
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in ignored}
