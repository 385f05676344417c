"""Sweep-spec field types (issue 23, item 3): every field of a sweep spec's ``[sweep]`` and
``[executor]`` tables is read with its type checked (the leaderboard spec's mechanism,
:class:`harness.util.specs.SpecFile`): a wrong type is one line naming the file, the field
and the type it must have, exit 2, with nothing run and nothing written.
"""

from __future__ import annotations

import pytest

from harness.cli.executors import option_table
from harness.cli.sweep import expand
from harness.registry.config import read_toml
from harness.util.errors import UsageError
from harness.util.specs import SpecFile
from tests.test_hardening import run_main

SWEEP_CASES = [
    ("seeds = 5", "sweep.seeds must be an array, got 5"),
    ('seeds = ["a"]', "sweep.seeds[0] must be an integer, got 'a'"),
    ("seeds = [1.5]", "sweep.seeds[0] must be an integer, got 1.5"),
    ("seeds = [true]", "sweep.seeds[0] must be an integer, got True"),
    ("seeds = []", "sweep.seeds must be a non-empty array of integers, got []"),
    ('grid = "x"', "sweep.grid must be an array, got 'x'"),
    ("grid = [1]", "sweep.grid[0] must be a table, got 1"),
    ('[sweep.grid]\nmethod = ["ce"]', "sweep.grid must be an array of tables ([[sweep.grid]])"),
    ('[[sweep.grid]]\nmethod = "ce"', "sweep.grid[0].method must be a non-empty array of values"),
    ("[[sweep.grid]]\nmethod = []", "sweep.grid[0].method must be a non-empty array of values"),
    (
        "[[sweep.grid]]\nmethod = [{a = 1}]",
        "sweep.grid[0].method[0] must be a string, a number, true/false or an array",
    ),
    ("[[sweep.grid]]\nbogus = [1]", "sweep.grid[0].bogus names no config field"),
    ('[[sweep.grid]]\n"runn.lr" = [0.1]', "sweep.grid[0].runn.lr names no config field"),
    ('base = "x"', "sweep.base must be a table, got 'x'"),
    ("base = {run = 5}", "sweep.base.run must be a table, got 5"),
    ("base = {method = [1]}", "sweep.base.method must be a table, got [1]"),
]


def sweep_spec(tmp_path, body: str):
    text = f"[sweep]\n{body}\n" if not body.startswith("[") else body + "\n"
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("body", "message"), SWEEP_CASES, ids=[b for b, _ in SWEEP_CASES])
def test_sweep_fields_of_the_wrong_type_are_one_line(tmp_path, body, message):
    path = sweep_spec(tmp_path, body)
    with pytest.raises(UsageError) as info:
        expand(read_toml(path)["sweep"], str(path))
    assert str(info.value) == f"sweep spec {path}: {message}" or str(info.value).startswith(
        f"sweep spec {path}: {message}"
    ), str(info.value)


def test_valid_grids_of_every_value_type_still_expand(tmp_path):
    path = sweep_spec(
        tmp_path,
        "seeds = [0, 1]\nbase = {run = {epochs = 1}}\n[[sweep.grid]]\n"
        'aug = [["multidir"], []]\n"run.compile" = [true, false]\n"method.alpha" = [0.1, 1]',
    )
    points = expand(read_toml(path)["sweep"], str(path))
    assert len(points) == 2 * 2 * 2 * 2
    _, raw = points[0]
    assert raw["run"] == {"epochs": 1, "compile": True, "seed": 0}
    assert raw["aug"] == {"names": ["multidir"]} and raw["method"] == {"alpha": 0.1}


EXECUTOR_CASES = [
    ('jobs = "x"', "executor.jobs", "an integer", "'x'"),
    ("jobs = true", "executor.jobs", "an integer", "True"),
    ("max_parallel = [1]", "executor.max_parallel", "an integer", "[1]"),
    ("time = 1.5", "executor.time", "an integer", "1.5"),
    ("sbatch = 5", "executor.sbatch", "an array of strings", "5"),
    ("sbatch = [5]", "executor.sbatch", "an array of strings", "[5]"),
    ("executor = 5", "executor.executor", "a string", "5"),
    ("partition = []", "executor.partition", "a string", "[]"),
]


@pytest.mark.parametrize(
    ("body", "key", "wanted", "got"), EXECUTOR_CASES, ids=[c[0] for c in EXECUTOR_CASES]
)
def test_executor_fields_of_the_wrong_type_are_one_line(tmp_path, body, key, wanted, got):
    path = tmp_path / "spec.toml"
    path.write_text(f"[executor]\n{body}\n[sweep]\n")
    with pytest.raises(UsageError) as info:
        option_table(read_toml(path)["executor"], str(path))
    assert str(info.value) == f"{key} in {path} has the wrong type: must be {wanted}, got {got}"


@pytest.mark.parametrize(
    "text",
    ["[sweep]\nseeds = 5\n", "[sweep]\nbase = 'x'\n", "[executor]\nsbatch = 5\n[sweep]\n"],
    ids=["seeds", "base", "sbatch"],
)
def test_the_command_line_runs_and_writes_nothing(tmp_path, capsys, text):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    code, err = run_main(["sweep", str(spec), "--out", str(tmp_path / "runs")], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and str(spec) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


def test_spec_file_reads_booleans_as_neither_numbers_nor_strings():
    spec = SpecFile({"n": True, "s": False, "b": True}, "f.toml", "sweep spec")
    with pytest.raises(UsageError, match="sweep spec f.toml: n must be an integer, got True"):
        spec.get("n", int, 0)
    with pytest.raises(UsageError, match="s must be a string, got False"):
        spec.get("s", str, "")
    assert spec.get("b", bool, False) is True
