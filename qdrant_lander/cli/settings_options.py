"""Click options generated from :class:`~qdrant_lander.config.Settings`, so every command that takes a
setting spells it the same way and honours the same precedence (flag > ``QLANDER_*`` > TOML file).

Options default to ``None`` on purpose: a click default would always win over the environment.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import SecretStr

from ..config import CONFIG_ENV, ENV_PREFIX, Settings, load_settings

if TYPE_CHECKING:
    from ..lander import Lander


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice(typing.get_args(annotation))
    if annotation is Path:
        return click.Path(path_type=Path)
    if annotation is SecretStr:
        return str
    return annotation


def _option(name: str) -> Callable:
    field = Settings.model_fields[name]
    default = "" if field.default is None else f" [default: {field.default}]"
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        type=_click_type(field.annotation),
        default=None,
        help=f"{field.description}{default} (env {ENV_PREFIX}{name.upper()})",
    )


def settings_options(*names: str) -> Callable:
    """Add ``--config`` and one option per named field; the command gets ``settings: Settings``."""
    unknown = set(names) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"not Settings fields: {sorted(unknown)}")

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, config: Path | None, **kwargs: Any) -> Any:
            flags = {n: kwargs.pop(n) for n in names}
            return command(*args, settings=load_settings(flags, config), **kwargs)

        for name in reversed(names):
            wrapper = _option(name)(wrapper)
        return click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help=f"TOML settings file (default: ${CONFIG_ENV}).",
        )(wrapper)

    return decorate


def lander_from_settings(settings: Settings) -> Lander:
    """The model the settings name (``--model``, ``--domain``, device, threads), for every command that runs one."""
    from ..lander import Lander

    return Lander(settings.model, domain=settings.domain, device=settings.device, threads=settings.threads)
