"""`llmrec info`: what this environment can run."""

from __future__ import annotations

import importlib
import importlib.util
import platform
from importlib import metadata

import typer


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _importable(module: str) -> str:
    """Whether a module imports; DGL can be installed yet fail against a newer torch."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer here
        return f"fails to import ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    return "ok"


def info() -> None:
    """Show versions (python, torch, dgl, sentence-transformers), CUDA devices and backends."""
    lines = [
        f"llmrec                {_version('llmrec')}",
        f"python                {platform.python_version()}",
        f"torch                 {_version('torch')}",
        f"dgl                   {_version('dgl')} ({_importable('dgl')})",
        f"sentence-transformers {_version('sentence-transformers')}",
        f"transformers          {_version('transformers')}",
    ]
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            lines.append(f"cuda devices          {', '.join(names)}")
        else:
            lines.append("cuda devices          none (CPU only)")
    except ImportError:
        lines.append("cuda devices          unknown (torch not installed)")
    lines.append("backends:")
    from llmrec.backends import backend_availability

    for name, status in backend_availability().items():
        lines.append(f"  {name:<20}{status}")
    typer.echo("\n".join(lines))
