"""`[embed]`: the options of the embedding stage, one field each (see `llmrec.config`).

Apart from `llmrec.embed` because that module imports numpy and pandas, and the
CLI builds its flags from this class at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmrec.config import option
from llmrec.errors import ConfigError


@dataclass(frozen=True)
class EmbedConfig:
    """Options of `llmrec embed` (TOML table `[embed]`)."""

    section: ClassVar[str] = "embed"

    model: str | None = option(
        None, "--model", help="sentence-transformers id or folder (default bundled all-MiniLM-L6-v2)."
    )
    device: str | None = option(None, "--device", help="auto | cpu | cuda (default auto).")
    batch_size: int = option(64, "--batch-size", help="Texts per encoder batch (default {default}).")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"[embed] batch_size must be >= 1, got {self.batch_size}")
