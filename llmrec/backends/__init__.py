"""Backend registry: the rest of llmrec asks for a backend by its CLI name.

Built-in backend modules are imported lazily (they pull in httpx,
transformers or vllm) and register themselves with `@register_backend`, as
lm-evaluation-harness does for its model classes. Backends of other packages
are plug-ins: a distribution names its `Backend` subclass in the
`llmrec.backends` entry-point group (as pytest finds its plug-ins), and
`--backend NAME` loads it on first use (`docs/backends.md`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from typing import Any

from llmrec.backends.base import Backend, ChatRequest, Completion, SamplingParams
from llmrec.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
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
    "ray": "llmrec.backends.ray_backend",
}
#: Entry-point group where other distributions declare backends: `NAME = "module:BackendClass"`.
ENTRY_POINT_GROUP = "llmrec.backends"

_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plug-in backends by name; a built-in name cannot be taken over."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in found if ep.name not in BACKEND_MODULES}


def _load_plugin(entry_point: importlib.metadata.EntryPoint) -> type[Backend]:
    """Import a plug-in's class and register it under its entry-point name."""
    where = f"entry point '{entry_point.name} = {entry_point.value}' ({ENTRY_POINT_GROUP})"
    try:
        cls = entry_point.load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"backend '{entry_point.name}': {where} does not load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"backend '{entry_point.name}': {where} is not a subclass of llmrec.backends.Backend")
    return register_backend(entry_point.name)(cls)


def _backend_class(name: str) -> type[Backend]:
    if name in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[name])
        return _REGISTRY[name]
    plugins = _plugins()
    if name not in plugins:
        raise ConfigError(
            f"unknown backend '{name}'; expected one of {sorted([*BACKEND_MODULES, *plugins])} "
            f"(other packages add backends in the '{ENTRY_POINT_GROUP}' entry-point group)"
        )
    return _REGISTRY.get(name) or _load_plugin(plugins[name])


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
    """Instantiate the backend registered (or installed as a plug-in) as `name` with its options.

    `options` are the constructor's keyword arguments (`model=...` first of all)
    plus, flat, the fields of the backend's `options_type` (e.g. `max_retries`).
    """
    cls = _backend_class(name)
    return cls(**_arguments(name, cls, options))


def backend_availability() -> dict[str, str]:
    """For `llmrec info`: whether each built-in backend's module, and each plug-in, imports here."""
    status = {}
    for name, module in BACKEND_MODULES.items():
        try:
            importlib.import_module(module)
            status[name] = "ok"
        except ImportError as exc:
            status[name] = f"unavailable ({exc})"
    for name, entry_point in sorted(_plugins().items()):
        try:
            _load_plugin(entry_point)
            status[name] = f"ok (plug-in {entry_point.value})"
        except ConfigError as exc:
            status[name] = f"unavailable ({exc})"
    return status
