"""Progress bars: on by default, silenced by HARNESS_PROGRESS, and the kill suite's hook."""

from __future__ import annotations

import sys

import pytest

from harness.util import progress as progress_module
from harness.util.faults import KILL_ENV
from harness.util.progress import enabled, note, progress


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, True), ("1", True), ("yes", True), ("0", False), ("false", False), ("no", False)],
)
def test_harness_progress_switches_the_bars(monkeypatch, value, shown):
    if value is None:
        monkeypatch.delenv("HARNESS_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("HARNESS_PROGRESS", value)
    assert enabled() is shown


def test_a_bar_shows_its_name_count_and_options_on_stderr_then_clears(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS", "1")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars only on a terminal
    assert list(progress(iter(range(3)), desc="epoch 1/3", total=3, unit="clip")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "epoch 1/3" in err and "0/3" in err and "clip" in err
    assert err.endswith("\r")  # leave=False: the finished bar is wiped, not left standing


def test_a_silenced_bar_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    assert list(progress(range(4), desc="eval")) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""


def test_the_kill_hook_runs_after_each_item_with_the_bars_name(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(progress_module, "checkpoint", calls.append)
    monkeypatch.setenv(KILL_ENV, "nothing-matches")
    items = progress(range(2), desc="embedding eval", total=2)
    assert next(items) == 0 and calls == []  # the hook fires once the item was handled
    assert list(items) == [1] and calls == ["embedding eval", "embedding eval"]
    monkeypatch.delenv(KILL_ENV)
    calls.clear()
    assert list(progress(range(2), desc="x")) == [0, 1] and calls == []


def test_note_writes_one_line_to_stderr(capsys):
    note("stage 1/2 'head'")
    captured = capsys.readouterr()
    assert captured.err == "stage 1/2 'head'\n" and captured.out == ""
