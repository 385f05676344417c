"""Concurrency: 8 processes storing runs into one store at once, plus 2 identical real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec
from harness.results.render import render_leaderboard
from harness.results.store import ResultStore
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones

WORKERS = 8
RUNS_PER_WORKER = 5

WORKER = Path(__file__).with_name("store_worker.py")


def test_eight_writers_and_two_identical_runs_store_every_run_once(tmp_path):
    out, store_path, start = (
        tmp_path / "runs",
        tmp_path / "runs" / "results.sqlite",
        tmp_path / "go",
    )
    make_tones(tmp_path / "tones")
    env = {**os.environ, "HARNESS_PROGRESS": "0", "HARNESS_CACHE": str(tmp_path / "cache")}
    real = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", *toy_run_args(tmp_path, "--epochs", "1")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(out),
                str(store_path),
                str(start),
                str(w),
                str(RUNS_PER_WORKER),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    time.sleep(0.5)
    start.write_text("go")
    reported = []
    for proc in workers + real:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        reported += [line.split()[-1].rsplit("/", 1)[-1] for line in stdout.splitlines() if line]
    stored_by_real = [r for r in reported if len(r) > 40]
    assert len(stored_by_real) >= 2  # "stored run <id> in <dir>": both identical runs stored
    store = ResultStore(store_path)
    records = store.records()
    ids = [r.run_id for r in records]
    assert len(ids) == len(set(ids)) == WORKERS * RUNS_PER_WORKER + 2
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(ids)
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []
    assert store.integrity() == "ok"
    for record in records:
        assert json.loads((Path(record.run_dir) / "metrics.json").read_text()) == record.metrics
    text = render_leaderboard(LeaderboardSpec(), store, load_plugins(), "markdown")
    assert text.count("tau22-embedded") >= WORKERS // 2 + 1
