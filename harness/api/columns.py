"""What a protocol puts in leaderboards: its columns (no torch, so leaderboards need none)."""

from __future__ import annotations

from dataclasses import dataclass


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
    shows single runs (``best``, ``runs``); ``mean`` shows the std over seeds instead."""
