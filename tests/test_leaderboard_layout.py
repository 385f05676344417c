"""The HTML leaderboard read at a glance in a 1,400 px window (headless Chromium): Table 3's
full width with long configuration differences keeps the key and Overall columns in view
(also with a baseline's paired differences under every cell), the first column stays put
while the data scroll, no legend entry overlaps another or the data, and the chance line
lies inside the plot. Screenshots go to $HARNESS_SHOTS (default: the test's folder)."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, RowSpec
from harness.results.render import render_leaderboard
from harness.results.store import ResultStore
from tests.browser import Browser, chromium_path
from tests.test_leaderboard import RECORDS

DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
GROUPS = {"real": ["a", "b", "c"], "seen": ["s1", "s2", "s3"], "unseen": ["s4", "s5", "s6"]}
WIDTH = 1400


def table3_records() -> list:
    """Three configurations x three seeds over TAU22's nine devices; the configurations
    differ in three long options, so their ``params`` label is long."""
    base = RECORDS[0]
    records = []
    for row, (alpha, temperature, queue) in enumerate(
        [(0.2, 0.07, 65536), (1.5, 0.1, 16384), (0.25, 0.07, 65536)]
    ):
        for seed in range(3):
            values = {d: 1.2 + 0.1 * row + 0.05 * i + 0.01 * seed for i, d in enumerate(DEVICES)}
            values |= {g: sum(values[d] for d in m) / 3 for g, m in GROUPS.items()}
            values["overall"] = sum(values[d] for d in DEVICES) / 9
            method = {"name": "icl", "alpha": alpha, "temperature": temperature,
                      "queue_size": queue}  # fmt: skip
            records.append(dataclasses.replace(
                base, run_id=f"r{row}{seed}", config_hash=f"h{row}", seed=seed, method="icl",
                aug="multidir", config={"run": {"seed": seed}, "method": method,
                                        "aug": {"names": ["multidir"]}},
                metrics={f"device-logloss/logloss/{k}": v for k, v in values.items()},
            ))  # fmt: skip
    return records


def write_page(folder: Path, spec: LeaderboardSpec) -> Path:
    """``spec`` over Table 3's records, as an HTML page in ``folder``."""
    store = ResultStore(folder / "store.sqlite")
    for record in table3_records():
        store.add(record)
    path = folder / "board.html"
    path.write_text(render_leaderboard(spec, store, load_plugins(), "html"))
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return write_page(tmp_path_factory.mktemp("board"), LeaderboardSpec(agg="mean"))


@pytest.fixture(scope="module")
def baseline_page(tmp_path_factory) -> Path:
    """Table 3 with its first row as the baseline: every other cell carries a difference."""
    rows = tuple(
        RowSpec(f"alpha {alpha}", {"method": "icl", "method.alpha": alpha,
                                   "method.temperature": temperature})
        for alpha, temperature in [(0.2, 0.07), (1.5, 0.1), (0.25, 0.07)]
    )  # fmt: skip
    spec = LeaderboardSpec(agg="mean", rows=rows, baseline="alpha 0.2")
    return write_page(tmp_path_factory.mktemp("baseline"), spec)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Browser(executable)
    browser.send("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=900,
                 deviceScaleFactor=1, mobile=False)  # fmt: skip
    yield browser
    browser.close()


