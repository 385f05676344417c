"""harness plot devices: bars per device (no averages among them), seeds and std stated."""

import dataclasses

import pytest

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables
from tests.test_leaderboard import record

DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]


def with_all_devices(run, offset):
    metrics = {}
    for metric in ("logloss", "acc"):
        values = {d: offset + i / 10 for i, d in enumerate(DEVICES)}
        for group, members in (
            ("real", DEVICES[:3]),
            ("seen", DEVICES[3:6]),
            ("unseen", DEVICES[6:]),
        ):
            values[group] = sum(values[d] for d in members) / 3
        values["overall"] = sum(values[d] for d in DEVICES) / 9
        metrics |= {f"device-logloss/{metric}/{k}": v for k, v in values.items()}
    return dataclasses.replace(run, metrics=metrics)


@pytest.mark.parametrize("metric", ["acc", "logloss"])
def test_device_bars_have_one_tick_per_device_and_state_the_spread(metric):
    from harness.results.plots import draw_devices

    runs = [
        with_all_devices(record("r1", "ce", "none", 0, 1, 1), 0.1),
        with_all_devices(record("r2", "ce", "none", 1, 1, 1), 0.3),
        with_all_devices(record("r3", "icl", "none", 0, 1, 1), 0.2),
    ]
    spec = LeaderboardSpec(metric=metric, agg="mean")
    [table] = build_tables(spec, runs, load_plugins())
    figure = draw_devices(table, metric)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == [d.upper() for d in DEVICES]
    assert len(axes.patches) == 2 * len(DEVICES)  # bars, not lines
    assert "std over seeds" in axes.get_title()
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == ["ce none (2 seeds)", "icl none (1 seed)"]
    heights = sorted(round(p.get_height(), 6) for p in axes.patches)[:2]
    shown = 0.2 * (100 if metric == "acc" else 1)  # accuracy is drawn in percent
    assert heights == [shown, shown]  # mean of 0.1 and 0.3 for device A; icl's A is 0.2
