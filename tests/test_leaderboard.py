"""Leaderboards as a pure function of run records."""

import dataclasses
import json
from pathlib import Path

import pytest

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import (
    LeaderboardSpec,
    RowSpec,
    aug_set,
    auto_label,
    build_tables,
    components_of,
    flatten,
    matches,
    no_columns_message,
    non_default_options,
    seedless_key,
    select_columns,
)
from harness.results.render import render, render_leaderboard
from harness.results.store import ResultStore, RunRecord
from harness.util.errors import UsageError


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
    assert rows[1].startswith("Mean over seeds ± 95 % CI,passt,icl,multidir,")
    # device A: mean of 0.9 and 1.1, sample std, n, 1.0 ± t(0.975, 1) * 0.1 = 1 ± 1.27062
    assert ",1.0,0.141421,2,-0.27062,2.27062," in rows[1]
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
    assert list(best.values["accuracy"]) == [50.0, 50.0, 50.0]  # shown in %


# -- exact output: every format and aggregation, checked by hand ---------------------------
# Device log-loss (lower is better), from RECORDS: ce's best seed by Overall is r2 (1.0 < 1.3),
# icl alpha=0.2's is r3 (0.95 < 1.25); means and sample stds, e.g. ce device A: 0.9 +- 0.141.
# The expected texts are the files in tests/golden/.

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("agg", "fmt", "expected"),
    [
        ("both", "markdown", "device_both.md"),
        ("best", "latex", "device_best.tex"),
        ("both", "csv", "device_both.csv"),
        ("runs", "markdown", "device_runs.md"),
    ],
)
def test_device_leaderboard_renders_exactly(plugins, agg, fmt, expected):
    spec = LeaderboardSpec(title="T", agg=agg)
    assert render(spec, build_tables(spec, RECORDS, plugins), fmt) == golden(expected)


def fewshot_record(run_id, method, seed, acc, ci, tp=None):
    metrics = {"fewshot/acc": acc, "fewshot/ci": ci}
    if tp is not None:
        metrics["fewshot/tp_m"] = tp
    base = record(run_id, method, "none", seed, 1.0, 1.0)
    return dataclasses.replace(base, protocols="fewshot", metrics=metrics)


FEWSHOT = [
    fewshot_record("f1", "ce", 0, 50.0, 1.5, 2.0),
    fewshot_record("f2", "ce", 1, 60.0, 2.5, 2.0),
    fewshot_record("f3", "icl", 0, 55.0, 1.0),
]


@pytest.mark.parametrize(
    ("agg", "fmt", "expected"),
    [
        ("both", "markdown", "fewshot_both.md"),
        ("runs", "csv", "fewshot_runs.csv"),
        ("mean", "latex", "fewshot_mean.tex"),
    ],
)
def test_fewshot_leaderboard_ranks_by_accuracy_with_its_own_ci(plugins, agg, fmt, expected):
    """Higher accuracy is better: ce's best seed is f2 (60 %), shown with its own CI (2.5);
    the mean table shows std over seeds; a run without #TP shows a dash; equal values
    (55.0 and 55.0) are not bolded."""
    spec = LeaderboardSpec(protocol="fewshot", agg=agg)
    assert render(spec, build_tables(spec, FEWSHOT, plugins), fmt) == golden(expected)


# -- the pieces: options, matching, grouping, columns ----------------------------------------


def test_command_line_options_filter_and_override_the_spec():
    spec = LeaderboardSpec(title="x", filters={"backbone": "passt"})
    changed = spec.with_options(
        backbone=None, method="icl", aug="multidir", dataset="tau22", protocol="fewshot",
        metric="acc", agg="mean",
    )  # fmt: skip
    assert changed.filters == {
        "backbone": "passt", "method": "icl", "aug": "multidir", "dataset": "tau22",
    }  # fmt: skip
    assert (changed.protocol, changed.metric, changed.agg) == ("fewshot", "acc", "mean")
    assert spec.with_options() == spec
    with pytest.raises(UsageError, match="^command line: agg must be one of best, mean, both"):
        spec.with_options(agg="median")
    with pytest.raises(UsageError, match="^x.toml: cannot filter by 'lr'$"):
        LeaderboardSpec(filters={"lr": "1"}).validated("x.toml")


