"""Backend registry: the rest of llmrec asks for a backend by its CLI name.

Backend modules are imported lazily (they pull in httpx, transformers or vllm)
and register themselves with `@register_backend`, as lm-evaluation-harness
does for its model classes.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from llmrec.backends.base import Backend, ChatRequest, Completion, SamplingParams
from llmrec.errors import ConfigError

__all__ = [
    "Backend",
    "ChatRequest",
    "Completion",
    "SamplingParams",
    "backend_availability",
    "get_backend",
    "register_backend",
]

# CLI name -> module that defines it. Importing the module registers the class.
BACKEND_MODULES: dict[str, str] = {
    "transformers": "llmrec.backends.transformers_backend",
    "vllm": "llmrec.backends.vllm_backend",
    "openai": "llmrec.backends.openai_backend",
}

_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as `name` with its options."""
    if name not in BACKEND_MODULES:
        raise ConfigError(f"unknown backend '{name}'; expected one of {sorted(BACKEND_MODULES)}")
    importlib.import_module(BACKEND_MODULES[name])
    cls = _REGISTRY[name]
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        expected = sorted(p for p in accepted if p != "self")
        raise ConfigError(f"backend '{name}' has no option(s) {unknown}; expected some of {expected}")
    return cls(**options)


def backend_availability() -> dict[str, str]:
    """For `llmrec info`: whether each backend's module imports here."""
    status = {}
    for name, module in BACKEND_MODULES.items():
        try:
            importlib.import_module(module)
            status[name] = "ok"
        except ImportError as exc:
            status[name] = f"unavailable ({exc})"
    return status
