"""Atomic run folders and the SQLite results store."""

import pytest

from harness.errors import HarnessError
from harness.store import ResultStore, RunRecord, staged_dir


def make_record(run_id="r1", config_hash="h1"):
    return RunRecord(
        run_id=run_id,
        created="2026-01-01T00:00:00",
        config_hash=config_hash,
        backbone="b",
        method="m",
        aug="none",
        dataset="d",
        protocols="p",
        seed=0,
        config={"x": [1, 2]},
        metrics={"p/acc": 0.5},
        run_dir="/tmp/x",
        harness_version="0",
        git_commit="",
        environment={"torch": "t"},
        duration_s=1.5,
    )


def test_record_round_trips(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(make_record())
    [back] = store.records()
    assert back == make_record()
    assert store.has_config("h1") and not store.has_config("h2")
    assert store.records(method="other") == []


def test_duplicate_run_id_is_rejected_and_store_keeps_one_row(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    store.add(make_record())
    with pytest.raises(HarnessError, match="already holds a run with id r1"):
        store.add(make_record())
    assert len(store.records()) == 1


def test_staged_dir_appears_only_on_success(tmp_path):
    final = tmp_path / "runs" / "r1"
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("boom")
    assert not final.exists() and list((tmp_path / "runs").iterdir()) == []
    with staged_dir(final) as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert (final / "metrics.json").exists()
    with pytest.raises(HarnessError, match="already exists"), staged_dir(final):
        pass


def test_corrupt_store_is_a_one_line_error(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(HarnessError, match=f"results store {path} is not usable"):
        ResultStore(path).records()
