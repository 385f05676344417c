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


def test_a_run_killed_right_after_its_in_progress_folder_appears_heals(tmp_path):
    """SIGKILL right after ``OUT/.partial/<id>`` is created (``partial``): the empty folder
    is never listed as interrupted, ``store check`` reports it once it is older than a live
    run could leave it, ``--repair`` removes it, and ``--resume-if-any`` stores one run."""
    import os
    import time

    from harness.results.store import ABANDONED_AFTER_S

    out = killed_after("partial", tmp_path)
    (folder,) = (out / ".partial").iterdir()
    assert not any(folder.iterdir())  # the debris: an empty in-progress folder
    store = ResultStore(out / "results.sqlite")
    assert check_store(out, store) == []  # young: it may be a live run's
    old = time.time() - ABANDONED_AFTER_S - 1
    os.utime(folder, (old, old))
    listed = run_cli("runs", "--partial", "--out", str(out))
    assert listed.returncode == 0 and folder.name not in listed.stdout, listed.stdout
    check = run_cli("store", "check", "--out", str(out))
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert (
        f"in-progress folder of a run killed before its first state (to remove): {folder}"
        in check.stdout + check.stderr
    )
    assert folder.is_dir()  # reported, not touched
    repaired = run_cli("store", "check", "--out", str(out), "--repair")
    assert not folder.exists(), (repaired.stdout, repaired.stderr)
    assert check_store(out, store) == []
    resumed = run_cli(*toy_run_args(tmp_path, "--epochs", "1", "--resume-if-any"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(store.run_ids()) == 1
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def test_an_abandoned_in_progress_folder_with_a_checkpoint_or_state_is_kept(tmp_path):
    """Only folders with nothing to resume are abandoned; a live run's young one is kept."""
    import os
    import time

    from harness.results.store import ABANDONED_AFTER_S, recover

    out = tmp_path / "runs"
    old = time.time() - ABANDONED_AFTER_S - 1
    folders = {}
    for name, files in {"empty": [], "state": ["state.json"], "ckpt": ["rank0.pt"]}.items():
        folder = out / ".partial" / f"20260101-000000-000000-{name}"
        folder.mkdir(parents=True)
        for file in files:
            (folder / file).write_text("{}")
            os.utime(folder / file, (old, old))
        os.utime(folder, (old, old))
        folders[name] = folder
    young = out / ".partial" / "20260101-000000-000000-young"
    young.mkdir()
    recovery = recover(out, ResultStore(out / "results.sqlite"))
    assert recovery.abandoned == [folders["empty"]]
    assert not folders["empty"].exists()
    assert folders["state"].is_dir() and folders["ckpt"].is_dir() and young.is_dir()


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


def toy_config(tmp_path):
    from harness.registry.config import resolve
    from harness.registry.plugins import load_plugins
    from tests.conftest import TOY_PLUGIN

    make_tones(tmp_path / "tones")
    raw = {
        "backbone": {"name": "toy"},
        "dataset": {"name": "toy-tones", "root": str(tmp_path / "tones")},
        "run": {"epochs": 1, "batch_size": 8},
    }
    return resolve(raw, load_plugins([str(TOY_PLUGIN)]))


def test_non_finite_metrics_leave_no_partial_folder(tmp_path, monkeypatch):
    import math

    from harness.run.experiment import Experiment, run_experiment
    from harness.util.errors import HarnessError

    monkeypatch.setattr(Experiment, "evaluate", lambda self: ({"p/acc": math.nan}, {}))
    out = tmp_path / "runs"
    with pytest.raises(HarnessError, match="non-finite metrics"):
        run_experiment(toy_config(tmp_path), out, ResultStore(out / "s.sqlite"))
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())


def test_an_error_after_training_says_the_kept_run_can_be_resumed(tmp_path, monkeypatch):
    from harness.run.experiment import Experiment, run_experiment
    from harness.util.errors import DataError

    def failing(self):
        raise DataError("eval split: a protocol failed")

    monkeypatch.setattr(Experiment, "evaluate", failing)
    out = tmp_path / "runs"
    with pytest.raises(DataError, match=r"a protocol failed \(its training is kept: continue"):
        run_experiment(toy_config(tmp_path), out, ResultStore(out / "s.sqlite"))
    (kept,) = (out / ".partial").iterdir()
    assert (kept / "state.json").is_file()
