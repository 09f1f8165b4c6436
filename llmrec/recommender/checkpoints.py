"""Atomic checkpoints of state dicts, and the RNG states a bit-exact resume needs.

Everything saved here is tensors, numbers, strings, lists and dicts, so every
file loads with `torch.load(..., weights_only=True)`: a checkpoint is data, never
code. Writes go through `llmrec.artifacts.atomic_path`, so a kill during a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrec.artifacts import atomic_path
from llmrec.errors import ArtifactError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (train the model first with `llmrec train`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt/foreign files
        raise ArtifactError(f"{path}: not a readable llmrec checkpoint ({type(exc).__name__}: {exc})") from None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state that training reads, in a weights_only-loadable form."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
            "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": generator.get_state(),
    }


def restore_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy_state = states["numpy"]
    np.random.set_state((
        numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
        numpy_state["has_gauss"], numpy_state["cached_gauss"],
    ))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    generator.set_state(states["sampler"])
