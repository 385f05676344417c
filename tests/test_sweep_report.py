"""Sweep reporting (issue 24, item 3): a result line per cell with the main metric and the
time, the ETA across cells, plain progress lines (no carriage returns) off a terminal, and
a summary at the end."""

from __future__ import annotations

import io

from harness.cli.report import SweepProgress, main_metric
from harness.registry.plugins import load_plugins
from harness.results.store import RunRecord
from harness.util import progress as progress_module
from harness.util.progress import format_duration, plain_line, plain_progress
from tests.conftest import TOY_PLUGIN, run_cli
from tests.test_sweep import write_sweep


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(run_id: str, overall: float) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        created="2026-01-01T00:00:00",
        config_hash="h",
        backbone="passt",
        method="icl",
        aug="none",
        dataset="tau22-embedded",
        protocols="device-logloss",
        seed=0,
        config={},
        metrics={"device-logloss/logloss/overall": overall},
        run_dir="/x",
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


def test_format_duration_and_plain_line_by_hand():
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(2 * 3600 + 7 * 60 + 10) == "2 h 07 min"
    # 20 of 50 steps in 12 s: 0.6 s per step, 30 steps left -> 18 s
    assert plain_line("epoch 1/10", 20, 50, 12.0) == "epoch 1/10: 20/50 (40 %), 12 s, ETA 18 s"
    assert plain_line("loading", 7, None, 3.0) == "loading: 7, 3 s"


def test_plain_progress_writes_lines_without_carriage_returns(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", stream)
    assert list(plain_progress(range(3), "epoch 1/2", 3, every_s=0.0)) == [0, 1, 2]
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "epoch 1/2: 1/3 (33 %)",
        "epoch 1/2: 2/3 (67 %)",
        "epoch 1/2: 3/3 (100 %)",
    ]
    assert "\r" not in stream.getvalue()


def test_progress_bar_is_plain_off_a_terminal(monkeypatch):
    stream = io.StringIO()  # not a terminal
    monkeypatch.setattr(progress_module.sys, "stderr", stream)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setenv("HARNESS_PROGRESS", "1")
    assert list(progress_module.progress(range(2), "predicting", total=2)) == [0, 1]
    assert stream.getvalue().splitlines()[-1].startswith("predicting: 2/2 (100 %)")
    assert "\r" not in stream.getvalue()


def test_cell_lines_eta_and_summary_by_hand():
    clock = FakeClock()
    plugins = load_plugins(lazy=True)
    report = SweepProgress(4, plugins, clock=clock)
    assert report.skipped("method=ce, seed=0") == "[1/4] method=ce, seed=0: already stored, skipped"
    clock.now += 100.0  # the first cell that runs takes 100 s: 2 cells left -> 200 s
    line = report.stored("method=icl, seed=0", record("r1", 1.76424), 100.0)
    assert line == (
        "[2/4] method=icl, seed=0: stored r1  device-logloss/logloss/overall 1.764  1 min 40 s; "
        "2 cell(s) left, ETA 3 min 20 s"
    )
    clock.now += 50.0  # two cells ran in 150 s: 75 s per cell, 1 left
    line = report.failed("method=icl, seed=1", "data root missing", 50.0)
    assert line == (
        "[3/4] method=icl, seed=1: failed after 50 s: data root missing; "
        "1 cell(s) left, ETA 1 min 15 s"
    )
    clock.now += 60.0
    assert report.stored("method=icl, seed=2", record("r2", 2.0), 60.0).endswith("all cells done")
    summary = report.summary("s.toml")
    assert summary[0] == "sweep s.toml summary:"
    assert len(summary) == 1 + 3 + 1  # the three cells that ran, then the counts
    assert summary[1].split() == [
        "method=icl,", "seed=0", "stored", "1", "min", "40", "s",
        "device-logloss/logloss/overall", "1.764",
    ]  # fmt: skip
    assert summary[-1] == "  2 stored, 1 already stored, 1 failed in 3 min 30 s"


def test_main_metric_names_the_protocols_ranking_column():
    plugins = load_plugins(lazy=True)
    assert main_metric(record("r", 2.30258), plugins) == "device-logloss/logloss/overall 2.303"


def test_inline_sweep_reports_each_cell_and_a_summary_in_plain_lines(tmp_path):
    data = tmp_path / "tones"
    data.mkdir()
    sweep_file = write_sweep(tmp_path / "s.toml", '["ce"]', f'["{data}"]')
    result = run_cli(
        "--plugin", str(TOY_PLUGIN), "sweep", str(sweep_file), "--out", str(tmp_path / "runs")
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # stderr is a pipe: no progress bars
    cells = [line for line in result.stderr.splitlines() if ": stored " in line]
    assert len(cells) == 2
    assert (
        cells[0].startswith("[1/2] method=ce, dataset.root=") and "1 cell(s) left, ETA" in cells[0]
    )
    assert cells[1].endswith("all cells done")
    assert f"sweep {sweep_file} summary:" in result.stdout
    assert "2 stored, 0 already stored, 0 failed" in result.stdout
