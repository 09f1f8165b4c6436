"""Run configuration: a TOML file plus CLI overrides, written into the run.

Each stage owns a dataclass of its options (e.g. `PrepareConfig` in
`llmrec.data.prepare`). A TOML file has one table per stage (`[data]`,
`[augment]`, `[embed]`, `[train]`); CLI flags override single keys. Unknown
keys and wrong types are errors, not silently ignored: a typo in a config must
not change an experiment without anyone noticing.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from llmrec.artifacts import write_json
from llmrec.errors import ConfigError

ConfigT = TypeVar("ConfigT")


def load_toml(path: Path | str | None) -> dict[str, Any]:
    """Read a config file; `None` means all defaults."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _accepts(annotation: Any, value: Any) -> bool:
    """Loose runtime check of a TOML value against a dataclass field annotation."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def build(cls: type[ConfigT], section: str, *layers: Mapping[str, Any] | None) -> ConfigT:
    """Build a stage config from layered mappings (file section, then CLI overrides).

    `None` values in a layer mean "not given" so unset CLI flags do not
    override the file.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in fields:
                raise ConfigError(
                    f"[{section}] unknown option '{key}'; expected one of {sorted(fields)}"
                )
            if not _accepts(hints[key], value):
                raise ConfigError(
                    f"[{section}] option '{key}' = {value!r}: expected {hints[key]}"
                )
            merged[key] = tuple(value) if isinstance(value, list) and typing.get_origin(hints[key]) is tuple else value
    try:
        config = cls(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    return config


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def write_effective_config(run_dir: Path | str, section: str, config: Any) -> None:
    """Merge one stage's effective options into `<run>/config.json`."""
    from llmrec.artifacts import read_json

    path = Path(run_dir) / "config.json"
    current = read_json(path) if path.exists() else {}
    current[section] = as_dict(config)
    write_json(path, current)
