"""Settings shared by the hostile-input suites: ``HARNESS_FUZZ_SCALE`` multiplies every
suite's example count (derandomized in CI through the hypothesis profile)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("HARNESS_FUZZ_SCALE", "1"))


def cases(count: int) -> settings:
    """``count`` examples (times the scale, at least one), no deadline, fixtures allowed."""
    return settings(
        max_examples=max(1, round(count * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
