"""Every plot kind read at a glance: titles whole inside the figure, legends covering no
data, the chance line where one exists, the step curve drawn over the epoch dots. The PNGs
go to $HARNESS_SHOTS (default: the test's folder) to be looked at."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from harness.nn.impulse.responses import quantile_bands
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables
from harness.results.plots import (
    FewshotCurve,
    draw_bands,
    draw_curves,
    draw_devices,
    draw_fewshot,
    draw_tsne,
    save_figure,
)
from tests.test_leaderboard import record
from tests.test_plot_devices import with_all_devices


def shot(figure: Figure, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("HARNESS_SHOTS", tmp_path))
    save_figure(figure, folder / name)


def inside(figure: Figure, artist) -> bool:
    renderer = figure.canvas.get_renderer()
    box, page = artist.get_window_extent(renderer), figure.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.fixture(scope="module")
def device_table():
    runs = [
        with_all_devices(record("r1", "icl", "multidir", 0, 1, 1), 1.3),
        with_all_devices(record("r2", "icl", "multidir", 1, 1, 1), 1.35),
        with_all_devices(record("r3", "ce", "none", 0, 1, 1), 1.5),
        with_all_devices(record("r4", "ce", "none", 1, 1, 1), 1.55),
    ]
    [table] = build_tables(LeaderboardSpec(metric="logloss", agg="mean"), runs, load_plugins())
    return table


def test_devices_legend_covers_no_bar_and_the_chance_line_is_ln_classes(device_table, tmp_path):
    figure = draw_devices(device_table, "logloss", classes=10)
    axes = figure.axes[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend = axes.get_legend().get_window_extent(renderer)
    assert not any(overlaps(legend, bar.get_window_extent(renderer)) for bar in axes.patches)
    assert not overlaps(legend, axes.get_window_extent(renderer))  # beside the axes
    assert inside(figure, axes.get_legend()) and inside(figure, axes.title)
    (chance,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert chance.get_ydata()[0] == pytest.approx(math.log(10))
    low, high = axes.get_ylim()
    assert low > 1.0 and high >= math.log(10)  # the axis starts near the data, not at 0
    assert axes.get_ylabel() == "log-loss (nats, lower is better)"
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert len(set(labels)) == len(labels) == 3  # distinct, whole
    assert "chance (10 classes): 2.3" in labels
    shot(figure, "devices.png", tmp_path)


def test_device_accuracy_chance_is_one_over_classes():
    runs = [with_all_devices(record("r1", "ce", "none", 0, 1, 1), 0.05)]  # 0.05 ... 0.85
    [table] = build_tables(LeaderboardSpec(metric="acc", agg="mean"), runs, load_plugins())
    figure = draw_devices(table, "acc", classes=4)
    (chance,) = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert chance.get_ydata()[0] == pytest.approx(25.0)  # accuracy is shown in percent


def test_a_long_dirs_title_wraps_inside_the_figure(tmp_path):
    rng = np.random.default_rng(0)
    freqs = np.geomspace(50, 16000, 64)
    bands = quantile_bands(rng.normal(0, 4, size=(40, 64)))
    title = ("dirgen: 40 responses, 8 microphones (synthetic embedded bank, not measured), "
             "device classes a, b, c, s1-s6")  # fmt: skip
    figure = draw_bands(freqs, bands, title)
    figure.canvas.draw()
    axes = figure.axes[0]
    assert inside(figure, axes.title) and "\n" in axes.title.get_text()
    renderer = figure.canvas.get_renderer()
    legend = axes.get_legend().get_window_extent(renderer)
    assert not overlaps(legend, axes.get_window_extent(renderer))
    assert inside(figure, axes.get_legend())
    assert axes.title.get_text().replace("\n", " ") == title
    shot(figure, "dirs-synthetic.png", tmp_path)


def test_curves_draw_the_step_line_over_the_epoch_dots_under_a_full_title(tmp_path):
    events = [
        {"event": "step", "global_step": s, "step": s, "loss": 2.3 - 0.01 * s, "lr": 1e-3}
        for s in range(10, 210, 10)
    ] + [
        {"event": "epoch", "global_step": s, "step": s, "loss": 2.3 - 0.01 * s + 0.05, "lr": 1e-3}
        for s in (50, 100, 150, 200)
    ]
    title = (
        "Training curves: icl (multidir) on passt, tau22-embedded, seed 0; line: mean of "
        "every 10 optimizer steps, dots: epoch means; run 20261207-030236-263197-a54fb07c"
    )
    figure = draw_curves(events, ["loss", "lr"], title)
    figure.canvas.draw()
    axes = figure.axes[0]
    step, epoch = axes.get_lines()[:2]
    assert step.get_zorder() > epoch.get_zorder() and epoch.get_markerfacecolor() == "none"
    assert figure._suptitle.get_text().replace("\n", " ") == title
    assert inside(figure, figure._suptitle)
    shot(figure, "curves.png", tmp_path)


def test_fewshot_and_tsne_titles_and_legends_stay_inside(tmp_path):
    curves = [
        FewshotCurve("nnclr tcutmix", [5, 10, 15], [62.0, 48.0, 40.0], [1.2, 1.0, 0.9], "a"),
        FewshotCurve("nnclr mixup", [5, 10, 15], [60.0, 47.0, 38.5], [1.1, 1.0, 0.8], "b"),
    ]
    figure = draw_fewshot(curves, "n", 1)
    figure.canvas.draw()
    (chance,) = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert list(chance.get_ydata()) == pytest.approx([20.0, 10.0, 100 / 15])  # 1/N
    assert inside(figure, figure.axes[0].title) and inside(figure, figure.axes[0].get_legend())
    shot(figure, "fewshot-vs-n.png", tmp_path)
    rng = np.random.default_rng(1)
    points = [("before: passt (AudioSet)", rng.normal(size=(30, 2))),
              ("after: icl on passt", rng.normal(size=(30, 2)))]  # fmt: skip
    figure = draw_tsne(points, np.arange(30) % 3, ["airport", "bus", "metro"])
    figure.canvas.draw()
    assert all(inside(figure, axes.title) for axes in figure.axes)
    shot(figure, "tsne.png", tmp_path)
