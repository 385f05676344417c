"""Components' Config dataclasses as plain values: JSON/TOML-ready defaults and the
``(name, type, default)`` rows of listings."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

__all__ = ["describe_params", "to_plain", "type_label"]


def to_plain(value: Any) -> Any:
    """Tuples to lists and paths to strings, so configs round-trip through JSON and TOML."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def describe_params(cls: type) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` for each field of a component's Config."""
    hints = typing.get_type_hints(cls.Config)
    rows = []
    for f in dataclasses.fields(cls.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        type_name = type_label(hints[f.name])
        rows.append((f.name, type_name, to_plain(default)))
    return rows


def type_label(hint: Any) -> str:
    """``int``, ``list[str]``, ``one of tiny|small|base`` ... for listings."""
    if typing.get_origin(hint) is Literal:
        return "one of " + "|".join(map(str, typing.get_args(hint)))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")
