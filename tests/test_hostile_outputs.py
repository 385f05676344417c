"""Issue 23 item 6: leaderboards cannot be broken by what runs store.

LaTeX (``\\input{...}``, ``%``, ``&``, ``_``, line breaks), Markdown (``|``, line breaks)
and CSV (cells a spreadsheet would run as formulas) are escaped; a malformed
``metrics_json`` row is reported and skipped (and listed by ``store check``).
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import warnings

import pytest

from harness.cli.main import main
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables
from harness.results.render import render
from harness.results.store import ResultStore, RunRecord
from tests.test_leaderboard import record

HOSTILE_METHOD = "\\input{/etc/passwd}%&_x"
HOSTILE_AUG = "a|b\nc"


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def hostile_records() -> list[RunRecord]:
    first = record("r1", "ce", "none", 0, a=1.0, s4=1.5)
    second = record("r2", "icl", "multidir", 0, a=0.7, s4=1.2)
    second.method, second.aug = HOSTILE_METHOD, HOSTILE_AUG
    second.config["method"] = {"name": HOSTILE_METHOD}
    third = record("r3", "icl", "multidir", 0, a=0.8, s4=1.1)
    third.method, third.aug = "@SUM(A1)", "+x"
    return [first, second, third]


def rendered(plugins, fmt: str, **spec) -> str:
    board = LeaderboardSpec(agg="best", **spec)
    return render(board, build_tables(board, hostile_records(), plugins), fmt)


def test_latex_output_escapes_every_label_and_keeps_comments_on_their_line(plugins):
    text = rendered(plugins, "latex", title="T\n\\input{/etc/shadow}")
    lines = text.splitlines()
    body = [line for line in lines if not line.startswith("%")]
    assert not any(re.search(r"(?<!textbackslash\{\})input\\\{|\\input\{", line) for line in body)
    assert "\\textbackslash{}input\\{/etc/passwd\\}\\%\\&\\_x" in text
    assert not any(line.lstrip().startswith("\\input") for line in lines)
    rows = [line for line in body if line.rstrip().endswith("\\\\")]
    header = rows[0]
    unescaped_amp = re.compile(r"(?<!\\)&")
    assert all(len(unescaped_amp.findall(r)) == len(unescaped_amp.findall(header)) for r in rows)
    assert all(re.search(r"(?<!\\)%", line) is None for line in body)
    assert "a|b c" in text


def test_markdown_cells_cannot_split_or_break_the_table(plugins):
    text = rendered(plugins, "markdown", title="T\n# injected")
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    cells = re.compile(r"(?<!\\)\|")
    widths = {len(cells.findall(line)) for line in table}
    assert len(widths) == 1 and len(table) == 2 + 3  # header, rule, three runs
    assert "a\\|b c" in text and "# injected" not in [line.strip() for line in lines]
    assert lines[0] == "# T # injected"


def test_csv_text_cells_that_start_like_formulas_are_neutralised(plugins):
    rows = list(csv.DictReader(io.StringIO(rendered(plugins, "csv"))))
    assert len(rows) == 3
    text_cells = [v for row in rows for k, v in row.items() if k in ("method", "aug", "params")]
    assert not [v for v in text_cells if v[:1] in ("=", "+", "-", "@")]
    assert {"'@SUM(A1)", "'+x"} <= set(text_cells)
    assert float(rows[0]["logloss/overall"]) > 0  # numbers stay numbers


# --- malformed rows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{not json", "metrics_json is not JSON"),
        ("[1, 2]", "metrics_json is a list, not a table"),
        ('{"device-logloss/logloss/a": "high"}', "metrics_json holds a non-number"),
        ('{"device-logloss/logloss/a": NaN}', "metrics_json holds a non-finite value"),
    ],
)
def test_a_malformed_metrics_row_is_skipped_reported_and_found_by_store_check(
    tmp_path, capsys, bad, reason
):
    out = tmp_path / "runs"
    out.mkdir()
    store = ResultStore(out / "results.sqlite")
    good, broken = record("good", "ce", "none", 0, 1.0, 1.5), record("bad", "icl", "none", 0, 1, 1)
    for run in (good, broken):
        run.run_dir = str(out / run.run_id)
        (out / run.run_id).mkdir()
        store.add(run)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET metrics_json = ? WHERE run_id = ?", (bad, "bad"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [r.run_id for r in store.records()] == ["good"]
    [message] = [str(w.message) for w in caught]
    assert f"stored run bad: {reason}" in message and "skipped" in message

    for argv in (["leaderboard", "--store", str(store.path)], ["runs", "--out", str(out)]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(argv)  # exits normally: the good run is listed
        assert "ce" in capsys.readouterr().out

    with pytest.raises(SystemExit) as info:
        main(["store", "check", "--out", str(out)])
    assert info.value.code == 2
    assert (
        f"malformed row (left as is; delete the run or fix the row): stored run bad: {reason}"
        in (capsys.readouterr().out)
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("metrics", {"device-logloss/logloss/a": "0.5"}, "metrics holds a non-number"),
        ("metrics", [0.5], "metrics is a list, not a table"),
        ("environment", "x", "environment is a str, not a table"),
    ],
)
def test_a_tampered_run_folder_is_not_ingested(tmp_path, field, value, reason):
    from harness.results.store import ingest, write_json

    out = tmp_path / "runs"
    folder = out / "r1"
    folder.mkdir(parents=True)
    run = record("r1", "ce", "none", 0, 1.0, 1.5)
    data = {k: getattr(run, k) for k in RunRecord.__dataclass_fields__ if k != "config"}
    write_json(folder / "record.json", {**data, field: value})
    write_json(folder / "config.json", run.config)
    store = ResultStore(out / "results.sqlite")
    added, problems = ingest(out, store)
    assert added == [] and store.records() == []
    [problem] = problems
    assert f"run folder {folder}: record.json: {reason}" in problem
