"""Run configuration: one typed class per stage, a TOML file plus CLI overrides, written into the run.

Each stage has one frozen dataclass, its config: `PrepareConfig` (`llmrec.data.config`),
`AugmentConfig` (`llmrec.augment.config`), `EmbedConfig` (`llmrec.embed_config`),
`TrainConfig` (`llmrec.recommender.options`) and `CompareConfig`
(`llmrec.recommender.comparison`). Everything about an option is written once, in its field:

- the TOML table is the class's `section` (`[data]`, `[augment]`, `[embed]`, `[train]`,
  `[compare]`) and the key is the field name; the field's default is the default;
- a field declared with `option(default, "--flag", help=...)` also gets a CLI flag on its
  stage's command (`llmrec.commands.flags.config_flags` builds the typer option from it);
- validation is the class's `__post_init__`, raising `ConfigError`;
- `<run>/config.json` is the built object written out (`write_effective_config`).

So adding an option is one field in one class. CLI flags override single keys of the file.
Unknown keys and wrong types are errors, not silently ignored: a typo in a config must not
change an experiment without anyone noticing.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from llmrec.artifacts import CONFIG, write_json
from llmrec.errors import ConfigError

ConfigT = TypeVar("ConfigT")


def option(
    default: Any = dataclasses.MISSING,
    flag: str | None = None,
    *,
    help: str,
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A config field that documents itself and, when `flag` is given, is also a CLI flag.

    `help` may say `{default}`, replaced by the field's default. `cli_type` is
    what the flag takes when that differs from the field's type (e.g. `str`
    for `--limit-users all`); `parse` turns the flag's value into the field's
    value, raising `ValueError` with what was expected.
    """
    metadata = {"flag": flag, "help": help, "cli_type": cli_type, "parse": parse}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_help(field: dataclasses.Field[Any]) -> str:
    """The field's help text with its default filled in."""
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore[misc]
    return str(field.metadata["help"]).replace("{default}", str(default))


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


def from_toml(cls: type[ConfigT], path: Path | str | None, overrides: Mapping[str, Any] | None = None) -> ConfigT:
    """The stage config `cls` from its table (`cls.section`) of the TOML file at `path`, under CLI overrides."""
    section: str = cls.section  # type: ignore[attr-defined]
    return build(cls, section, load_toml(path).get(section), overrides)


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def write_effective_config(run_dir: Path | str, config: Any) -> None:
    """Merge one stage's effective options into `<run>/config.json`, under the stage's table name."""
    from llmrec.artifacts import read_json

    path = Path(run_dir) / CONFIG
    current = read_json(path) if path.exists() else {}
    current[config.section] = as_dict(config)
    write_json(path, current)
