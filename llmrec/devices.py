"""Which device a stage runs on: `auto` means a GPU when torch in this Python sees one.

One rule for every stage (training, embedding, the vLLM engine), so `--device auto`
means the same thing wherever it is given.
"""

from __future__ import annotations


def resolve_device(device: str | None) -> str:
    """`auto` (or None) is `cuda` when torch in this Python sees a GPU, else `cpu`; anything else as given.

    Callers and tests pass `cpu` / `cuda` explicitly to decide without asking the host.
    Without torch installed nothing here can use a GPU, so `auto` is `cpu`.
    """
    if device not in (None, "auto"):
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
