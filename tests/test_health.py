"""Representation health: the numbers by hand, a run built to collapse (warned about and
stored), a healthy one (quiet), and collapsed runs marked in every leaderboard format."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from harness.cli.main import main
from harness.engine.health import (
    effective_rank,
    is_collapsed,
    relative_spread,
    representation_health,
)
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import COLLAPSED_MARK, LeaderboardSpec, build_tables
from harness.results.render import render
from harness.results.store import COLLAPSED_KEY, ResultStore
from harness.run.health import probe_indices
from tests.test_leaderboard import RECORDS
from tests.test_resume import args, finished


def events(folder: Path, kind: str) -> list[dict]:
    logged = map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
    return [e for e in logged if e["event"] == kind]


# -- the numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 5])
def test_effective_rank_of_k_orthonormal_rows_is_k(k):
    x = torch.zeros(8, 12)
    x[:k, :k] = torch.eye(k) * 3.0  # k equal singular values, the other rows zero
    assert effective_rank(x) == pytest.approx(k)


def test_effective_rank_of_a_rank_one_matrix_is_one():
    x = torch.outer(torch.arange(1.0, 7.0), torch.randn(10))
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-6)


def test_effective_rank_by_hand_for_unequal_singular_values():
    x = torch.diag(torch.tensor([3.0, 1.0]))  # p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(x) == pytest.approx(expected)
    assert effective_rank(torch.zeros(4, 3)) == 0.0


def test_relative_spread_by_hand():
    same = torch.tensor([1.0, 2.0, 2.0]).repeat(5, 1)
    assert relative_spread(same) == 0.0
    # two rows (1, 0) and (-1, 0): distance 2, norms 1 -> 2
    assert relative_spread(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)
    # three rows e1, e2, e3: every distance sqrt(2), norms 1
    assert relative_spread(torch.eye(3)) == pytest.approx(math.sqrt(2))
    assert relative_spread(torch.zeros(3, 2)) == 0.0


def test_health_values_and_the_collapse_thresholds():
    values = representation_health(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert values["dim_std_mean"] == pytest.approx(0.5)  # population stds 1 and 0
    assert values["dim_std_min"] == 0.0
    assert values["effective_rank"] == pytest.approx(1.0)
    assert values["centered_rank"] == pytest.approx(1.0)  # rows (-1, 0) and (1, 0)
    # one direction of variation is no collapse (a two-class task may need no more); a
    # spread of 2 / 2 = 1 is far from one point
    assert not is_collapsed(values)
    assert is_collapsed({"centered_rank": 5.0, "relative_spread": 0.024})
    assert not is_collapsed({"centered_rank": 1.0, "relative_spread": 0.025})
    assert is_collapsed({"centered_rank": 5.0, "relative_spread": math.nan})
    assert not is_collapsed(representation_health(torch.eye(4)))


def test_a_large_common_offset_is_not_a_collapse():
    """An anisotropic embedding (every clip = a big shared vector + a varied part, as after
    MAE pretraining) has an uncentred rank near 1 but varies along many directions."""
    varied = torch.eye(8).repeat(2, 1) * 0.5  # 16 clips varying along 8 directions
    offset = torch.zeros(1, 16)
    offset[0, 8:] = 4.0  # a shared vector orthogonal to the varied part
    values = representation_health(torch.cat([varied, torch.zeros(16, 8)], dim=1) + offset)
    assert values["effective_rank"] < 2  # one dominant direction: the offset
    # centred, the rows 0.5 (e_i - mean) span the 7 directions orthogonal to sum(e_i), with
    # equal singular values: rank 7
    assert values["centered_rank"] == pytest.approx(7.0)
    # spread by hand: distinct rows are 0 apart (same e_i) or 0.5 * sqrt(2) apart; norm
    # sqrt(16 * 8 + 0.25); 16 * 14 of 16 * 15 ordered pairs differ
    norm = math.sqrt(8 * 16.0 + 0.25)
    assert values["relative_spread"] == pytest.approx((14 / 15) * 0.5 * math.sqrt(2) / norm)
    assert not is_collapsed(values)


def test_the_probe_clips_are_a_fixed_seeded_choice():
    assert torch.equal(probe_indices(100, 3), probe_indices(100, 3))
    assert len(probe_indices(100, 3)) == 64 and len(probe_indices(10, 3)) == 10
    assert not torch.equal(probe_indices(100, 3), probe_indices(100, 4))


# -- runs -----------------------------------------------------------------------------------


def test_a_collapsing_run_is_warned_about_and_stored_as_collapsed(tmp_path, capsys):
    main(args(tmp_path, "a", "--method", "collapsing", "--epochs", "2"))
    folder = finished(tmp_path / "a")
    health = events(folder, "health")
    positions = [(e["stage"], e["epoch"], e["collapsed"]) for e in health]
    assert positions == [(1, 1, True), (1, 2, True)]
    assert health[0]["relative_spread"] < 0.025
    assert health[0]["dim_std_min"] == pytest.approx(0.0, abs=1e-6)
    warnings = [
        line for line in (folder / "log.txt").read_text().splitlines() if "collapsed" in line
    ]
    assert len(warnings) == 1  # once, at the first collapsed epoch
    assert warnings[0].startswith("WARNING: representation collapsed at stage 1 'train' epoch 1")
    assert "effective rank" in warnings[0] and "relative spread" in warnings[0]
    assert warnings[0] in capsys.readouterr().err
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics[COLLAPSED_KEY] == 1.0
    assert (metrics["health/collapsed_stage"], metrics["health/collapsed_epoch"]) == (1.0, 1.0)
    (record,) = ResultStore(tmp_path / "a" / "results.sqlite").records()
    assert record.collapsed and record.metrics["health/collapsed_epoch"] == 1.0


def test_a_healthy_run_is_not_warned_about(tmp_path, capsys):
    main(args(tmp_path, "a"))  # cross-entropy, 3 epochs
    folder = finished(tmp_path / "a")
    health = events(folder, "health")
    assert [e["epoch"] for e in health] == [1, 2, 3]
    assert not any(e["collapsed"] for e in health)
    assert all(e["relative_spread"] >= 0.025 for e in health)
    assert "collapsed" not in (folder / "log.txt").read_text()
    assert "WARNING" not in capsys.readouterr().err
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics[COLLAPSED_KEY] == 0.0 and "health/collapsed_epoch" not in metrics
    assert metrics["health/effective_rank"] == pytest.approx(health[-1]["effective_rank"])
    (record,) = ResultStore(tmp_path / "a" / "results.sqlite").records()
    assert not record.collapsed


# -- leaderboards ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def collapsed_records() -> list:
    """RECORDS with r3 (icl, alpha 0.2, seed 0) collapsed, stored and read back."""
    out = []
    for record in RECORDS:
        if record.run_id == "r3":
            metrics = {**record.metrics, COLLAPSED_KEY: 1.0, "health/collapsed_epoch": 1.0}
            record = dataclasses.replace(record, metrics=metrics)
        elif record.run_id == "r1":
            record = dataclasses.replace(record, metrics={**record.metrics, COLLAPSED_KEY: 0.0})
        out.append(record)
    return out


@pytest.fixture()
def stored(tmp_path) -> list:
    store = ResultStore(tmp_path / "results.sqlite")
    for record in collapsed_records():
        store.add(record)
    return store.records()


def test_a_stored_collapsed_run_keeps_its_mark_and_old_rows_read_as_healthy(stored):
    by_id = {r.run_id: r for r in stored}
    assert by_id["r3"].collapsed
    assert not by_id["r1"].collapsed and not by_id["r2"].collapsed  # r2: no health/ metric


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html"])
def test_collapsed_rows_are_marked_in_the_text_formats(stored, plugins, fmt):
    spec = LeaderboardSpec(agg="both")
    text = render(spec, build_tables(spec, stored, plugins), fmt)
    mark = r"\textbf{!} collapsed" if fmt == "latex" else COLLAPSED_MARK
    # the icl alpha=0.2 row in the best and the mean table (and in HTML its chart legend)
    assert text.count(mark) >= 2
    if fmt == "html":
        # after the first label cell shown (labels every row shares are stated above it)
        cell = rf'<td class="l"[^>]*>[^<]+ <span class="collapsed">{COLLAPSED_MARK}</span></td>'
        assert len(re.findall(cell, text)) == 2  # the best and the mean table
        return
    lines = [line for line in text.splitlines() if mark in line]
    assert len(lines) == 2 and all("alpha=0.2" in line for line in lines)


def test_collapsed_rows_are_a_column_in_csv_and_a_field_in_json(stored, plugins):
    spec = LeaderboardSpec(agg="runs")
    tables = build_tables(spec, stored, plugins)
    csv = render(spec, tables, "csv").splitlines()
    header = csv[0].split(",")
    index = header.index("collapsed")
    flags = {row.split(",")[header.index("run")]: row.split(",")[index] for row in csv[1:]}
    assert flags == {"r1": "False", "r2": "False", "r3": "True", "r4": "False", "r5": "False"}
    data = json.loads(render(spec, tables, "json"))
    rows = data["tables"][0]["rows"]
    assert {r["labels"]["run"]: r["collapsed"] for r in rows}["r3"] is True
    assert sum(r["collapsed"] for r in rows) == 1
    mean = build_tables(LeaderboardSpec(agg="mean"), stored, plugins)
    flags = [r["collapsed"] for r in json.loads(render(spec, mean, "json"))["tables"][0]["rows"]]
    assert flags == [False, True, False]  # a row is marked when any of its seeds collapsed
