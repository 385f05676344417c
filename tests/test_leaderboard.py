"""Leaderboards as a pure function of run records."""

import pytest

from harness.errors import UsageError
from harness.leaderboard import LeaderboardSpec, RowSpec, build_tables, render
from harness.plugins import load_plugins
from harness.store import RunRecord


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def record(run_id, method, aug, seed, a, s4, alpha=None):
    method_cfg = {"name": method} | ({"alpha": alpha} if alpha is not None else {})
    overall = (a + s4) / 2
    metrics = {"a": a, "real": a, "s4": s4, "unseen": s4, "overall": overall}
    return RunRecord(
        run_id=run_id,
        created=run_id,
        config_hash=run_id,
        backbone="passt",
        method=method,
        aug=aug,
        dataset="tau22-embedded",
        protocols="device-logloss",
        seed=seed,
        config={"run": {"seed": seed}, "method": method_cfg, "aug": {"names": [aug]}},
        metrics={f"device-logloss/logloss/{k}": v for k, v in metrics.items()},
        run_dir="",
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


RECORDS = [
    record("r1", "ce", "none", 0, a=1.0, s4=1.6),
    record("r2", "ce", "none", 1, a=0.8, s4=1.2),
    record("r3", "icl", "multidir", 0, a=0.9, s4=1.0, alpha=0.2),
    record("r4", "icl", "multidir", 1, a=1.1, s4=1.4, alpha=0.2),
    record("r5", "icl", "multidir", 0, a=2.0, s4=2.0, alpha=1.5),
]


def test_best_of_seeds_picks_the_run_with_the_best_primary_column(plugins):
    best, mean = build_tables(LeaderboardSpec(), RECORDS, plugins)
    keys = [c.key for c in best.columns]
    assert keys == ["logloss/a", "logloss/real", "logloss/s4", "logloss/unseen", "logloss/overall"]
    # ce: overall 1.3 (seed 0) vs 1.0 (seed 1) -> seed 1's row, whole.
    assert best.values.loc[0, "logloss/a"] == pytest.approx(0.8)
    assert best.values.loc[0, "logloss/s4"] == pytest.approx(1.2)
    assert list(best.labels["seeds"]) == [2, 2, 1]
    assert list(best.labels["params"]) == ["", "method.alpha=0.2", "method.alpha=1.5"]
    assert mean.values.loc[1, "logloss/s4"] == pytest.approx(1.2)
    assert mean.errors.loc[1, "logloss/s4"] == pytest.approx(0.2828427, rel=1e-6)


def test_named_rows_follow_the_spec_and_markdown_bolds_the_best(plugins):
    spec = LeaderboardSpec(
        title="Table 3",
        agg="best",
        rows=(
            RowSpec("PaSST", {"method": "ce", "aug": "none"}),
            RowSpec("+ ICL + Multi DIRs", {"method": "icl", "method.alpha": 0.2}),
        ),
    )
    [table] = build_tables(spec, RECORDS, plugins)
    assert list(table.labels["row"]) == ["PaSST", "+ ICL + Multi DIRs"]
    text = render(spec, [table], "markdown")
    assert text.startswith("# Table 3")
    assert "| PaSST" in text and "**0.800**" in text  # best device-A log-loss
    assert "**0.950**" in text  # best overall: icl seed 0 (0.9 + 1.0) / 2


def test_spec_file_rejects_unknown_keys(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('title = "x"\nrowz = []\n')
    with pytest.raises(UsageError, match="unknown key 'rowz'"):
        LeaderboardSpec.from_file(path)


def test_csv_has_numbers_and_latex_bold(plugins):
    tables = build_tables(LeaderboardSpec(agg="mean"), RECORDS, plugins)
    csv = render(LeaderboardSpec(), tables, "csv")
    header, *rows = csv.splitlines()
    assert "logloss/a" in header.split(",") and "logloss/a_std" in header.split(",")
    assert all(c.isascii() and " " not in c for c in header.split(",")[1:])
    assert rows[1].startswith("Mean ± std over seeds,passt,icl,multidir,")
    assert ",1.0,0.141421," in rows[1]  # device A: mean of 0.9 and 1.1, sample std
    tex = render(LeaderboardSpec(), tables, "latex")
    assert "\\textbf{" in tex and "$\\pm$" in tex


def test_metric_the_protocol_does_not_report_is_a_one_line_error(plugins):
    import dataclasses

    probe = [
        dataclasses.replace(r, metrics={**r.metrics, "device-probe/accuracy": 0.5}) for r in RECORDS
    ]
    spec = LeaderboardSpec(protocol="device-probe", metric="logloss")
    with pytest.raises(UsageError, match=r"^protocol 'device-probe' reports no metric 'logloss'"):
        build_tables(spec, probe, plugins)
    [best] = build_tables(LeaderboardSpec(protocol="device-probe", agg="best"), probe, plugins)
    assert list(best.values["accuracy"]) == [0.5, 0.5, 0.5]
