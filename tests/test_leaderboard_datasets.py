"""One leaderboard row across data sets (seed 003's Table 4): columns that take their values
from the runs of the row on one data set each (``where``), on stores built by hand."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import ColumnSpec, LeaderboardSpec, RowSpec, build_tables
from harness.results.render import render, render_leaderboard
from harness.results.store import ResultStore, RunRecord
from harness.util.errors import UsageError
from tests.conftest import run_cli

LEADERBOARDS = Path(__file__).parent.parent / "leaderboards"

# backbone -> data set -> {seed: score}; "beats" has no ESC-50 run for seed 0, "passt" none
# at all, and no row has a VoxCeleb1 run.
SCORES = {
    "audiomae": {"audioset-embedded": {0: 30.0, 1: 32.0, 2: 34.0}, "esc50": {0: 80, 1: 84, 2: 82}},
    "beats": {"audioset-embedded": {0: 35.0, 1: 36.0, 2: 40.0}, "esc50": {1: 90.0, 2: 86.0}},
    "passt": {"audioset-embedded": {0: 20.0, 1: 22.0}},
}
METRIC = {"audioset-embedded": "map", "esc50": "acc"}


def finetune_record(backbone: str, dataset: str, seed: int, score: float) -> RunRecord:
    run_id = f"{backbone}-{dataset}-{seed}"
    recipe = "small" if dataset == "audioset-embedded" else "esc50"
    return RunRecord(
        run_id=run_id,
        created=run_id,
        config_hash=run_id,
        backbone=backbone,
        method="mae",
        aug="none",
        dataset=dataset,
        protocols="finetune",
        seed=seed,
        config={
            "run": {"seed": seed},
            "backbone": {"name": backbone},
            "method": {"name": "mae"},
            "dataset": {"name": dataset},
            "protocol": {"names": ["finetune"], "finetune": {"recipe": recipe}},
        },
        metrics={f"finetune/{METRIC[dataset]}": score, "finetune/tp_m": 1.5},
        run_dir="",
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


def records() -> list[RunRecord]:
    return [
        finetune_record(backbone, dataset, seed, score)
        for backbone, by_dataset in SCORES.items()
        for dataset, by_seed in by_dataset.items()
        for seed, score in by_seed.items()
    ]


COLUMNS = (
    ColumnSpec("map", "AudioSet-20K mAP", {"dataset": "audioset-embedded"}),
    ColumnSpec("acc", "ESC-50 acc", {"dataset": "esc50"}),
    ColumnSpec("acc", "VoxCeleb1 acc", {"dataset": "voxceleb1"}, note="needs the real data"),
    ColumnSpec("tp_m", "#TP (M)", {"dataset": "audioset-embedded"}),
)


def table4(**changes) -> LeaderboardSpec:
    fields = {
        "title": "Table 4",
        "protocol": "finetune",
        "agg": "both",
        "rows": tuple(RowSpec(b, {"backbone": b}) for b in SCORES),
        "columns": tuple(c.table_key for c in COLUMNS),
        "column_specs": COLUMNS,
        "baseline": "audiomae",
    } | changes
    return LeaderboardSpec(**fields).validated("test")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def test_a_row_holds_each_data_set_in_its_own_column(plugins):
    best, mean = build_tables(table4(), records(), plugins)
    assert list(mean.labels["row"]) == ["audiomae", "beats", "passt"]  # one row per backbone
    assert [c.key for c in mean.columns] == [
        "map@audioset-embedded",
        "acc@esc50",
        "acc@voxceleb1",
        "tp_m@audioset-embedded",
    ]
    assert list(mean.labels["seeds"]) == [3, 3, 2]
    for row, backbone in enumerate(SCORES):
        for dataset, key in (
            ("audioset-embedded", "map@audioset-embedded"),
            ("esc50", "acc@esc50"),
        ):
            by_seed = SCORES[backbone].get(dataset, {})
            summary = mean.statistics.summaries[row][key]
            assert summary.n == len(by_seed)
            if by_seed:
                assert mean.values.at[row, key] == pytest.approx(np.mean(list(by_seed.values())))
                assert best.values.at[row, key] == max(by_seed.values())  # each cell's best seed
            else:
                assert np.isnan(mean.values.at[row, key]) and np.isnan(best.values.at[row, key])
        assert np.isnan(mean.values.at[row, "acc@voxceleb1"])
    assert mean.values.at[0, "tp_m@audioset-embedded"] == 1.5


def test_the_paired_difference_uses_only_seeds_both_rows_have_in_that_column(plugins):
    _, mean = build_tables(table4(), records(), plugins)
    beats_esc = mean.statistics.comparisons[1]["acc@esc50"]
    reference = SCORES["audiomae"]["esc50"]
    seeds = sorted(SCORES["beats"]["esc50"])  # 1, 2: seed 0 has no BEATs ESC-50 run
    diffs = [SCORES["beats"]["esc50"][s] - reference[s] for s in seeds]
    assert beats_esc.n_pairs == 2
    assert beats_esc.diff == pytest.approx(np.mean(diffs))
    expected = stats.ttest_rel([SCORES["beats"]["esc50"][s] for s in seeds],
                               [reference[s] for s in seeds])  # fmt: skip
    assert beats_esc.p == pytest.approx(expected.pvalue)
    beats_map = mean.statistics.comparisons[1]["map@audioset-embedded"]
    assert beats_map.n_pairs == 3
    assert beats_map.diff == pytest.approx(np.mean([5.0, 4.0, 6.0]))
    assert mean.statistics.comparisons[2]["acc@esc50"].n_pairs == 0  # PaSST has no ESC-50 run


def test_every_format_renders_the_one_table(plugins):
    spec = table4()
    tables = build_tables(spec, records(), plugins)
    markdown = render(spec, tables, "markdown")
    best_row, mean_row = (line for line in markdown.splitlines() if line.startswith("| passt"))
    assert best_row.split("|")[3].strip() == "22.00"
    row = mean_row
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "–" and cells[4] == "–"  # no ESC-50, no VoxCeleb1 run
    assert cells[2].startswith("21.00 ±") and cells[2].endswith("(n=2)")
    assert "AudioSet-20K mAP (%) ↑" in markdown and "ESC-50 acc (%) ↑" in markdown
    assert "VoxCeleb1 acc: no runs here; needs the real data" in markdown
    latex = render(spec, tables, "latex")
    assert "ESC-50 acc (\\%) $\\uparrow$" in latex and "needs the real data" in latex
    rows = list(csv.DictReader(io.StringIO(render(spec, tables, "csv"))))
    means = [r for r in rows if r["aggregate"].startswith("Mean")]
    assert [r["row"] for r in means] == ["audiomae", "beats", "passt"]
    assert float(means[1]["acc@esc50 (%)"]) == pytest.approx(88.0)
    assert means[1]["acc@esc50_n"] == "2" and means[2]["acc@esc50 (%)"] == ""
    doc = json.loads(render(spec, tables, "json"))
    mean_json = doc["tables"][1]
    assert mean_json["rows"][2]["values"]["acc@esc50"] is None
    assert mean_json["rows"][0]["values"]["map@audioset-embedded"] == pytest.approx(32.0)
    assert doc["spec"]["columns"][1]["where"] == {"dataset": "esc50"}
    assert any("needs the real data" in n for n in doc["tables"][0]["notes"])
    html = render(spec, tables, "html", records())
    assert "ESC-50 acc" in html and "needs the real data" in html


def test_a_cell_with_runs_of_two_configs_is_an_error(plugins):
    doubled = [*records(), _with_recipe(finetune_record("beats", "esc50", 0, 70.0), "small")]
    with pytest.raises(UsageError, match="row 'beats', column 'acc@esc50': its runs differ"):
        build_tables(table4(), doubled, plugins)


def _with_recipe(record: RunRecord, recipe: str) -> RunRecord:
    record.config["protocol"]["finetune"]["recipe"] = recipe
    return record


def test_spec_file_with_column_tables(tmp_path, plugins):
    path = tmp_path / "t4.toml"
    path.write_text(
        'protocol = "finetune"\nbaseline = "audiomae"\n'
        'columns = ["tp_m", { metric = "acc", label = "ESC-50", where = { dataset = "esc50" } }]\n'
        '[[rows]]\nlabel = "audiomae"\nmatch = { backbone = "audiomae" }\n'
    )
    spec = LeaderboardSpec.from_file(path)
    assert spec.columns == ("tp_m", "acc@esc50")
    store = ResultStore(tmp_path / "runs.sqlite")
    for record in records():
        store.add(record)
    markdown = render_leaderboard(spec, store, plugins, "markdown")
    assert "ESC-50 (%) ↑" in markdown and "82.00 ± " in markdown
    for text, message in (
        ('columns = [{ label = "x" }]', r"columns\[0\] needs 'metric'"),
        ('columns = [{ metric = "acc", wher = {} }]', r"unknown key 'wher' in columns\[0\]"),
        ('columns = [{ metric = "acc", where = "esc50" }]', r"columns\[0\].where must be a table"),
        (
            'columns = [{ metric = "acc", where = { dataset = "a" } }, '
            '{ metric = "acc", where = { dataset = "a" } }]',
            "two columns are named 'acc@a'",
        ),
        (
            'columns = [{ metric = "acc", where = { dataset = "a" } }]',
            "need named \\[\\[rows\\]\\]",
        ),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(f'protocol = "finetune"\n{text}\n')
        with pytest.raises(UsageError, match=message):
            LeaderboardSpec.from_file(bad)


def test_table4_spec_parses_with_a_column_per_data_set(tmp_path):
    spec = LeaderboardSpec.from_file(LEADERBOARDS / "fewshot_finetune.toml")
    by_key = {c.table_key: c for c in spec.column_specs}
    assert list(by_key) == ["as20k_map", "esc50_acc", "vox1_acc", "scv2_acc", "tp_m", "prior_map"]
    assert by_key["esc50_acc"].where == {"dataset": ["fewshot-embedded", "esc50"]}
    scv2 = {"dataset": ["speech-commands-embedded", "speech-commands"]}
    assert by_key["scv2_acc"].where == scv2
    assert by_key["vox1_acc"].where == {"dataset": ["voxceleb1-embedded", "voxceleb1"]}
    assert spec.scoped and spec.baseline in {row.label for row in spec.rows}


def test_dry_run_of_the_table4_sweep_covers_every_embedded_set(tmp_path):
    result = run_cli(
        "sweep", str(LEADERBOARDS / "fewshot_finetune.toml"), "--dry-run",
        "--out", str(tmp_path / "runs"), "--store", str(tmp_path / "runs.sqlite"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    cells = [line for line in output.splitlines() if "seed=" in line and "would run" in line]
    assert len(cells) == 40  # 5 rows x 4 data sets x 2 seeds
    embedded = ("audioset", "fewshot", "voxceleb1", "speech-commands")
    for name in embedded:
        assert sum(f"dataset={name}-embedded," in c for c in cells) == 10, name