def test_matching_compares_numbers_with_a_tolerance_and_augs_as_sets():
    run = record("m1", "icl", "multidir+freq-mixstyle", 0, a=1.0, s4=1.0, alpha=0.3)
    assert matches(run, {"method.alpha": 0.1 + 0.2})  # 0.30000000000000004
    assert not matches(run, {"method.alpha": 0.31})
    assert matches(run, {"run.seed": 0.0}) and not matches(run, {"run.seed": 1e-9})
    assert matches(run, {"aug": "freq-mixstyle+multidir"})
    assert not matches(run, {"aug": "multidir"})
    assert matches(run, {"aug": "multidir"}, frozenset({"freq-mixstyle"}))
    assert not matches(run, {"method": "ce"}) and matches(run, {"method": "icl"})
    assert matches(run, {"method.missing": None}) and not matches(run, {"method.missing": 0})
    assert aug_set("none") == frozenset() and aug_set("a+none+b") == {"a", "b"}


def test_runs_that_differ_only_in_their_seed_share_a_key():
    a = record("k1", "icl", "none", 0, a=1.0, s4=1.0, alpha=0.2)
    b = record("k2", "icl", "none", 7, a=2.0, s4=2.0, alpha=0.2)
    c = record("k3", "icl", "none", 0, a=1.0, s4=1.0, alpha=0.3)
    reordered = dataclasses.replace(a, config=dict(reversed(list(a.config.items()))))
    assert seedless_key(a) == seedless_key(b) == seedless_key(reordered) != seedless_key(c)
    assert len(seedless_key(a)) == 12
    assert a.config["run"] == {"seed": 0}  # the record itself is left alone
    bare = dataclasses.replace(a, config={"method": {"name": "icl"}})
    assert len(seedless_key(bare)) == 12


def test_record_only_settings_and_later_defaults_do_not_split_a_row():
    """A run stored before a setting existed and one stored after, at its default, are the
    same configuration (as their config hashes say); so are runs that differ only in what
    is recorded (log cadence, per-clip samples). A setting away from its default splits."""
    old = record("o1", "icl", "none", 0, a=1.0, s4=1.0, alpha=0.2)
    run = {"seed": 1, "log_every": 10, "log_samples": True, "ema": 0.0, "data_source": "cache"}
    new = dataclasses.replace(old, run_id="n1", config={**old.config, "run": run})
    assert seedless_key(old) == seedless_key(new)
    with_ema = dataclasses.replace(new, config={**new.config, "run": {**run, "ema": 0.999}})
    assert seedless_key(with_ema) != seedless_key(old)


def test_flatten_and_auto_label_name_what_varies():
    config = {"method": {"name": "icl", "alpha": 0.2}, "aug": {"names": ["a", "b"]}}
    assert flatten(config) == {
        "method.name": "icl", "method.alpha": 0.2, "aug.names": '["a", "b"]',
    }  # fmt: skip
    run = dataclasses.replace(
        RECORDS[2], config={**RECORDS[2].config, "protocol": {"x": {"n": 1}}, "run": {"lr": 2}}
    )
    label = auto_label(run, ["method.alpha", "protocol.x.n", "run.lr", "absent"])
    assert label == "method.alpha=0.2, run.lr=2"


def test_filters_and_where_select_the_runs(plugins):
    spec = LeaderboardSpec(agg="runs", filters={"method": "icl"})
    [table] = build_tables(spec, RECORDS, plugins)
    assert list(table.labels["run"]) == ["r3", "r4", "r5"]
    where = LeaderboardSpec(agg="runs", where={"method.alpha": 1.5})
    [table] = build_tables(where, RECORDS, plugins)
    assert list(table.labels["run"]) == ["r5"]
    [table] = build_tables(LeaderboardSpec(agg="runs", filters={"seed": 1}), RECORDS, plugins)
    assert list(table.labels["run"]) == ["r2", "r4"]


def test_explicit_columns_keep_the_declared_ones_and_name_the_rest(plugins):
    spec = LeaderboardSpec(columns=("logloss/overall", "logloss/extra"))
    extra = [
        dataclasses.replace(r, metrics={**r.metrics, "device-logloss/logloss/extra": 3.0})
        for r in RECORDS
    ]
    columns = select_columns(spec, plugins, extra)
    assert [(c.key, c.label, c.higher_is_better) for c in columns] == [
        ("logloss/overall", "Overall", False),
        ("logloss/extra", "logloss/extra", False),
    ]


def test_metric_family_of_undeclared_metrics_comes_from_the_stored_keys(plugins):
    runs = [
        dataclasses.replace(r, metrics={"device-logloss/rate/a": 0.5, "device-logloss/rate/b": 0.7})
        for r in RECORDS[:1]
    ]
    columns = select_columns(LeaderboardSpec(metric="rate"), plugins, runs)
    assert [(c.key, c.label) for c in columns] == [("rate/a", "rate/a"), ("rate/b", "rate/b")]


