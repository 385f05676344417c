"""One unit per metric: accuracies in percent with the unit in every header, whatever the
protocol stores (device-logloss a fraction, fewshot a percentage); chance lines in the HTML
figures at 1/C and ln C."""

import dataclasses
import json
import math

import pytest

import harness.notebook as hn
from harness.api import Column, log_value_text, percent_of_fraction
from harness.cli.report import main_metric
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables
from harness.results.render import render_leaderboard
from harness.results.store import ResultStore, RunRecord


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def make_record(run_id: str, protocol: str, metrics: dict, environment: dict) -> RunRecord:
    return RunRecord(
        run_id=run_id, created=run_id, config_hash=run_id, backbone="passt", method="ce",
        aug="none", dataset="tau22-embedded", protocols=protocol, seed=0,
        config={"run": {"seed": 0}, "method": {"name": "ce"}, "aug": {"names": ["none"]}},
        metrics={f"{protocol}/{k}": v for k, v in metrics.items()}, run_dir="",
        harness_version="0", git_commit="", environment=environment, duration_s=1.0,
    )  # fmt: skip


DEVICE = make_record(
    "d1", "device-logloss", {"logloss/overall": 1.5, "acc/overall": 0.426}, {"classes": 4}
)
FEWSHOT = make_record("f1", "fewshot", {"acc": 55.25, "ci": 1.5}, {})


@pytest.fixture
def store(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(DEVICE)
    store.add(FEWSHOT)
    return store


DEVICE_ACC = LeaderboardSpec(metric="acc", agg="best")
FEW = LeaderboardSpec(protocol="fewshot", agg="best")


# ruff: noqa: E501
@pytest.mark.parametrize(
    ("fmt", "device_texts", "fewshot_texts"),
    [
        ("markdown", ["Overall acc. (%) ↑", " 42.6 |"], ["few-shot accuracy (%) ↑", "55.25 ± 1.50"]),
        ("latex", ["Overall acc. (\\%) $\\uparrow$", " 42.6 "], ["few-shot accuracy (\\%)", "55.25"]),
        ("csv", ["acc/overall (%)", ",42.6\n"], ["acc (%)", "acc_ci (%)", ",55.25,1.5,"]),
        ("html", ["Overall acc. (%) ↑", ">42.60<"], ["few-shot</span> accuracy (%) ↑", ">55.25<"]),
    ],
)  # fmt: skip
def test_every_format_shows_accuracy_in_percent_with_the_unit(
    plugins, store, fmt, device_texts, fewshot_texts
):
    device = render_leaderboard(DEVICE_ACC, store, plugins, fmt)
    fewshot = render_leaderboard(FEW, store, plugins, fmt)
    for text in device_texts:
        assert text in device
    for text in fewshot_texts:
        assert text in fewshot
    assert "0.426" not in device


def test_json_values_are_in_the_unit_each_column_states(plugins, store):
    device = json.loads(render_leaderboard(DEVICE_ACC, store, plugins, "json"))["tables"][0]
    fewshot = json.loads(render_leaderboard(FEW, store, plugins, "json"))["tables"][0]
    overall = next(c for c in device["columns"] if c["key"] == "acc/overall")
    assert (overall["unit"], overall["heading"]) == ("%", "Overall acc. (%)")
    assert device["rows"][0]["values"]["acc/overall"] == pytest.approx(42.6)
    assert fewshot["columns"][0]["unit"] == "%"
    assert fewshot["rows"][0]["values"]["acc"] == pytest.approx(55.25)


def test_runs_main_metric_and_the_notebook_frame_state_the_unit(plugins, store):
    probe = make_record("p1", "device-probe", {"accuracy": 0.25}, {})
    assert main_metric(probe, plugins) == "device-probe/accuracy 25 %"
    assert main_metric(FEWSHOT, plugins) == "fewshot/acc 55.25 %"
    assert main_metric(DEVICE, plugins) == "device-logloss/logloss/overall 1.5"
    frame = hn.runs_frame(store.path)
    assert frame["device-logloss/acc/overall (%)"].dropna().tolist() == pytest.approx([42.6])
    assert frame["fewshot/acc (%)"].dropna().tolist() == [55.25]
    assert frame["device-logloss/logloss/overall"].dropna().tolist() == [1.5]


def test_column_scales_and_chance_levels():
    acc = percent_of_fraction("acc/a", "A")
    assert acc.shown(0.5) == 50.0 and acc.heading == "A (%)"
    assert acc.chance_level(4) == 25.0
    assert Column("logloss/a", "A", chance="logloss").chance_level(10) == pytest.approx(
        math.log(10)
    )
    assert Column("acc", "accuracy", unit="%").chance_level(4) is None  # no rule: no line


def test_training_log_values_read_as_counts_and_percentages():
    assert log_value_text("queue_filled", 65536.0) == "65536"
    assert log_value_text("valid_acc", 45.123456) == "45.12 %"
    assert log_value_text("lambda", 0.25) == "0.2500"
    assert log_value_text("loss", 2.0) == "2.0000"


def chance_y(page: str) -> tuple[float, str]:
    """The chance line's label in an HTML page's first figure."""
    start = page.index('class="c"/>')
    label = page[start:].split(">", 2)[2].split("<", 1)[0]
    return start, label


def test_html_figures_draw_the_chance_line_at_one_over_c_and_ln_c(plugins, store):
    page = render_leaderboard(DEVICE_ACC, store, plugins, "html")
    assert "chance (4 classes): 25" in page
    logloss = render_leaderboard(LeaderboardSpec(agg="best"), store, plugins, "html")
    assert f"chance (4 classes): {math.log(4):.3g}" in logloss  # 1.39


def test_old_runs_take_the_data_sets_fixed_class_count_or_say_why_not(plugins, tmp_path):
    store = ResultStore(tmp_path / "old.sqlite")
    store.add(dataclasses.replace(DEVICE, environment={}))  # stored before runs had "classes"
    assert "chance (10 classes): 10" in render_leaderboard(DEVICE_ACC, store, plugins, "html")
    other = ResultStore(tmp_path / "other.sqlite")
    other.add(dataclasses.replace(DEVICE, environment={}, dataset="tau22"))
    [table] = build_tables(DEVICE_ACC, other.records(), plugins)
    assert table.chance() is None
    page = render_leaderboard(DEVICE_ACC, other, plugins, "html")
    assert "no chance line: the runs do not record their class count" in page
