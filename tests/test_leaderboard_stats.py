"""Leaderboard statistics against scipy.stats, on stores built by hand: t intervals over seeds,
the paired comparison to a baseline row, Holm's correction and the power figures."""

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, RowSpec, build_tables
from harness.results.render import render, render_leaderboard
from harness.results.stats import (
    compare_paired,
    detectable_difference,
    holm,
    paired_power,
    seed_statistics,
    seeds_needed,
    summarize,
)
from harness.results.store import ResultStore
from harness.util.errors import UsageError
from tests.test_leaderboard import record

LEADERBOARDS = Path(__file__).parent.parent / "leaderboards"


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


# Device-A log-loss by seed; Unseen S4 is 1.0 everywhere (a constant column) except in
# "ICL a=0.2", where it is 1.5 for every seed (a constant nonzero difference).
BASE_A = {0: 1.00, 1: 0.90, 2: 1.10}
ICL_A = {0: 0.80, 1: 0.80, 2: 0.95}  # differences -0.2, -0.1, -0.15
UNPAIRED_A = {0: 1.05, 1: 0.92}  # no seed 2
SINGLE_A = {2: 1.30}
FOREIGN_A = {5: 0.70, 6: 0.72}  # no seed in common with the baseline

ROWS = (
    RowSpec("PaSST", {"method": "ce"}),
    RowSpec("ICL a=0.2", {"method": "icl", "method.alpha": 0.2}),
    RowSpec("ICL a=0.5", {"method": "icl", "method.alpha": 0.5}),
    RowSpec("ICL a=1.5", {"method": "icl", "method.alpha": 1.5}),
    RowSpec("ICL a=0.8", {"method": "icl", "method.alpha": 0.8}),
)
COLUMNS = ("logloss/a", "logloss/s4")


def runs():
    out = [record(f"b{s}", "ce", "none", s, a=a, s4=1.0) for s, a in BASE_A.items()]
    out += [record(f"i{s}", "icl", "none", s, a=a, s4=1.5, alpha=0.2) for s, a in ICL_A.items()]
    for alpha, values in ((0.5, UNPAIRED_A), (1.5, SINGLE_A), (0.8, FOREIGN_A)):
        out += [
            # S4 varies with the seed only in the row without common seeds, so the column
            # is an outcome of training (tested), not a fixed property of each row
            record(f"a{alpha}s{s}", "icl", "none", s, a=a, s4=1.0 + (s == 6) * 0.1, alpha=alpha)
            for s, a in values.items()
        ]
    return out


def spec(**changes):
    fields = {"title": "T", "agg": "mean", "rows": ROWS, "columns": COLUMNS, "baseline": "PaSST"}
    return LeaderboardSpec(**(fields | changes))


def mean_table(plugins, **changes):
    [table] = build_tables(spec(**changes), runs(), plugins)
    return table


def t_interval(values):
    values = np.asarray(values)
    return stats.t.interval(
        0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values, ddof=1)
    )


def test_cells_are_means_with_scipy_t_intervals(plugins):
    table = mean_table(plugins)
    summaries = table.statistics.summaries
    for row, values in enumerate((BASE_A, ICL_A, UNPAIRED_A)):
        low, high = t_interval(list(values.values()))
        cell = summaries[row]["logloss/a"]
        assert (cell.mean, cell.n) == (pytest.approx(np.mean(list(values.values()))), len(values))
        assert (cell.ci_low, cell.ci_high) == (pytest.approx(low), pytest.approx(high))
        assert table.values.at[row, "logloss/a"] == pytest.approx(cell.mean)
        assert table.errors.at[row, "logloss/a"] == pytest.approx(
            np.std(list(values.values()), ddof=1)
        )


