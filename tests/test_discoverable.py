"""Discoverable settings and run housekeeping (issue 24, item 5): ``harness list run`` with
type, default, help and accepted values; ``harness runs`` with the main metric;
``harness store rm``; ``store check --repair`` resolving orphans both ways."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.api.settings import RunSettings
from harness.registry.params import describe_fields
from harness.results.store import ResultStore, RunRecord, check_store, remove_run
from harness.util.errors import HarnessError


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd
    )


def record(run_id: str, run_dir: Path, metrics: dict[str, float] | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        created="2026-01-01T00:00:00",
        config_hash="h",
        backbone="passt",
        method="icl",
        aug="multidir",
        dataset="tau22-embedded",
        protocols="device-logloss",
        seed=0,
        config={"run": {"seed": 0}},
        metrics=metrics or {"device-logloss/logloss/overall": 1.7642, "health/collapsed": 0.0},
        run_dir=str(run_dir),
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


def stored_run(out: Path, store: ResultStore, run_id: str, **kwargs) -> Path:
    folder = out / run_id
    folder.mkdir(parents=True)
    rec = record(run_id, folder, **kwargs)
    (folder / "config.json").write_text(json.dumps(rec.config))
    fields = {k: v for k, v in dataclasses.asdict(rec).items() if k != "config"}
    (folder / "record.json").write_text(json.dumps(fields))
    (folder / "backbone.pt").write_bytes(b"weights")
    store.add(rec)
    return folder


def test_describe_fields_gives_type_default_help_and_domain_of_every_run_setting():
    rows = {row[0]: row for row in describe_fields(RunSettings)}
    assert set(rows) == {f.name for f in dataclasses.fields(RunSettings)}
    assert rows["lr"] == ["lr", "float", "0.001", "Peak learning rate of Adam.", "(0, 10]"]
    assert rows["epochs"][4] == ">= 1"
    assert rows["valid_fraction"][4] == "[0, 1)"
    assert rows["precision"][1:3] == ["one of fp32|bf16|fp16", "'fp32'"]
    # a field without a domain gets its help from its docstring
    assert rows["valid_group"][3].startswith("Clip metadata key held out together")
    assert all(row[3] for row in rows.values()), [r for r in rows.values() if not r[3]]


def test_list_run_prints_each_setting_and_a_kind_typo_suggests(tmp_path):
    done = harness("list", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "run settings (--set run.KEY=VALUE):"
    assert "  valid_fraction: float = 0.0  Training clips held out for validation.  [[0, 1)]" in (
        lines
    )
    assert len(lines) == 1 + len(dataclasses.fields(RunSettings)) + 1
    typo = harness("list", "rn", cwd=tmp_path)
    assert typo.returncode == 2
    assert "unknown kind 'rn'. Did you mean: run" in typo.stderr


def test_list_shows_the_domain_of_component_parameters(tmp_path):
    done = harness("list", "methods", cwd=tmp_path)
    assert (
        "      lambda_icl: float = 0.5  Weight of the ICL term in the training loss.  [>= 0]"
        in (done.stdout.splitlines())
    )


def test_runs_shows_the_main_metric_of_each_run(tmp_path):
    out = tmp_path / "runs"
    store = ResultStore(out / "results.sqlite")
    stored_run(out, store, "r1")
    stored_run(out, store, "r2", metrics={"health/collapsed": 0.0})
    done = harness("runs", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert "seed 0  device-logloss/logloss/overall 1.764  " in first
    assert "seed 0  device-logloss: -  " in second


def test_store_rm_deletes_row_and_folder_and_names_unknown_ids(tmp_path):
    out = tmp_path / "runs"
    store = ResultStore(out / "results.sqlite")
    keep = stored_run(out, store, "r1")
    gone = stored_run(out, store, "r2")
    done = harness("store", "rm", "r2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"deleted run r2: its row in {store.path} and its folder {gone}" in done.stdout
    assert set(store.run_ids()) == {"r1"} and keep.is_dir() and not gone.exists()
    assert sorted(p.name for p in out.iterdir()) == ["r1", "results.sqlite"]  # no temporary left
    typo = harness("store", "rm", "r3", "--out", str(out), cwd=tmp_path)
    assert typo.returncode == 2
    assert "unknown run in" in typo.stderr and "Did you mean: r1" in typo.stderr
    assert check_store(out, store) == []


def test_remove_run_puts_the_folder_back_when_the_row_cannot_be_deleted(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    store = ResultStore(out / "results.sqlite")
    folder = stored_run(out, store, "r1")

    def fail(run_id: str) -> None:
        raise HarnessError("store locked")

    monkeypatch.setattr(store, "delete", fail)
    with pytest.raises(HarnessError, match="store locked"):
        remove_run("r1", store, out)
    assert (folder / "backbone.pt").read_bytes() == b"weights"
    assert sorted(p.name for p in out.iterdir()) == ["r1", "results.sqlite"]


def test_repair_deletes_rows_without_folders_and_stores_or_deletes_orphan_folders(tmp_path):
    out = tmp_path / "runs"
    store = ResultStore(out / "results.sqlite")
    stored_run(out, store, "kept")
    removed_by_hand = stored_run(out, store, "gone")
    for path in removed_by_hand.iterdir():
        path.unlink()
    removed_by_hand.rmdir()
    orphan = stored_run(out, store, "orphan")
    store.delete("orphan")
    done = harness("store", "check", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert f"row without a run folder (row to delete): gone ({removed_by_hand})" in done.stdout
    assert "--orphan-folders delete" in done.stderr
    assert set(store.run_ids()) == {"kept", "gone"}  # nothing changed without --repair
    done = harness(
        "store", "check", "--repair", "--orphan-folders", "delete", "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"run folder without a row (deleted): {orphan}" in done.stdout
    assert set(store.run_ids()) == {"kept"} and not orphan.exists()
    assert sorted(p.name for p in out.iterdir()) == ["kept", "results.sqlite"]


def test_repair_stores_an_orphan_folder_by_default(tmp_path):
    out = tmp_path / "runs"
    store = ResultStore(out / "results.sqlite")
    orphan = stored_run(out, store, "orphan")
    store.delete("orphan")
    assert check_store(out, store, repair=True) == [f"run folder without a row (stored): {orphan}"]
    assert set(store.run_ids()) == {"orphan"}


def test_a_listing_piped_into_head_ends_quietly(tmp_path):
    """``harness list | head -1``: the closed pipe ends the listing without an error line."""
    piped = subprocess.run(
        f"'{sys.executable}' -m harness list | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert piped.stdout.startswith("run settings")
    assert piped.stderr == ""
