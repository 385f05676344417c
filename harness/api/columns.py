"""What a protocol puts in leaderboards: its columns (no torch, so leaderboards need none).

A column also says the unit its values are shown in, and how a stored value becomes a shown
one: every place a person reads a number (the table ``harness run`` prints, ``harness runs``,
leaderboards in every format, figures, the notebook API's frames) goes through
:meth:`Column.shown` and :meth:`Column.heading`, so one metric has one unit everywhere.
Accuracy-like metrics are shown in percent; log-loss, d-prime, counts in their natural unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

PERCENT = "%"
ChanceRule = Literal["", "accuracy", "logloss"]


@dataclass(frozen=True)
class Column:
    """One leaderboard column a protocol fills."""

    key: str
    """Metric key in the run's metrics."""
    label: str
    group: str = ""
    higher_is_better: bool = False
    error_key: str = ""
    """Metric key of this value's own uncertainty (e.g. a 95% CI), shown as ± where a table
    shows single runs (``best``, ``runs``); ``mean`` shows the std over seeds instead. It is
    stored in the same unit as the value and shown with the value's :attr:`scale`."""
    unit: str = ""
    """The unit values are shown in (``%``, ``M``; empty: none, e.g. log-loss in nats)."""
    scale: float = 1.0
    """Shown value = stored value x ``scale``: 100 for an accuracy stored as a fraction and
    shown in percent, 1 for one stored in percent already."""
    chance: ChanceRule = ""
    """What a uniform guess over the data set's C classes scores in this column:
    ``accuracy`` 1/C, ``logloss`` ln C; empty: no such level (e.g. N-way episodes)."""

    def chance_level(self, classes: int) -> float | None:
        """The shown chance level over ``classes`` classes (None: the column has none)."""
        if classes < 1 or not self.chance:
            return None
        if self.chance == "logloss":
            return math.log(classes)
        return (100.0 if self.unit == PERCENT else 1.0) / classes

    def shown(self, value: float) -> float:
        """A stored value in the unit it is shown in."""
        return value * self.scale

    def text(self, value: float) -> str:
        """A stored value as shown: in the column's unit, with :attr:`decimals` decimals."""
        return f"{self.shown(value):.{self.decimals}f}"

    @property
    def decimals(self) -> int:
        """Decimals a shown value has: 2 for a percentage (three significant digits, as for
        the 3 of a log-loss), 3 otherwise."""
        return 2 if self.unit == PERCENT else 3

    @property
    def unit_suffix(self) -> str:
        """`` (%)`` after a heading; empty without a unit."""
        return f" ({self.unit})" if self.unit else ""

    @property
    def heading(self) -> str:
        """Group, label and unit, e.g. ``Unseen Avg. acc. (%)``."""
        return f"{self.group} {self.label}".strip() + self.unit_suffix


def percent_of_fraction(
    key: str,
    label: str,
    group: str = "",
    higher_is_better: bool = True,
    chance: ChanceRule = "accuracy",
) -> Column:
    """A column of a fraction stored in [0, 1] and shown in percent (accuracy, recall);
    ``chance``: its level over the data set's classes (empty for other class sets)."""
    return Column(key, label, group, higher_is_better, unit=PERCENT, scale=100.0, chance=chance)


PERCENT_LOG_KEYS = frozenset({"valid_acc", "valid_map"})
"""Values of training logs that are percentages (validation accuracy and mAP)."""
COUNT_LOG_KEYS = frozenset({"queue_filled"})
"""Values of training logs that are counts (shown without decimals)."""


def log_value_text(key: str, value: float) -> str:
    """A training-log value as a person reads it: a percentage with ``%`` and two decimals,
    a count (:data:`COUNT_LOG_KEYS`) without decimals, else 4 decimals."""
    if key in PERCENT_LOG_KEYS:
        return f"{value:.2f} %"
    if key in COUNT_LOG_KEYS and float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.4f}"
