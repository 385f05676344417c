"""A sweep never reports a stored cell as failed (issue 23, item 7): the results store
decides. A cell whose run committed and then raised (inline), or whose job's status says
it failed (a job that exits non-zero after committing, a status file missing or late), or
that another sweep stored meanwhile, is counted as stored, with one warning line saying the
status and the store disagree. A cell that is not in the store still fails."""

from __future__ import annotations

import textwrap

import pytest

import harness.cli.sweep as sweep_module
from harness.cli import executors
from harness.cli.executors import CellStatus, Driver, ExecutorOptions
from harness.cli.report import SweepProgress
from harness.results.store import ResultStore
from tests.conftest import TOY_PLUGIN
from tests.test_hardening import make_tones


def toy_sweep(tmp_path):
    make_tones(tmp_path / "tones")
    spec = tmp_path / "s.toml"
    spec.write_text(
        textwrap.dedent(
            f"""
            [sweep]
            seeds = [0]
            [sweep.base]
            backbone = {{ name = "toy" }}
            dataset = {{ name = "toy-tones", root = "{tmp_path / "tones"}" }}
            run = {{ epochs = 1, batch_size = 8 }}
            [[sweep.grid]]
            method = ["ce"]
            """
        )
    )
    return spec


def sweep(tmp_path, capsys, spec):
    argv = ["--plugin", str(TOY_PLUGIN), "sweep", str(spec), "--out", str(tmp_path / "runs")]
    try:
        sweep_module_main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sweep_module_main(argv):
    from harness.cli.main import main

    main(argv)


@pytest.mark.parametrize(
    "failure", [OSError("cannot remove .partial"), RuntimeError("a hook failed after commit")]
)
def test_an_inline_run_that_raises_after_its_commit_is_stored_not_failed(
    tmp_path, capsys, monkeypatch, failure
):
    real = sweep_module.run_experiment

    def commits_then_raises(*args, **kwargs):
        real(*args, **kwargs)
        raise failure

    monkeypatch.setattr(sweep_module, "run_experiment", commits_then_raises)
    code, out, err = sweep(tmp_path, capsys, toy_sweep(tmp_path))
    assert code == 0, err
    assert "1 stored, 0 already stored, 0 failed" in out
    (warning,) = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert "method=ce, seed=0: the run raised an error" in warning and str(failure) in warning
    assert warning.endswith("but its run is in the store; counted as stored (the store decides)")
    assert len(ResultStore(tmp_path / "runs" / "results.sqlite").run_ids()) == 1


def test_an_inline_run_that_fails_before_storing_still_fails(tmp_path, capsys, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("no luck")

    monkeypatch.setattr(sweep_module, "run_experiment", fails)
    code, out, err = sweep(tmp_path, capsys, toy_sweep(tmp_path))
    assert code == 2
    assert "0 stored, 0 already stored, 1 failed" in out and "WARNING" not in err


class FakeJob:
    job_id = "123"

    def done(self) -> bool:
        return True


def stored_record(tmp_path, capsys, monkeypatch):
    """One real run stored by a sweep in ``tmp_path/runs``: (its config hash, the store)."""
    code, _, err = sweep(tmp_path, capsys, toy_sweep(tmp_path))
    assert code == 0, err
    store = ResultStore(tmp_path / "runs" / "results.sqlite")
    (record,) = store.records()
    return record.config_hash, store


@pytest.mark.parametrize(
    "status",
    [
        CellStatus("failed", "ValueError: exit code 1 after commit; log: job.err"),
        CellStatus("failed", "job ended without a status file; log: job.err"),
        CellStatus("finished"),
    ],
    ids=["non-zero exit", "status file missing", "status late"],
)
def test_the_driver_counts_a_stored_cell_as_stored_whatever_its_job_says(
    tmp_path, capsys, monkeypatch, status
):
    config_hash, store = stored_record(tmp_path, capsys, monkeypatch)
    monkeypatch.setattr(executors, "job_status", lambda entry, slurm: status)
    monkeypatch.setattr(executors, "slurm_states", lambda ids: {})
    cell = executors.Cell("method=ce, seed=0", config_hash, {}, str(tmp_path / "runs"), [], [])
    driver = Driver(
        ExecutorOptions(executor="local"),
        tmp_path / "jobs",
        "s",
        tmp_path / "state.json",
        {config_hash: {"executor": "local", "job_id": "123"}},
        store,
        tmp_path / "runs",
        SweepProgress(1, None),
    )
    driver.active[config_hash] = (cell, FakeJob())
    driver.poll()
    err = capsys.readouterr().err
    assert driver.stored == ["method=ce, seed=0"] and driver.failed == []
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    if status.state == "failed":
        (warning,) = warnings
        assert f"its job reported failure ({status.detail})" in warning
    else:
        assert warnings == []


def test_the_driver_still_fails_a_cell_that_is_not_stored(tmp_path, capsys, monkeypatch):
    store = ResultStore(tmp_path / "results.sqlite")
    monkeypatch.setattr(executors, "job_status", lambda e, s: CellStatus("failed", "boom"))
    monkeypatch.setattr(executors, "slurm_states", lambda ids: {})
    cell = executors.Cell("x", "abcd", {}, str(tmp_path / "runs"), [], [])
    driver = Driver(
        ExecutorOptions(executor="local"),
        tmp_path / "jobs",
        "s",
        tmp_path / "state.json",
        {"abcd": {"executor": "local", "job_id": "1"}},
        store,
        tmp_path / "runs",
        SweepProgress(1, None),
    )
    driver.active["abcd"] = (cell, FakeJob())
    driver.poll()
    assert driver.failed == [("x", "boom")] and driver.stored == []
