"""What the logger plugins share: an event's numeric values under tracker-style names."""

from __future__ import annotations

from typing import Any

POSITION_KEYS = {"event", "stage", "stage_name", "epoch", "step", "global_step"}
"""Keys that say where an event happened, not what was measured."""


def event_values(event: dict[str, Any]) -> dict[str, float]:
    """An event's numeric values as ``<event>/<key>`` (``<protocol>/<event>/<key>`` for a
    protocol's training, ``stage`` 0)."""
    kind = event["event"]
    if event.get("stage") == 0:
        kind = f"{event['stage_name']}/{kind}"
    return {
        f"{kind}/{key}": float(value)
        for key, value in event.items()
        if key not in POSITION_KEYS and isinstance(value, int | float)
    }
