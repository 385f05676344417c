"""The notebook API: its documented example runs, and its objects agree with the store."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness.notebook as hn
from harness.util.errors import UsageError
from tests.test_leaderboard import RECORDS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "notebook_api.py"


@pytest.mark.slow
def test_documented_example_runs_and_stores_two_runs(tmp_path):
    out = tmp_path / "nb"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HARNESS_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frame = hn.runs_frame(out / "results.sqlite")
    assert list(frame["method"]) == ["ce", "icl"]
    overall = frame["device-logloss/logloss/overall"]
    assert all(math.isfinite(v) and v > 0 for v in overall)
    [mean] = hn.leaderboard(None, out / "results.sqlite", fmt="tables", agg="mean")
    assert list(mean.values["logloss/overall"]) == pytest.approx(list(overall))
    env = hn.ResultStore(out / "results.sqlite").records()[0].environment
    assert env["packages"]["torch"] and env["data_generator_version"] == 1


def test_runs_frame_has_one_column_per_metric(tmp_path):
    store = hn.ResultStore(tmp_path / "s.sqlite")
    for record in RECORDS:
        store.add(record)
    frame = hn.runs_frame(store.path)
    assert len(frame) == len(RECORDS)
    assert frame.loc[0, "device-logloss/logloss/s4"] == pytest.approx(1.6)
    assert {"run_id", "method", "aug", "seed"} <= set(frame.columns)
    assert sum(c.startswith("device-logloss/") for c in frame.columns) == 5
    assert list(hn.runs_frame(store.path, method="icl")["seed"]) == [0, 1, 0]
    assert hn.runs_frame(tmp_path / "missing.sqlite").empty


def test_leaderboard_text_matches_the_cli_renderer(tmp_path):
    store = hn.ResultStore(tmp_path / "s.sqlite")
    for record in RECORDS:
        store.add(record)
    text = hn.leaderboard(None, store.path, agg="best")
    assert text.startswith("## Best of seeds") and "**0.800**" in text
    assert '"tables"' in hn.leaderboard(None, store.path, fmt="json")


def test_configure_resolves_like_the_cli_and_rejects_unknown_options():
    cfg = hn.configure(method="icl", epochs=2, sets=["method.alpha=0.4"])
    assert cfg.method.name == "icl" and cfg.method.config.alpha == 0.4 and cfg.run.epochs == 2
    with pytest.raises(UsageError, match="unknown run option 'epoch'"):
        hn.configure(epoch=2)
