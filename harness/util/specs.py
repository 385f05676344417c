"""Reading a TOML spec file field by field, each field's type checked.

A field of the wrong type (``rows = 5``, ``seeds = 5``, ``grid = "x"``) is a one-line
:class:`~harness.util.errors.UsageError` naming the file, the field and the type it must
have, never a traceback or a silently wrong result. Used by leaderboard specs and by the
``[sweep]`` and ``[executor]`` tables of sweep specs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.util.errors import UsageError

SPEC_TYPE_NAMES: dict[Any, str] = {
    str: "a string",
    dict: "a table",
    list: "an array",
    int: "an integer",
    bool: "true or false",
}


def type_name(kind: Any) -> str:
    """``kind`` in words (``a string``), for messages."""
    return SPEC_TYPE_NAMES.get(kind, "a string")


def has_type(value: Any, kind: Any) -> bool:
    """Whether ``value`` is a ``kind``; TOML's ``true`` is not a number or a string here."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind)


class SpecFile:
    """A spec's TOML mapping (or one of its tables), read field by field with its type
    checked. ``label`` starts every message (``leaderboard spec``); ``prefix`` is put before
    every key (``sweep.``)."""

    def __init__(
        self, data: dict[str, Any], path: Path | str, label: str = "spec", prefix: str = ""
    ) -> None:
        self.data, self.path, self.label, self.prefix = data, path, label, prefix

    def fail(self, key: str, wanted: str, value: Any) -> UsageError:
        return UsageError(
            f"{self.label} {self.path}: {self.prefix}{key} must be {wanted}, got {value!r}"
        )

    def typed(self, key: str, value: Any, kind: Any) -> Any:
        """``value`` of field ``key`` when it is a ``kind`` (a UsageError otherwise)."""
        if not has_type(value, kind):
            raise self.fail(key, type_name(kind), value)
        return value

    def get(self, key: str, kind: type, default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.typed(key, self.data[key], kind)
        return dict(value) if kind is dict else value

    def items(self, key: str, kind: type, default: list[Any] | None = None) -> list[Any]:
        """An array field whose every item is a ``kind``."""
        if key not in self.data:
            return list(default or [])
        values = self.data[key]
        if not has_type(values, list):
            raise self.fail(key, type_name(list), values)
        for i, value in enumerate(values):
            if not has_type(value, kind):
                raise self.fail(f"{key}[{i}]", type_name(kind), value)
        return list(values)

    def strings(self, key: str) -> tuple[str, ...]:
        return tuple(self.items(key, str))

    def tables(self, key: str) -> list[dict[str, Any]]:
        return self.items(key, dict)
