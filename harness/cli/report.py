"""What the command line reports about stored runs: a run's main metric, and a sweep's
progress (one result line per cell, the ETA across cells, a summary at the end)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.registry.plugins import Plugins, component_info
from harness.results.store import RunRecord
from harness.util.progress import format_duration


def main_metric(record: RunRecord, plugins: Plugins) -> str:
    """``<protocol>/<metric> <value>`` of the column that ranks the run's first protocol."""
    protocol = next((p for p in record.protocols.split(",") if p), "")
    if protocol not in plugins["protocol"]:
        return f"{protocol or 'no protocol'}: -"
    primary = component_info(plugins["protocol"].get(protocol)).get("primary") or []
    value = record.metrics.get(f"{protocol}/{primary[0]}") if primary else None
    if value is None:
        return f"{protocol}: -"
    unit, scale = (primary[2], primary[3]) if len(primary) >= 4 else ("", 1.0)
    return f"{protocol}/{primary[0]} {value * scale:.4g}" + (f" {unit}" if unit else "")


@dataclass
class CellResult:
    """How one cell of a sweep ended."""

    label: str
    state: str
    """``stored``, ``skipped`` (already stored) or ``failed``."""
    detail: str = ""
    """The main metric of a stored cell, the reason of a failed one."""
    seconds: float = 0.0


@dataclass
class SweepProgress:
    """Counts a sweep's cells as they end and words its report lines."""

    total: int
    plugins: Plugins | None
    """The loaded plugins, for each run's main metric (None: no metric)."""
    clock: Callable[[], float] = time.monotonic
    results: list[CellResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start = self.clock()

    @property
    def ended(self) -> int:
        return len(self.results)

    def skipped(self, label: str) -> str:
        self.results.append(CellResult(label, "skipped"))
        return f"{self.prefix()} {label}: already stored, skipped"

    def stored(self, label: str, record: RunRecord, seconds: float) -> str:
        metric = main_metric(record, self.plugins) if self.plugins else ""
        self.results.append(CellResult(label, "stored", metric, seconds))
        return (
            f"{self.prefix()} {label}: stored {record.run_id}  {metric}  "
            f"{format_duration(seconds)}; {self.eta()}"
        )

    def failed(self, label: str, why: str, seconds: float) -> str:
        self.results.append(CellResult(label, "failed", why, seconds))
        return (
            f"{self.prefix()} {label}: failed after {format_duration(seconds)}: {why}; {self.eta()}"
        )

    def prefix(self) -> str:
        return f"[{self.ended}/{self.total}]"

    def eta(self) -> str:
        """Time left: the wall time per cell that ran so far times the cells left."""
        ran = sum(1 for r in self.results if r.state != "skipped")
        left = self.total - self.ended
        if not left:
            return "all cells done"
        if not ran:
            return f"{left} cell(s) left"
        per_cell = (self.clock() - self.start) / ran
        return f"{left} cell(s) left, ETA {format_duration(per_cell * left)}"

    def summary(self, sweep_file: str) -> list[str]:
        """One line per cell that ran (state, metric or reason, time), then the counts."""
        lines = [f"sweep {sweep_file} summary:"]
        width = max((len(r.label) for r in self.results), default=0)
        for result in self.results:
            if result.state == "skipped":
                continue
            took = format_duration(result.seconds)
            lines.append(
                f"  {result.label:<{width}}  {result.state:<7}  {took:>12}  {result.detail}"
            )
        counts = {
            s: sum(1 for r in self.results if r.state == s) for s in ("stored", "skipped", "failed")
        }
        lines.append(
            f"  {counts['stored']} stored, {counts['skipped']} already stored, "
            f"{counts['failed']} failed in {format_duration(self.clock() - self.start)}"
        )
        return lines
