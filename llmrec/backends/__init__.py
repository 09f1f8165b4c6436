"""Backend registry: the rest of llmrec asks for a backend by its CLI name.

Backend modules are imported lazily (they pull in httpx, transformers or vllm)
and register themselves with `@register_backend`, as lm-evaluation-harness
does for its model classes.
"""

from __future__ import annotations

import dataclasses
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


def _arguments(name: str, cls: type[Backend], given: dict[str, Any]) -> dict[str, Any]:
    """`given` checked against the constructor, with keys naming `cls.options_type` fields gathered into `options`."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    grouped = cls.options_type
    shared = {field.name for field in dataclasses.fields(grouped)} if grouped else set()
    unknown = sorted(set(given) - accepted - shared)
    if unknown:
        expected = sorted((accepted - {"options"} if shared else accepted) | shared)
        raise ConfigError(f"backend '{name}' has no option(s) {unknown}; expected some of {expected}")
    arguments = {key: value for key, value in given.items() if key not in shared}
    flat = {key: value for key, value in given.items() if key in shared}
    if grouped and flat:  # on top of an `options=` object when a Python caller passes both
        arguments["options"] = dataclasses.replace(given.get("options") or grouped(), **flat)
    return arguments


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as `name` with its options.

    `options` are the constructor's keyword arguments (`model=...` first of all)
    plus, flat, the fields of the backend's `options_type` (e.g. `max_retries`).
    """
    if name not in BACKEND_MODULES:
        raise ConfigError(f"unknown backend '{name}'; expected one of {sorted(BACKEND_MODULES)}")
    importlib.import_module(BACKEND_MODULES[name])
    cls = _REGISTRY[name]
    return cls(**_arguments(name, cls, options))


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
