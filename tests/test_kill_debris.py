"""Kill debris that heals (issue 23, item 5): after SIGKILL past the commit point the
in-progress folder ``OUT/.partial/<id>`` of a stored run is reported by ``store check``,
removed by ``--repair`` (and by the next run), never listed by ``runs --partial``, and
``--resume-if-any`` never stores a second row for the same run."""

from __future__ import annotations

import signal

import pytest

from harness.results.store import ResultStore, check_store, committed_partials
from tests.conftest import run_cli, toy_run_args
from tests.test_hardening import make_tones


def killed_after(stage: str, tmp_path):
    make_tones(tmp_path / "tones")
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1"), env={"HARNESS_TEST_KILL_AT": stage})
    assert result.returncode == -signal.SIGKILL, result.stderr
    return tmp_path / "runs"


@pytest.mark.parametrize("stage", ["commit", "renamed"])
def test_a_run_killed_after_its_commit_is_never_interrupted_nor_stored_twice(tmp_path, stage):
    out = killed_after(stage, tmp_path)
    store = ResultStore(out / "results.sqlite")
    (run_id,) = store.run_ids()
    assert (out / ".partial" / run_id / "state.json").is_file()  # the debris
    listed = run_cli("runs", "--partial", "--out", str(out))
    assert listed.returncode == 0 and run_id not in listed.stdout, listed.stdout
    assert f"no interrupted runs in {out}" in listed.stdout
    check = run_cli("store", "check", "--out", str(out))
    assert check.returncode == 2 and "in-progress folder of a stored run (to remove)" in (
        check.stdout + check.stderr
    ), (check.stdout, check.stderr)
    resumed = run_cli(*toy_run_args(tmp_path, "--epochs", "1", "--resume-if-any"))
    assert resumed.returncode == 0, resumed.stderr
    ids = store.run_ids()
    assert len(ids) == 2 and run_id in ids  # the killed run once, and a fresh one
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    assert check_store(out, store) == []


def test_store_check_repair_removes_the_in_progress_folder_of_a_stored_run(tmp_path):
    out = tmp_path / "runs"
    (out / ".partial" / "20260101-000000-000000-aaaa-bbbb").mkdir(parents=True)
    (out / ".partial" / "20260101-000000-000000-cccc-dddd").mkdir()
    (out / "20260101-000000-000000-cccc-dddd").mkdir()
    (out / "20260101-000000-000000-cccc-dddd" / "record.json").write_text("{}")
    store = ResultStore(out / "results.sqlite")
    assert committed_partials(out, {"20260101-000000-000000-aaaa-bbbb": "x"}) == [
        out / ".partial" / "20260101-000000-000000-aaaa-bbbb",
        out / ".partial" / "20260101-000000-000000-cccc-dddd",
    ]
    problems = check_store(out, store)
    assert any("in-progress folder of a stored run (to remove)" in p for p in problems)
    assert (out / ".partial" / "20260101-000000-000000-cccc-dddd").is_dir()  # report only
    check_store(out, store, repair=True)
    assert not (out / ".partial" / "20260101-000000-000000-cccc-dddd").exists()
    assert (out / ".partial" / "20260101-000000-000000-aaaa-bbbb").is_dir()  # not stored: kept
