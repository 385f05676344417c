"""Kill suite: SIGKILL at every stage of a run; the next command leaves no debris, loses no run.

The stages are reached through the ``HARNESS_TEST_KILL_AT`` hook (:mod:`harness.util.faults`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results.store import ResultStore, check_store
from harness.util.cache import OWNER
from tests.conftest import run_cli, toy_run_args
from tests.test_hardening import make_tones

RUN_STAGES = ("audio", "epoch", "predicting", "staging", "insert", "commit")
"""Stages of ``harness run`` (after data generation); ``commit`` is past the commit point."""


def temp_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_dir() and OWNER.match(p.name)]


@pytest.mark.slow
def test_sigkill_at_every_stage_leaves_no_debris_and_loses_no_run(tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache)}
    # data generation (the embedded TAU22 generator), killed half-way
    generate = (
        "from harness_plugins.datasets.tau22_embedded import Tau22Embedded as T\n"
        "T(T.Config(scale=0.02)).load()\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", generate],
        env={**os.environ, **env, "HARNESS_TEST_KILL_AT": "generating"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(temp_folders(cache)) == 1  # the generator's half-written folder
    make_tones(tmp_path / "tones")
    out = tmp_path / "runs"
    for stage in RUN_STAGES:
        result = run_cli(
            *toy_run_args(tmp_path, "--epochs", "1"), env={**env, "HARNESS_TEST_KILL_AT": stage}
        )
        assert result.returncode == -signal.SIGKILL, (stage, result.stderr)
        if stage in ("staging", "insert", "commit"):
            assert temp_folders(out), f"{stage}: the kill left no staging folder to recover"
    final = run_cli(*toy_run_args(tmp_path, "--epochs", "1"), env=env)
    assert final.returncode == 0, final.stderr
    assert temp_folders(tmp_path) == []
    store = ResultStore(out / "results.sqlite")
    rows = {r.run_id for r in store.records()}
    folders = {p.name for p in out.iterdir() if p.is_dir() and p.name != ".partial"}
    assert rows == folders and len(rows) == 2  # the run killed after its commit, and the last
    assert all((out / r / "backbone.pt").is_file() for r in rows)
    assert store.integrity() == "ok" and check_store(out, store) == []
