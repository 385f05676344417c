"""HTML and JSON leaderboards; the page checked in a real headless Chromium."""

import dataclasses
import json
import re

import pytest

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, RowSpec, build_tables
from harness.results.render import render
from tests.browser import Browser, chromium_path
from tests.test_leaderboard import RECORDS


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def test_json_has_every_row_with_values_and_errors(plugins):
    tables = build_tables(LeaderboardSpec(), RECORDS, plugins)
    doc = json.loads(render(LeaderboardSpec(), tables, "json"))
    best, mean = doc["tables"]
    assert [t["title"] for t in doc["tables"]] == ["Best of seeds", "Mean over seeds ± 95 % CI"]
    assert best["rows"][0]["values"]["logloss/a"] == pytest.approx(0.8)  # ce seed 1
    icl = mean["rows"][1]
    assert icl["values"]["logloss/s4"] == pytest.approx(1.2)
    assert icl["errors"]["logloss/s4"] == pytest.approx(0.2828427, rel=1e-6)
    assert mean["rows"][2]["labels"]["seeds"] == 1
    assert mean["rows"][2]["errors"]["logloss/s4"] is None  # one seed: no spread
    assert doc["spec"]["protocol"] == "device-logloss"


def test_html_is_self_contained(plugins):
    spec = LeaderboardSpec(title="T <3>")
    page = render(spec, build_tables(spec, RECORDS, plugins), "html", RECORDS)
    assert page.startswith("<!DOCTYPE html>") and "<h1>T &lt;3&gt;</h1>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "<link" not in page
    assert page.count("<table>") == 2 and page.count("<svg") == 2


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    browser = Browser(executable)
    yield browser
    browser.close()


ROWS = "Array.from(document.querySelectorAll('table')[0].tBodies[0].rows, r => {})"
FIRST_COLUMN = ROWS.format("r.cells[0].textContent")
S4_COLUMN = ROWS.replace("{}", "Number(r.cells[{i}].dataset.v)")


def test_page_loads_without_errors_sorts_and_screenshots(browser, plugins, tmp_path):
    spec = LeaderboardSpec(
        title="Device log-loss",
        rows=(
            RowSpec("PaSST", {"method": "ce", "aug": "none"}),
            RowSpec("ICL a=0.2", {"method": "icl", "method.alpha": 0.2}),
            RowSpec("ICL a=1.5", {"method": "icl", "method.alpha": 1.5}),
        ),
    )
    page = tmp_path / "board.html"
    page.write_text(render(spec, build_tables(spec, RECORDS, plugins), "html", RECORDS))
    browser.open(page)
    assert browser.errors() == []
    assert browser.evaluate(FIRST_COLUMN) == ["PaSST", "ICL a=0.2", "ICL a=1.5"]
    heads = browser.evaluate(
        "Array.from(document.querySelectorAll('table')[0].tHead.rows[0].cells, c => c.textContent)"
    )
    s4 = next(i for i, h in enumerate(heads) if h.startswith("Unseen S4") or " S4" in h)
    click = f"document.querySelectorAll('table')[0].tHead.rows[0].cells[{s4}].click()"
    browser.evaluate(click)  # ascending: best seeds' S4 log-loss 1.0, 1.2, 2.0
    assert browser.evaluate(FIRST_COLUMN) == ["ICL a=0.2", "PaSST", "ICL a=1.5"]
    assert browser.evaluate(S4_COLUMN.format(i=s4)) == [1.0, 1.2, 2.0]
    browser.evaluate(click)  # descending
    assert browser.evaluate(FIRST_COLUMN) == ["ICL a=1.5", "PaSST", "ICL a=0.2"]
    shot = tmp_path / "board.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    assert browser.errors() == []