def shots_folder(default: Path) -> Path:
    folder = Path(os.environ.get("HARNESS_SHOTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


HEADS = "Array.from(document.querySelectorAll('table')[0].tHead.rows[0].cells)"


def test_the_key_and_overall_columns_fit_a_1400_px_window(browser, page):
    browser.open(page)
    assert browser.errors() == []
    assert browser.evaluate("window.innerWidth") == WIDTH
    boxes = browser.evaluate(
        f"{HEADS}.map(c => [c.textContent, c.getBoundingClientRect().left, "
        "c.getBoundingClientRect().right])"
    )
    overall = next(b for b in boxes if b[0].startswith("Overall"))
    assert boxes[0][1] >= 0 and overall[2] <= WIDTH  # no scrolling needed to read Overall
    # the page itself never scrolls sideways: only a table's data may
    assert browser.evaluate("document.documentElement.scrollWidth") <= WIDTH
    # the configuration differences are chips with the full option as tooltip
    chips = browser.evaluate(
        "Array.from(document.querySelectorAll('.chip'), c => [c.textContent, c.title])"
    )
    assert ["alpha=0.2", "method.alpha=0.2"] in chips
    assert "queue_size=16384" in [text for text, _ in chips]
    assert "Options away from their defaults" in browser.evaluate("document.body.innerText")
    browser.screenshot(shots_folder(page.parent) / "leaderboard-1400.png")


def test_the_first_column_stays_while_the_data_scroll(browser, page, tmp_path):
    narrow = tmp_path / "narrow.html"  # the same page squeezed so its data must scroll
    narrow.write_text(page.read_text().replace("max-width:1360px", "max-width:600px"))
    browser.open(narrow)
    before = browser.evaluate(f"{HEADS}[0].getBoundingClientRect().left")
    scrolled = browser.evaluate(
        "(() => {const w = document.querySelector('.w'); w.scrollLeft = w.scrollWidth;"
        " return w.scrollLeft})()"
    )
    assert scrolled > 0
    assert browser.evaluate(f"{HEADS}[0].getBoundingClientRect().left") == pytest.approx(before)
    assert browser.evaluate(f"{HEADS}[1].getBoundingClientRect().left") < before


def test_no_legend_entry_overlaps_another_or_the_data(browser, page):
    browser.open(page)
    found = browser.evaluate(
        """(() => {
          const box = e => { const r = e.getBoundingClientRect();
                             return [r.left, r.top, r.right, r.bottom]; };
          return Array.from(document.querySelectorAll('figure svg'), svg => ({
            legend: Array.from(svg.querySelectorAll('g.legend:not(.chance)'), box),
            chance: Array.from(svg.querySelectorAll('g.legend.chance'), box),
            data: Array.from(svg.querySelectorAll(':scope > circle, :scope > line.e'), box),
            names: Array.from(svg.querySelectorAll('g.legend title'), t => t.textContent),
          }));
        })()"""
    )
    assert found
    overlap = lambda a, b: a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]  # noqa: E731
    for figure in found:
        legend, data = figure["legend"], figure["data"]
        assert len(legend) == 3 and data
        assert len(set(figure["names"])) == 3  # distinct, untruncated names
        assert not any(overlap(a, b) for i, a in enumerate(legend) for b in legend[i + 1 :])
        assert not any(overlap(a, d) for a in legend for d in data)
        assert not any(overlap(c, d) for c in figure["chance"] for d in data + legend)


def test_every_tables_overall_column_fits_with_a_baselines_differences(browser, baseline_page):
    browser.open(baseline_page)
    assert browser.errors() == []
    rights = browser.evaluate(
        "Array.from(document.querySelectorAll('table'), t => Array.from(t.tHead.rows[0].cells)"
        ".filter(c => c.textContent.startsWith('Overall'))"
        ".map(c => c.getBoundingClientRect().right))"
    )
    assert rights and all(len(r) == 1 and r[0] <= WIDTH for r in rights)
    assert "Δ +" in browser.evaluate("document.body.innerText")  # the differences are shown
    browser.screenshot(shots_folder(baseline_page.parent) / "leaderboard-baseline-1400.png")


def test_the_chance_line_lies_inside_the_plot_area(browser, page):
    browser.open(page)
    found = browser.evaluate(
        """Array.from(document.querySelectorAll('figure svg'), svg => {
          const line = svg.querySelector(':scope > line.c').getBoundingClientRect();
          const grid = Array.from(svg.querySelectorAll(':scope > line.g'),
                                  g => g.getBoundingClientRect().top);
          return [line.top, Math.min(...grid), Math.max(...grid),
                  svg.querySelector('g.legend.chance').textContent];
        })"""
    )
    assert found
    for top, highest, lowest, label in found:
        assert highest <= top <= lowest  # between the top and bottom grid lines
        assert label == f"chance (10 classes): {math.log(10):.3g}"  # log-loss: ln 10
