"""Components' Config dataclasses as plain values: JSON/TOML-ready defaults and the
``(name, type, default)`` rows of listings."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

from harness.api.domains import field_domains, is_numeric_hint

__all__ = ["describe_fields", "describe_params", "to_plain", "type_label"]


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


def describe_fields(config_cls: type) -> list[list[str]]:
    """``[name, type, default, help, domain]`` for each field of a Config dataclass (a
    component's ``Config`` or :class:`~harness.api.settings.RunSettings`), as listings show
    them. The help is the field's ``help`` metadata, else its domain's, else its docstring."""
    hints = typing.get_type_hints(config_cls)
    domains = field_domains(config_cls)
    docs = attribute_docstrings(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        domain = domains.get(f.name)
        help_text = f.metadata.get("help") or (domain.help if domain else "") or docs.get(f.name)
        rows.append(
            [
                f.name,
                type_label(hints[f.name]),
                repr(to_plain(default)),
                str(help_text or ""),
                domain_label(hints[f.name], domain),
            ]
        )
    return rows


def domain_label(hint: Any, domain: Any) -> str:
    """The accepted values of a field beyond its type: ``>= 1``, ``(0, 1]``, ``finite``..."""
    if typing.get_origin(hint) is Literal:
        return ""  # the type label lists the choices
    if domain is not None and domain.pattern:
        return f"matches {domain.pattern}"
    if domain is not None or is_numeric_hint(hint):
        return domain.describe() if domain is not None else "finite"
    return ""


@cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """The first line of each field's docstring (the string after its annotation)."""
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def type_label(hint: Any) -> str:
    """``int``, ``list[str]``, ``one of tiny|small|base`` ... for listings."""
    if typing.get_origin(hint) is Literal:
        return "one of " + "|".join(map(str, typing.get_args(hint)))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")
