"""Config field domains: the values a component parameter accepts, and its help."""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from harness.util.errors import UsageError

# -- field domains ------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """The values one config field accepts, and its one-line help for listings.

    A component's ``Config`` lists its fields' domains in a class attribute
    ``domains = domain_map(field=Domain(...), ...)``; :func:`build_dataclass` checks
    every value against it. Numbers must be finite unless ``finite=False``;
    a sequence's items are each checked; ``None`` (an optional field left unset)
    always passes. A float field without an entry still has to be finite.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    pattern: str | None = None
    """For strings: a regular expression the whole value must match."""
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the domain (``"must be ..."``), or None."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, list | tuple):
            return next((p for p in map(self.problem, value) if p), None)
        if isinstance(value, str):
            if self.pattern and not re.fullmatch(self.pattern, value):
                return f"{value!r} must match {self.pattern}"
            return None
        if not isinstance(value, int | float):
            return None
        if (self.finite or math.isnan(value)) and not math.isfinite(value):
            return f"{value!r} must be a finite number"
        inside = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if not inside:
            where = self.describe()
            return f"{value!r} must be {where if where[0] in '<>' else 'in ' + where}"
        return None

    def describe(self) -> str:
        """The accepted range in interval notation, e.g. ``(0, 1]`` or ``>= 1``."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            return f"{left}{_num(low)}, {_num(high)}{right}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_num(low)}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {_num(high)}"
        return "finite" if self.finite else "any number"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


FINITE = Domain()


def domain_map(**fields: Domain) -> types.MappingProxyType:
    """A read-only ``{field: Domain}`` mapping for a Config's ``domains`` attribute."""
    return types.MappingProxyType(fields)


def positive(help: str = "") -> Domain:
    return Domain(gt=0, help=help)


def non_negative(help: str = "") -> Domain:
    return Domain(ge=0, help=help)


def at_least(low: float, help: str = "") -> Domain:
    return Domain(ge=low, help=help)


def between(low: float, high: float, help: str = "", open_high: bool = False) -> Domain:
    """``[low, high]``, or ``[low, high)`` with ``open_high``."""
    if open_high:
        return Domain(ge=low, lt=high, help=help)
    return Domain(ge=low, le=high, help=help)


def unit(help: str = "") -> Domain:
    """A probability or fraction in [0, 1]."""
    return Domain(ge=0, le=1, help=help)


def field_domains(cls: type) -> dict[str, Domain]:
    """Every field's domain, ``domains`` of base classes included (subclasses win)."""
    merged: dict[str, Domain] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("domains", {}))
    return merged


def field_help(cls: type, name: str) -> str:
    """The one-line help of a Config field ('' when none)."""
    domain = field_domains(cls).get(name)
    return domain.help if domain else ""


def is_numeric_hint(hint: Any) -> bool:
    """Whether a field's type holds numbers (int, float, optional or sequences of them)."""
    if hint is bool:
        return False
    if hint in (int, float):
        return True
    return any(is_numeric_hint(a) for a in typing.get_args(hint) if a is not Ellipsis)


def finite(value: Any) -> bool:
    """False for NaN or infinity, also inside a sequence."""
    if isinstance(value, list | tuple):
        return all(map(finite, value))
    return not isinstance(value, float) or math.isfinite(value)


def check_domains(cls: type, values: dict[str, Any], where: str) -> None:
    """Raise a UsageError naming the first value outside its field's domain."""
    known = field_domains(cls)
    for key, value in values.items():
        problem = known.get(key, FINITE).problem(value)
        if problem:
            raise UsageError(f"bad value for {where}.{key}: {problem}")