def test_a_script_error_would_be_seen(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>undefinedThing()</script></body></html>")
    browser.open(page)
    assert any("undefinedThing" in e for e in browser.errors())


def test_cli_writes_json_and_html(tmp_path):
    from harness.results.store import ResultStore
    from tests.conftest import run_cli

    store = ResultStore(tmp_path / "store.sqlite")
    for record in RECORDS:
        store.add(record)
    result = run_cli("leaderboard", "--store", str(store.path), "--format", "json", "--agg", "mean")
    assert result.returncode == 0, result.stderr
    [table] = json.loads(result.stdout)["tables"]
    assert [row["labels"]["seeds"] for row in table["rows"]] == [2, 2, 1]
    page = tmp_path / "board.html"
    result = run_cli(
        "leaderboard", "--store", str(store.path), "--format", "html", "--output", str(page)
    )
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert "--format html" in text and text.count("<table>") == 2


def test_fewshot_grids_become_n_and_k_curves(plugins):
    import dataclasses

    from harness.results.html import episode_figures

    runs = []
    for seed, shift in ((0, 0.0), (1, 5.0)):
        grid = {f"acc_{n}way{k}shot": 80 - 4 * n + 3 * k + shift for n in (5, 10) for k in (1, 5)}
        grid |= {f"ci_{n}way{k}shot": 1.0 for n in (5, 10) for k in (1, 5)}
        metrics = {f"fewshot/{k}": v for k, v in {**grid, "acc": grid["acc_5way1shot"]}.items()}
        runs.append(dataclasses.replace(RECORDS[0], run_id=f"f{seed}", seed=seed, metrics=metrics))
    spec = LeaderboardSpec(protocol="fewshot", agg="best")
    vs_n, vs_k = episode_figures(spec, runs)
    assert "accuracy vs N (K = 1)" in vs_n and "accuracy vs K (N = 5)" in vs_k
    # one point per N at K = 1 and per K at N = 5, from the best seed
    assert vs_n.count("<circle") == 2 and vs_k.count("<circle") == 2
    page = render(spec, build_tables(spec, runs, plugins), "html", runs)
    assert page.count("<svg") == 3  # the table's bars and both curves


@pytest.mark.parametrize(("count", "slanted"), [(3, False), (6, False), (13, True)])
def test_many_bar_categories_are_slanted_so_their_names_do_not_overlap(count, slanted):
    from harness.results.html import Series, svg_chart

    names = [f"device {i}" for i in range(count)]
    series = [Series("row", list(range(count)), [1.0] * count, [None] * count)]
    svg = svg_chart("t", series, "column", "value", categories=names)
    labels = re.findall(r"<text [^>]*>device \d+</text>", svg)
    assert len(labels) == count
    assert all(("rotate(-35" in label) == slanted for label in labels)
    assert ('height="390"' in svg) == slanted  # the chart grows to hold the slanted names


def test_a_table_of_log_loss_and_accuracy_gets_one_figure_per_unit(plugins):
    from harness.results.html import unit_parts

    records = [dataclasses.replace(r, metrics=r.metrics | {"device-logloss/acc/overall": 0.5})
               for r in RECORDS]  # fmt: skip
    spec = LeaderboardSpec(columns=("logloss/overall", "acc/overall", "logloss/a"), agg="best")
    [best] = build_tables(spec, records, plugins)
    parts = unit_parts(best)
    assert [[c.key for c in part.columns] for part in parts] == [
        ["logloss/overall", "logloss/a"],
        ["acc/overall"],
    ]
    assert [part.columns[0].unit for part in parts] == ["", "%"]
    page = render(spec, [best], "html", records)
    assert page.count("<svg") == page.count("<figure>") == 2
    assert "log-loss (nats) (lower is better)" in page and "accuracy (%) (higher is better)" in page


def test_more_than_two_metrics_of_one_unit_share_a_figure_titled_by_the_unit(plugins):
    from harness.results.html import unit_parts, y_axis_title

    keys = ("acc/a", "acc/s4", "acc/overall")
    records = [
        dataclasses.replace(r, metrics=r.metrics | {f"device-logloss/{k}": 0.5 for k in keys})
        for r in RECORDS
    ]
    spec = LeaderboardSpec(columns=(*keys, "logloss/overall"), agg="best")
    [best] = build_tables(spec, records, plugins)
    assert [[c.key for c in part.columns] for part in unit_parts(best)] == [
        ["acc/a", "acc/s4", "acc/overall"],
        ["logloss/overall"],
    ]
    part = unit_parts(best)[0]
    assert y_axis_title(part) == "accuracy (%) (higher is better)"  # one metric family
    renamed = dataclasses.replace(
        part, columns=[dataclasses.replace(c, key=f"m{i}") for i, c in enumerate(part.columns)]
    )
    assert y_axis_title(renamed) == "percent (higher is better)"  # three: the unit's name