def test_a_constant_column_has_a_zero_width_interval_and_one_seed_none(plugins):
    summaries = mean_table(plugins).statistics.summaries
    constant = summaries[0]["logloss/s4"]
    assert (constant.mean, constant.std, constant.ci_low, constant.ci_high) == (1.0, 0.0, 1.0, 1.0)
    single = summaries[3]["logloss/a"]
    assert single.n == 1 and math.isnan(single.ci_low) and math.isnan(single.ci_high)
    assert summarize([math.nan, 2.0, 4.0]).n == 2  # missing values do not count as seeds


def test_rows_are_compared_to_the_baseline_paired_by_seed(plugins):
    comparisons = mean_table(plugins).statistics.comparisons
    assert comparisons[0] == {}  # the baseline's own row
    for row, values in ((1, ICL_A), (2, UNPAIRED_A)):
        seeds = sorted(values)  # the unpaired row: only seeds 0 and 1 count
        ours = np.array([values[s] for s in seeds])
        theirs = np.array([BASE_A[s] for s in seeds])
        comparison = comparisons[row]["logloss/a"]
        assert comparison.n_pairs == len(seeds)
        assert comparison.diff == pytest.approx((ours - theirs).mean())
        low, high = t_interval(ours - theirs)
        assert (comparison.diff_low, comparison.diff_high) == (
            pytest.approx(low),
            pytest.approx(high),
        )
        assert comparison.p == pytest.approx(stats.ttest_rel(ours, theirs).pvalue)
        assert comparison.sd == pytest.approx(np.std(ours - theirs, ddof=1))


def test_constant_differences_give_zero_width_intervals():
    base = {0: 1.0, 1: 0.5, 2: 2.0}  # exact in binary: the differences are exactly 0.5
    shifted = compare_paired({s: v + 0.5 for s, v in base.items()}, base)
    assert (shifted.diff, shifted.diff_low, shifted.diff_high) == pytest.approx((0.5, 0.5, 0.5))
    with warnings.catch_warnings():  # scipy warns of the zero variance
        warnings.simplefilter("ignore", RuntimeWarning)
        assert shifted.p == stats.ttest_rel([1.5] * 3, [1.0] * 3).pvalue == 0.0
    assert shifted.detectable == 0.0
    equal = compare_paired(BASE_A, BASE_A)  # nothing to detect
    assert (equal.diff, equal.diff_low, equal.diff_high, equal.p) == (0.0, 0.0, 0.0, 1.0)


def test_a_column_that_no_seed_changes_is_compared_but_not_tested():
    """A column that is one value per row whatever the seed (a parameter count, a chance
    level) is a property of the configuration: its differences get no interval, p-value or
    mark, and Holm's m counts only the other column's tests."""
    base, other = {"tp": {0: 1.0, 1: 1.0}, "a": BASE_A}, {"tp": {0: 2.0, 1: 2.0}, "a": ICL_A}
    statistics = seed_statistics([base, other], ["tp", "a"], "base", 0)
    fixed = statistics.comparisons[1]["tp"]
    assert fixed.diff == 1.0 and math.isnan(fixed.p) and not fixed.significant
    assert fixed.note == "the same in every seed: not tested"
    assert statistics.tests == 1 and "tp" not in statistics.detectable
    tested = statistics.comparisons[1]["a"]
    assert tested.p_holm == pytest.approx(tested.p)  # m = 1
    # one seed per row shows no invariance: that column is compared as usual (n=1)
    single = seed_statistics([{"tp": {0: 1.0}}, {"tp": {0: 2.0}}], ["tp"], "base", 0)
    assert single.comparisons[1]["tp"].note == "1 common seed: no interval"


