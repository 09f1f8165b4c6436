"""CLI flags built from a stage config class, so a flag's name, type and help are written once: in the class.

`@config_flags(AugmentConfig)` on a command adds one typer option per field
declared with `option(default, "--flag", help=...)` (see `llmrec.config`) and
calls the command with `overrides`: field name -> value, None for the flags not
given, ready for `llmrec.config.from_toml`. The command's own parameters (the
run directory, `--config`, ...) stay written out in its signature as usual.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from llmrec.config import option_help
from llmrec.errors import ConfigError


def _flag_type(field: dataclasses.Field[Any], hint: Any) -> Any:
    """What the flag takes: the declared `cli_type`, else the field's type without None (a tuple is a repeatable flag)."""
    if field.metadata["cli_type"] is not None:
        return field.metadata["cli_type"]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]  # type: ignore[misc]
    return hint


def _to_config_value(field: dataclasses.Field[Any], value: Any) -> Any:
    """The flag's value as the config takes it; None when the flag was not given."""
    if value is None or value == []:
        return None
    parse = field.metadata["parse"]
    if parse is not None:
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{field.metadata['flag']} {exc}") from None
    return str(value) if isinstance(value, Path) else value  # TOML has no path type: paths are strings


def config_flags(cls: type, only: Sequence[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per flagged field of `cls` (or of the fields in `only`); it receives `overrides`."""
    hints = typing.get_type_hints(cls)
    fields = [
        field for field in dataclasses.fields(cls)
        if field.metadata.get("flag") and (only is None or field.name in only)
    ]  # fmt: skip

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "overrides"]
        clash = {p.name for p in own} & {f.name for f in fields}
        if clash:
            raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are also {cls.__name__} fields")
        flags = [
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY,
                annotation=typing.Optional[_flag_type(field, hints[field.name])],  # noqa: UP007 - a runtime type
                default=typer.Option(None, field.metadata["flag"], help=option_help(field)),
            )
            for field in fields
        ]  # fmt: skip

        @functools.wraps(command)
        def with_flags(**kwargs: Any) -> Any:
            overrides = {field.name: _to_config_value(field, kwargs.pop(field.name)) for field in fields}
            return command(**kwargs, overrides=overrides)

        # typer reads the parameters from the signature and their types from the annotations
        parameters = [*own, *flags]
        with_flags.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_flags

    return decorate