def test_no_columns_message_lists_the_families_to_choose_from(plugins):
    spec = LeaderboardSpec(metric="nope")
    assert no_columns_message(spec, plugins, RECORDS) == (
        "protocol 'device-logloss' reports no metric 'nope' in the stored runs; "
        "choose --metric from: acc, logloss"
    )
    spec = LeaderboardSpec(protocol="fewshot", columns=("x", "y"))
    assert no_columns_message(spec, plugins, []) == (
        "protocol 'fewshot' reports no columns x, y in the stored runs; "
        "choose --metric from: acc, ci, tp_m"
    )


def test_options_away_from_the_defaults_are_listed_per_component(plugins):
    config = {
        "backbone": {"name": "passt", "size": "tiny", "s_patchout_f": 4},
        "method": {"name": "icl", "alpha": 0.2, "lambda_icl": 1.0},
        "dataset": {"name": "no-such-dataset", "x": 1},
        "aug": {"names": ["multidir"], "multidir": {"p": 0.9, "beta": 2.0}},
        "protocol": {"names": ["device-logloss"], "device-logloss": {"split": "test"}},
    }
    run = dataclasses.replace(RECORDS[0], config=config)
    assert non_default_options([run, run], plugins) == [
        "aug.multidir.p=0.9",
        "backbone.s_patchout_f=4",
        "method.lambda_icl=1.0",
        'protocol.device-logloss.split="test"',
    ]
    assert [c[:2] for c in components_of(config)] == [
        ("backbone", "backbone"), ("method", "method"), ("dataset", "dataset"),
        ("aug.multidir", "augmentation"), ("protocol.device-logloss", "protocol"),
    ]  # fmt: skip


def test_stored_leaderboard_notes_the_non_default_options(plugins, tmp_path):
    store = ResultStore(tmp_path / "runs.sqlite")
    for run in RECORDS:
        store.add(run)
    text = render_leaderboard(LeaderboardSpec(agg="best"), store, plugins, "markdown")
    assert text.startswith(
        "Options away from their defaults (seed-method defaults are the papers' values):\n"
        "- passt icl multidir tau22-embedded: `method.alpha=1.5`\n"
    )
    tex = render_leaderboard(LeaderboardSpec(agg="best"), store, plugins, "latex")
    assert "% - passt icl multidir tau22-embedded: method.alpha=1.5\n" in tex
    assert json.loads(render_leaderboard(LeaderboardSpec(), store, plugins, "json"))["tables"]
    assert render_leaderboard(LeaderboardSpec(), store, plugins, "html").startswith("<!")


def test_an_empty_leaderboard_says_so_in_every_text_format(plugins):
    spec = LeaderboardSpec(protocol="fewshot")
    for fmt in ("markdown", "latex", "csv"):
        assert render(spec, build_tables(spec, RECORDS, plugins), fmt) == (
            "no stored runs with protocol 'fewshot' match this leaderboard"
        )


def test_render_puts_the_reproducing_commands_on_the_html_page_only():
    commands = ["harness sweep a.toml", "harness leaderboard --format html"]
    page = render(LeaderboardSpec(), [], "html", (), None, commands)
    assert "<pre>harness sweep a.toml\nharness leaderboard --format html</pre>" in page
    assert "harness sweep" not in render(LeaderboardSpec(), [], "html")
    assert "harness sweep" not in render(LeaderboardSpec(), [], "markdown", (), None, commands)


def test_an_empty_leaderboard_says_which_filter_excluded_how_many_runs():
    from harness.results.leaderboard import LeaderboardSpec, exclusions
    from harness.results.store import RunRecord

    def run(run_id: str, backbone: str, alpha: float, protocol: str = "device-logloss"):
        return RunRecord(
            run_id=run_id, created="2026", config_hash=run_id, backbone=backbone, method="icl",
            aug="none", dataset="d", protocols=protocol, seed=0,
            config={"method": {"name": "icl", "alpha": alpha}},
            metrics={f"{protocol}/logloss/overall": 1.0}, run_dir="/x", harness_version="0",
            git_commit="", environment={}, duration_s=1.0,
        )  # fmt: skip

    records = [
        run("a", "beats", 0.2),
        run("b", "passt", 0.4, protocol="fewshot"),
        run("c", "passt", 0.4),
        run("d", "passt", 0.4),
    ]
    spec = LeaderboardSpec(filters={"backbone": "passt"}, where={"method.alpha": 0.2})
    assert exclusions(spec, records) == (
        "of 4 stored run(s), excluded 1 by filters backbone=passt, "
        "1 by no 'device-logloss' metrics, 2 by where method.alpha=0.2"
    )
    assert exclusions(spec, []) == "the store holds no runs"
    assert exclusions(LeaderboardSpec(), records[2:]) == ""