def test_one_common_seed_and_no_common_seeds_are_notes_not_numbers(plugins):
    table = mean_table(plugins)
    single = table.statistics.comparisons[3]["logloss/a"]
    assert (single.n_pairs, single.note) == (1, "1 common seed: no interval")
    assert single.diff == pytest.approx(SINGLE_A[2] - BASE_A[2])
    assert math.isnan(single.diff_low) and math.isnan(single.p) and not single.significant
    foreign = table.statistics.comparisons[4]["logloss/a"]
    assert (foreign.n_pairs, foreign.note) == (0, "no common seeds")
    assert math.isnan(foreign.diff) and math.isnan(foreign.p)
    text = render(spec(), [table], "markdown")
    assert "| Δ +0.200 (n=1, no interval) " in text
    assert "| no common seeds " in text


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, max(0.06, 0.04 * 1) = 0.06
    adjusted = holm([0.01, 0.04, math.nan, 0.03, 0.005])
    assert adjusted[:2] == pytest.approx([0.03, 0.06]) and math.isnan(adjusted[2])
    assert adjusted[3:] == pytest.approx([0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_the_table_is_holm_corrected_over_all_its_comparisons(plugins):
    table = mean_table(plugins)
    flat = [c for row in table.statistics.comparisons for c in row.values()]
    tested = [c for c in flat if math.isfinite(c.p)]
    assert table.statistics.tests == len(tested) == 4  # rows a=0.2 and a=0.5, two columns
    ordered = sorted(c.p for c in tested)
    for comparison in tested:  # step-down: the running max of (m - rank) * p, capped at 1
        rank = ordered.index(comparison.p)
        expected = max(min(1.0, (4 - j) * ordered[j]) for j in range(rank + 1))
        assert comparison.p_holm == pytest.approx(expected)
        assert comparison.significant == (expected <= 0.05)
    icl_a = table.statistics.comparisons[1]["logloss/a"]
    assert icl_a.p < 0.05 and icl_a.p_holm > 0.05 and not icl_a.significant  # Holm undoes it


def test_the_detectable_difference_has_80_percent_power():
    for sd, n in ((0.05, 3), (0.2, 5), (1.0, 2), (0.3, 10)):
        effect = detectable_difference(sd, n)
        df, critical = n - 1, stats.t.ppf(0.975, df := n - 1)
        noncentrality = effect / sd * math.sqrt(n)
        upper = stats.nct.sf(critical, df, noncentrality)
        lower = stats.nct.cdf(-critical, df, noncentrality)  # NaN in scipy's far tail
        power = upper + (0.0 if math.isnan(lower) else lower)
        assert power == pytest.approx(0.80, abs=1e-6)
    assert detectable_difference(0.0, 3) == 0.0 and math.isnan(detectable_difference(0.1, 1))


def test_seeds_needed_is_the_fewest_with_80_percent_power():
    for difference, sd in ((0.05, 0.1), (0.01, 0.1), (-0.3, 0.2)):
        n = seeds_needed(difference, sd)
        assert paired_power(difference, sd, n) >= 0.80 > paired_power(difference, sd, n - 1)
    assert seeds_needed(0.0, 0.1) is None and seeds_needed(0.1, 0.0) == 2
    assert seeds_needed(1e-9, 1.0) is None  # beyond MAX_SEEDS


def test_not_significant_comparisons_say_how_many_seeds_they_need(plugins):
    table = mean_table(plugins)
    icl_a = table.statistics.comparisons[1]["logloss/a"]
    level = 0.05 / table.statistics.tests  # the level at which Holm marks it whatever else
    assert icl_a.seeds_needed == seeds_needed(icl_a.diff, icl_a.sd, alpha=level)
    assert icl_a.seeds_needed is not None and icl_a.seeds_needed > 3
    assert icl_a.seeds_needed >= seeds_needed(icl_a.diff, icl_a.sd)
    detectable = table.statistics.detectable["logloss/a"]
    pooled = math.sqrt((2 * icl_a.sd**2 + table.statistics.comparisons[2]["logloss/a"].sd ** 2) / 3)
    assert (detectable.sd, detectable.n_pairs) == (pytest.approx(pooled), 2)
    assert detectable.difference == pytest.approx(detectable_difference(pooled, 2))


def test_a_difference_that_holm_undoes_needs_more_seeds_than_it_has():
    """Significant alone (p < 0.05) but not after Holm: the seeds it needs are counted at
    the corrected level, so they always exceed the seeds present (at the nominal level the
    observed difference would already have about 80 % power and read as a contradiction)."""
    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(rng.normal(0.0, 1.0, 4))}
    rows = [{"a": base}] + [
        {"a": {s: v + shift + 0.05 * rng.normal() for s, v in base.items()}}
        for shift in (0.05, 0.08, 0.1, 0.15)
    ]
    statistics = seed_statistics(rows, ["a"], "base", 0)
    undone = [c["a"] for c in statistics.comparisons[1:] if not c["a"].significant]
    assert any(c.p < 0.05 for c in undone)  # the case this test is about occurs
    for comparison in undone:
        assert comparison.seeds_needed > comparison.n_pairs
        level = 0.05 / statistics.tests
        n = comparison.seeds_needed
        assert paired_power(comparison.diff, comparison.sd, n, level) >= 0.80
        assert paired_power(comparison.diff, comparison.sd, n - 1, level) < 0.80


def test_direct_comparison_ignores_missing_values():
    comparison = compare_paired({0: 1.0, 1: math.nan, 2: 3.0, 3: 4.0}, {0: 0.5, 1: 1.0, 2: 2.0})
    assert comparison.n_pairs == 2
    assert comparison.diff == pytest.approx(0.75)


# -- bad input ----------------------------------------------------------------------------


def test_an_unknown_baseline_is_a_one_line_error_listing_the_rows(plugins):
    with pytest.raises(UsageError) as error:
        build_tables(spec(baseline="BEATs"), runs(), plugins)
    assert str(error.value) == (
        "baseline 'BEATs' names no row; rows: PaSST; ICL a=0.2; ICL a=0.5; ICL a=1.5; ICL a=0.8"
    )


def test_cli_rejects_an_unknown_baseline_with_exit_code_2(tmp_path):
    from tests.conftest import run_cli

    store = ResultStore(tmp_path / "store.sqlite")
    for run in runs():
        store.add(run)
    result = run_cli("leaderboard", "--store", str(store.path), "--baseline", "nope")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith("harness: error: baseline 'nope' names no row; rows: ")
    assert "\n" not in message and "; passt ce none tau22-embedded" in message
    result = run_cli(
        "leaderboard", "--store", str(store.path), "--agg", "mean", "--format", "json",
        "--baseline", "passt ce none tau22-embedded",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [table] = json.loads(result.stdout)["tables"]
    assert table["baseline"] == "passt ce none tau22-embedded"
    compared = {row["labels"]["method"] + row["labels"]["params"]: row for row in table["rows"]}
    assert compared["ce"]["comparison"] is None
    icl = compared["iclmethod.alpha=0.2"]["comparison"]["logloss/a"]
    assert icl["n_pairs"] == 3 and icl["diff"] == pytest.approx(-0.15)


def test_one_seed_everywhere_says_intervals_need_two(plugins):
    single = [r for r in runs() if r.seed == 2]
    rows = (ROWS[0], ROWS[3])
    [table] = build_tables(spec(rows=rows), single, plugins)
    text = render(spec(rows=rows), [table], "markdown")
    assert "No intervals: they need at least 2 seeds, and every row has 1." in text
    assert "No detectable difference: it needs at least 2 seeds in common" in text
    cells = "".join(line for line in text.splitlines() if line.startswith("| "))
    assert "±" not in cells and cells.count("(n=1") == 6  # values and Δs, two columns


def test_best_and_runs_tables_carry_no_statistics(plugins):
    best, mean = build_tables(spec(agg="both"), runs(), plugins)
    assert best.statistics is None and mean.statistics is not None
    [every] = build_tables(spec(agg="runs"), runs(), plugins)
    assert every.statistics is None and len(every.labels) == 11
    assert "Δ" not in render(spec(agg="best"), [best], "markdown")


# -- every format shows the statistics -------------------------------------------------------


def test_markdown_shows_intervals_differences_and_the_power_note(plugins):
    table = mean_table(plugins)
    text = render(spec(), [table], "markdown")
    half = t_interval(list(BASE_A.values()))[1] - 1.0
    assert f"1.000 ± {half:.3f} (n=3)" in text
    icl_a = table.statistics.comparisons[1]["logloss/a"]
    assert (
        f"Δ {icl_a.diff:+.3f} [{icl_a.diff_low:+.3f}, {icl_a.diff_high:+.3f}] (n=3) "
        f"p={icl_a.p:.3f} n.s. (n={icl_a.seeds_needed} for 80 % power)"
    ) in text
    assert "Δ +0.500 [+0.500, +0.500] (n=3) p<0.001 *" in text
    assert "| Δ vs PaSST " in text
    detectable = table.statistics.detectable["logloss/a"]
    assert "Smallest difference detectable at 80 % power" in text
    assert f"Real A {detectable.difference:.3f} (n=2, paired sd {detectable.sd:.3f})" in text
    assert "Holm's correction over the table's 4 tests" in text
    assert "n.s.: not significant, so no finding" in text


def test_csv_has_separate_numeric_columns(plugins):
    table = mean_table(plugins)
    rows = list(csv.DictReader(io.StringIO(render(spec(), [table], "csv"))))
    icl = rows[1]
    comparison = table.statistics.comparisons[1]["logloss/a"]
    low, high = t_interval(list(ICL_A.values()))
    assert icl["vs"] == "PaSST" and rows[0]["vs"] == ""
    assert int(icl["logloss/a_n"]) == 3
    assert float(icl["logloss/a_ci_low"]) == pytest.approx(low, abs=1e-6)
    assert float(icl["logloss/a_ci_high"]) == pytest.approx(high, abs=1e-6)
    assert int(icl["logloss/a_diff_n"]) == 3
    for name in ("diff", "diff_low", "diff_high", "p", "p_holm", "detectable"):
        assert float(icl[f"logloss/a_{name}"]) == pytest.approx(getattr(comparison, name), abs=1e-6)
    assert icl["logloss/a_significant"] == "False" and icl["logloss/s4_significant"] == "True"
    assert int(icl["logloss/a_seeds_needed"]) == comparison.seeds_needed
    assert rows[4]["logloss/a_diff_n"] == "0" and rows[4]["logloss/a_diff"] == ""
    assert rows[3]["logloss/a_ci_low"] == "" and rows[3]["logloss/a_p"] == ""


def test_latex_shows_the_statistics_escaped(plugins):
    spec_ = spec(baseline="PaSST & co", rows=(RowSpec("PaSST & co", {"method": "ce"}), *ROWS[1:]))
    [table] = build_tables(spec_, runs(), plugins)
    tex = render(spec_, [table], "latex")
    half = t_interval(list(BASE_A.values()))[1] - 1.0
    assert f"1.000 $\\pm$ {half:.3f} (n=3)" in tex
    assert "$\\Delta$ vs PaSST \\& co" in tex and " PaSST \\& co " in tex
    assert "$\\Delta$ +0.500 [+0.500, +0.500] (n=3) p<0.001 *" in tex
    assert "n.s. (n=" in tex and "for 80 \\% power)" in tex
    assert "\n% Smallest difference detectable at 80 % power" in tex


def test_json_has_the_numbers(plugins):
    table = mean_table(plugins)
    doc = json.loads(render(spec(), [table], "json"))
    assert doc["spec"]["baseline"] == "PaSST"
    [data] = doc["tables"]
    assert data["baseline"] == "PaSST" and data["tests"] == 4
    base, _, unpaired, single, foreign = data["rows"]
    low, high = t_interval(list(BASE_A.values()))
    assert base["stats"]["logloss/a"]["ci_low"] == pytest.approx(low)
    assert base["stats"]["logloss/a"]["ci_high"] == pytest.approx(high)
    assert base["comparison"] is None
    expected = table.statistics.comparisons[2]["logloss/a"]
    assert unpaired["comparison"]["logloss/a"]["n_pairs"] == 2
    assert unpaired["comparison"]["logloss/a"]["p"] == pytest.approx(expected.p)
    assert unpaired["comparison"]["logloss/a"]["p_holm"] == pytest.approx(expected.p_holm)
    assert single["stats"]["logloss/a"]["ci_low"] is None
    assert foreign["comparison"]["logloss/a"]["note"] == "no common seeds"
    assert foreign["comparison"]["logloss/a"]["diff"] is None
    assert data["detectable"]["logloss/a"]["n_pairs"] == 2
    assert any("Holm" in note for note in data["notes"])


def test_html_shows_the_same_numbers_on_a_self_contained_page(plugins):
    table = mean_table(plugins)
    page = render(spec(), [table], "html", runs())
    half = t_interval(list(BASE_A.values()))[1] - 1.0
    assert f"1.000 ± {half:.3f} (n=3)" in page
    # the difference's parts on lines of their own: a narrow cell
    assert '<span class="d">Δ +0.500<br>[+0.500, +0.500]<br>(n=3) p&lt;0.001 *</span>' in page
    assert "no common seeds" in page and '<p class="n">Smallest difference detectable' in page
    assert "whiskers: 95% t interval" in page
    assert "<link" not in page and "https://" not in page


def test_a_stored_leaderboard_compares_to_its_spec_baseline(plugins, tmp_path):
    store = ResultStore(tmp_path / "runs.sqlite")
    for run in runs():
        store.add(run)
    text = render_leaderboard(spec(agg="both"), store, plugins, "markdown")
    assert "## Best of seeds" in text and "| Δ vs PaSST " in text


# -- specs ---------------------------------------------------------------------------------


def test_spec_files_and_the_command_line_name_a_baseline(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('baseline = "A"\n[[rows]]\nlabel = "A"\nmatch = { method = "ce" }\n')
    assert LeaderboardSpec.from_file(path).baseline == "A"
    assert LeaderboardSpec.from_file(path).with_options(baseline="B").baseline == "B"
    assert LeaderboardSpec.from_file(path).with_options(baseline=None).baseline == "A"


@pytest.mark.parametrize(
    ("name", "baseline"),
    [
        ("device_generalization", "PaSST"),
        ("device_probe", "PaSST"),
        ("icl_grid", "alpha = 0.2, lambda = 10"),
        ("fewshot_backbones", "AudioMAE (MAE, 2 epochs)"),
        ("fewshot_mixing", "No Mixing"),
    ],
)
def test_committed_specs_name_one_of_their_rows_as_baseline(name, baseline):
    board = LeaderboardSpec.from_file(LEADERBOARDS / f"{name}.toml")
    assert board.baseline == baseline
    assert baseline in [row.label for row in board.rows]


def test_a_spec_baseline_without_runs_here_leaves_the_other_rows_alone(plugins):
    others = [r for r in runs() if r.method != "ce"]  # e.g. --method icl filters PaSST out
    [table] = build_tables(spec(), others, plugins)
    assert table.statistics.comparisons is None and len(table.labels) == 4
    text = render(spec(), [table], "markdown")
    assert "No differences: the baseline row 'PaSST' has no runs here." in text
    assert "Δ" not in text and "vs" not in render(spec(), [table], "csv").splitlines()[0]
    empty = spec(protocol="fewshot")  # nothing stored for it: the usual message, no error
    assert render(empty, build_tables(empty, runs(), plugins), "markdown") == (
        "no stored runs with protocol 'fewshot' match this leaderboard"
    )
