"""Sweeps on executors: local processes, a real single-node SLURM, ingestion, bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cli.executors import (
    build_options,
    first_error_line,
    option_table,
    run_cell,
    state_path,
)
from harness.results.store import ResultStore, ingest
from harness.util.errors import UsageError
from tests.conftest import TOY_PLUGIN, run_cli
from tests.slurm_testing import SlurmUnavailable, start_cluster

SLOW_PLUGIN = Path(__file__).resolve().parent / "slow_plugin.py"


def write_spec(path: Path, data: Path, methods: str, seeds: str, extra: str = "") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            [sweep]
            seeds = {seeds}
            [sweep.base]
            backbone = {{ name = "toy" }}
            dataset = {{ name = "toy-tones", root = "{data}" }}
            run = {{ epochs = 1, batch_size = 8 }}

            [[sweep.grid]]
            method = {methods}
            """
        )
        + extra
    )
    return path


@pytest.fixture
def tones(tmp_path: Path) -> Path:
    data = tmp_path / "tones"
    data.mkdir()
    return data


def sweep(tmp_path: Path, spec: Path, *args: str, env: dict | None = None, plugins=(TOY_PLUGIN,)):
    loads = [a for p in plugins for a in ("--plugin", str(p))]
    return run_cli(*loads, "sweep", str(spec), "--out", str(tmp_path / "runs"), *args, env=env)


def rows(tmp_path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(tmp_path / "runs" / "results.sqlite") as conn:
        query = "SELECT config_hash, COUNT(*) FROM runs GROUP BY config_hash"
        return conn.execute(query).fetchall()


# --- options and bad input ------------------------------------------------------------------


def test_options_layer_config_then_spec_then_flags():
    opts = build_options(
        {"executor": "slurm", "partition": "a", "time": 30},
        {"partition": "b", "sbatch": ["--constraint=a100", "--exclusive"]},
        {"partition": None, "max_parallel": 2},
    )
    assert (opts.partition, opts.time, opts.max_parallel) == ("b", 30, 2)
    from harness.cli.executors import slurm_parameters

    params = slurm_parameters(opts, "x")
    assert params["additional_parameters"] == {"constraint": "a100", "exclusive": True}
    assert params["array_parallelism"] == 2 and params["partition"] == "b"


def test_option_table_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(UsageError, match=r"unknown key 'executor.partitoin' in s.toml"):
        option_table({"partitoin": "debug"}, "s.toml")
    with pytest.raises(UsageError, match="executor.time in s.toml has the wrong type"):
        option_table({"time": "ten"}, "s.toml")
    with pytest.raises(UsageError, match="mem must look like 16G"):
        build_options({"executor": "slurm", "mem": "lots"})
    with pytest.raises(UsageError, match="--max-parallel needs --executor slurm"):
        build_options({"executor": "local", "max_parallel": 2})


def test_first_error_line_is_the_exception_line():
    trace = 'Traceback (most recent call last):\n  File "x", line 1\nDataError: root missing\n'
    assert first_error_line(trace) == "DataError: root missing"


def test_unknown_executor_is_a_one_line_error(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce"]', "[0]")
    result = sweep(tmp_path, spec, "--executor", "condor")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: unknown executor 'condor' (choose from inline, local, slurm)"
    )
    assert not (tmp_path / "runs").exists()


def test_slurm_without_sbatch_submits_nothing(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce"]', "[0]")
    empty = tmp_path / "bin"
    empty.mkdir()
    result = sweep(
        tmp_path, spec, "--executor", "slurm", "--partition", "debug", env={"PATH": str(empty)}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: executor 'slurm' needs SLURM's sbatch on PATH; nothing was submitted"
    )
    assert not (tmp_path / "runs").exists()


def test_executor_section_with_unknown_key(tmp_path, tones):
    spec = write_spec(
        tmp_path / "s.toml", tones, '["ce"]', "[0]", '\n[executor]\nexecutor = "local"\njobz = 2\n'
    )
    result = sweep(tmp_path, spec)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"harness: error: unknown key 'executor.jobz' in {spec} (known: executor, jobs,"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_executor_section_in_the_recipe_config(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce"]', "[0]")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[executor]\nexecutor = "slurm"\npartition = "gpu"\naccount = "lab"\n')
    result = sweep(tmp_path, spec, "--config", str(recipe), "--dry-run", "--partition", "debug")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --partition=debug" in result.stdout  # the flag wins over the config
    assert "#SBATCH --account=lab" in result.stdout and "--partition=gpu" not in result.stdout


def test_slurm_dry_run_prints_the_sbatch_file_and_submits_nothing(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce", "icl"]', "[0]")
    result = sweep(
        tmp_path,
        spec,
        *("--executor", "slurm", "--dry-run", "--partition", "debug", "--time", "90"),
        *("--cpus", "4", "--mem", "8G", "--gpus", "1", "--account", "lab", "--qos", "low"),
        *("--max-parallel", "1", "--sbatch=--constraint=a100"),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[1/2] method=ce, seed=0: would submit (slurm)" in out
    for line in (
        "#SBATCH --array=0-1%1",
        "#SBATCH --partition=debug",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --account=lab",
        "#SBATCH --qos=low",
        "#SBATCH --constraint=a100",
    ):
        assert line in out
    assert "2 to submit, 0 already stored" in out
    assert not (tmp_path / "runs").exists()


# --- folder-only commits and ingestion ------------------------------------------------------


def toy_config(tones: Path):
    """The resolved config of a one-epoch toy run on ``tones``."""
    from harness.registry.config import resolve
    from harness.registry.plugins import load_plugins

    raw = {
        "backbone": {"name": "toy"},
        "dataset": {"name": "toy-tones", "root": str(tones)},
        "run": {"epochs": 1, "batch_size": 8},
    }
    return resolve(raw, load_plugins([str(TOY_PLUGIN)], [], lazy=True))


@pytest.mark.slow
def test_folder_only_run_then_idempotent_ingest(tmp_path, tones):
    cfg = toy_config(tones)
    out = tmp_path / "runs"
    record = run_cell(cfg, out)
    assert not (out / "results.sqlite").exists()  # the job never opens SQLite
    assert (out / record.run_id / "record.json").is_file()
    assert run_cell(cfg, out).run_id == record.run_id  # a requeued, finished cell: no rerun
    store = ResultStore(out / "results.sqlite")
    added, problems = ingest(out, store)
    assert [r.run_id for r in added] == [record.run_id] and problems == []
    assert ingest(out, store) == ([], [])
    (out / "broken").mkdir()
    (out / "broken" / "record.json").write_text("{")
    result = run_cli("store", "ingest", "--out", str(out))
    assert result.returncode == 2
    assert "not ingested: run folder" in result.stdout and "ingested 0 run(s)" in result.stdout
    [stored] = store.records()
    assert stored.metrics == record.metrics and stored.config_hash == cfg.config_hash()


@pytest.mark.slow
def test_stores_sharing_an_output_folder_adopt_only_their_own_runs(tmp_path, tones):
    """``--store runs/a.sqlite`` and ``--store runs/b.sqlite`` with one ``--out runs``: a run
    folder names its store, so neither store ingests, checks or reuses the other's runs."""
    cfg = toy_config(tones)
    out = tmp_path / "runs"
    a, b = ResultStore(out / "a.sqlite"), ResultStore(out / "b.sqlite")
    ours = run_cell(cfg, out, owner=a.owner)  # a cluster job of a's sweep
    assert (out / ours.run_id / ".store").read_text() == f"{a.owner}\n"
    assert ingest(out, b) == ([], []) and b.records() == []
    assert [r.run_id for r in ingest(out, a)[0]] == [ours.run_id]
    theirs = run_cell(cfg, out, owner=b.owner)  # b's sweep runs its own cell, not a's
    assert theirs.run_id != ours.run_id
    assert [r.run_id for r in ingest(out, b)[0]] == [theirs.run_id]
    assert [r.run_id for r in a.records()] == [ours.run_id]

    direct = run_cli(
        "--plugin",
        str(TOY_PLUGIN),
        "run",
        "--set",
        f"dataset.root={tones}",
        "--backbone",
        "toy",
        "--dataset",
        "toy-tones",
        "--set",
        "run.epochs=1",
        "--out",
        str(out),
        "--store",
        str(out / "c.sqlite"),
    )
    assert direct.returncode == 0, direct.stderr
    for store in ("a", "b"):
        check = run_cli(
            "store", "check", "--out", str(out), "--store", str(out / f"{store}.sqlite")
        )
        assert check.returncode == 0 and "without a row" not in check.stdout, check.stdout
        ingested = run_cli(
            "store", "ingest", "--out", str(out), "--store", str(out / f"{store}.sqlite")
        )
        assert "ingested 0 run(s)" in ingested.stdout
        assert "left alone: 2 run folder(s) of other stores" in ingested.stdout
    assert len(a.records()) == len(b.records()) == len(ResultStore(out / "c.sqlite").records()) == 1


# --- local processes ------------------------------------------------------------------------


@pytest.mark.slow
def test_local_jobs_store_every_cell_once_and_rerun_submits_nothing(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce", "icl"]', "[0, 1]")
    result = sweep(tmp_path, spec, "--executor", "local", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert "4 stored, 0 already stored, 0 failed (4 submitted)" in result.stdout
    counts = rows(tmp_path)
    assert len(counts) == 4 and all(n == 1 for _, n in counts)
    state = json.loads(state_path(tmp_path / "runs" / "results.sqlite").read_text())
    assert {e["executor"] for e in state.values()} == {"local"} and len(state) == 4

    again = sweep(tmp_path, spec, "--executor", "local", "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert "0 stored, 4 already stored, 0 failed (0 submitted)" in again.stdout
    status = sweep(tmp_path, spec, "--status")
    assert status.stdout.count(": stored") == 4 and "4 stored" in status.stdout


@pytest.mark.slow
def test_failed_local_cell_is_reported_with_its_log_and_resubmitted(tmp_path, tones):
    missing = tmp_path / "missing"
    spec = tmp_path / "s.toml"
    write_spec(spec, tones, '["ce"]', "[0]")
    spec.write_text(spec.read_text() + f'\n[[sweep.grid]]\n"dataset.root" = ["{missing}"]\n')
    result = sweep(tmp_path, spec, "--executor", "local", "--jobs", "2")
    assert result.returncode == 2
    assert "1 stored, 0 already stored, 1 failed (2 submitted)" in result.stdout
    assert f"toy data root not found: {missing}" in result.stderr
    assert "_log.err" in result.stderr  # the failed job's log path
    status = sweep(tmp_path, spec, "--status")
    assert "1 stored, 1 failed" in status.stdout
    failed = next(line for line in status.stdout.splitlines() if "failed (" in line)
    assert f"DataError: toy data root not found: {missing}" in failed and "log: " in failed

    missing.mkdir()  # fixed: only the failed cell is submitted again
    again = sweep(tmp_path, spec, "--executor", "local")
    assert again.returncode == 0, again.stderr
    assert "1 stored, 1 already stored, 0 failed (1 submitted)" in again.stdout
    assert len(rows(tmp_path)) == 2


@pytest.mark.slow
def test_local_cell_in_two_processes_through_torchrun(tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce"]', "[0]")
    spec.write_text(spec.read_text().replace("batch_size = 8", 'batch_size = 8, device = "cpu"'))
    result = sweep(tmp_path, spec, "--executor", "local", "--nproc", "2")
    assert result.returncode == 0, result.stderr
    assert "1 stored, 0 already stored, 0 failed (1 submitted)" in result.stdout
    assert [n for _, n in rows(tmp_path)] == [1]
    [entry] = json.loads(state_path(tmp_path / "runs" / "results.sqlite").read_text()).values()
    log = (Path(entry["folder"]) / f"{entry['job_id']}_0_log.err").read_text()
    assert "[rank1]" in log  # the second DDP process ran (torch tags its warnings by rank)


# --- a real single-node SLURM ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as err:
        pytest.skip(f"no test SLURM cluster: {err}")
    yield cluster
    cluster.stop()


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_sweep_stores_each_cell_and_rerun_submits_nothing(slurm, tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["ce", "icl"]', "[0]")
    args = ("--executor", "slurm", "--partition", "debug", "--time", "10", "--max-parallel", "2")
    result = sweep(tmp_path, spec, *args, env=slurm.env)
    assert result.returncode == 0, result.stderr
    assert "2 stored, 0 already stored, 0 failed (2 submitted)" in result.stdout
    counts = rows(tmp_path)
    assert len(counts) == 2 and all(n == 1 for _, n in counts)
    state = json.loads(state_path(tmp_path / "runs" / "results.sqlite").read_text())
    job_ids = sorted(e["job_id"] for e in state.values())
    assert len(job_ids) == 2 and job_ids[0].endswith("_0") and job_ids[1].endswith("_1")

    before = slurm.squeue()
    again = sweep(tmp_path, spec, *args, env=slurm.env)
    assert again.returncode == 0, again.stderr
    assert "0 stored, 2 already stored, 0 failed (0 submitted)" in again.stdout
    assert slurm.squeue() == before  # no new job


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.slurm
def test_preempted_slurm_job_requeues_itself(slurm, tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["sleepy"]', "[0]")
    spec.write_text(spec.read_text().replace("epochs = 1", "epochs = 12"))
    plugins = (TOY_PLUGIN, SLOW_PLUGIN)
    args = ("--executor", "slurm", "--partition", "debug", "--time", "10")
    submitted = sweep(tmp_path, spec, *args, "--no-wait", env=slurm.env, plugins=plugins)
    assert submitted.returncode == 0, submitted.stderr
    assert "1 submitted" in submitted.stdout
    [entry] = json.loads(state_path(tmp_path / "runs" / "results.sqlite").read_text()).values()
    log = Path(entry["folder"]) / f"{entry['job_id']}_0_log.err"
    wait_for(lambda: log.is_file() and "epoch 1/12" in log.read_text(), 120, "epoch 1")
    status = sweep(tmp_path, spec, "--status", env=slurm.env, plugins=plugins)
    assert f"running (job {entry['job_id']})" in status.stdout
    # Preemption as SLURM does it: SIGTERM, then the USR2 submitit turns into a requeue.
    env = {**os.environ, **slurm.env}
    for sig in ("TERM", "USR2"):
        subprocess.run(["scancel", f"--signal={sig}", entry["job_id"]], check=True, env=env)
    wait_for(lambda: "DUE TO JOB REQUEUE" in log.read_text(), 60, "the requeue")

    # SLURM holds a requeued job back for about two minutes; let it start now.
    def release() -> bool:
        state = subprocess.run(
            ["squeue", "-h", "-j", entry["job_id"], "-o", "%T"], env=env, capture_output=True
        )
        if state.stdout.decode().strip() != "PENDING":
            return False
        update = ["scontrol", "update", f"JobId={entry['job_id']}", "StartTime=now"]
        return subprocess.run(update, env=env, capture_output=True).returncode == 0

    wait_for(release, 60, "the requeued job to wait in the queue")

    result = sweep(tmp_path, spec, *args, env=slurm.env, plugins=plugins)  # waits, submits none
    assert result.returncode == 0, result.stderr
    # The requeued job stores its run itself; it may do so before this driver looks.
    counts = ("1 stored, 0 already stored", "0 stored, 1 already stored")
    assert any(f"{c}, 0 failed (0 submitted)" in result.stdout for c in counts), result.stdout
    assert [n for _, n in rows(tmp_path)] == [1]
    text = log.read_text()
    assert "epoch 12/12" in text
    assert text.count("epoch 1/12") == 1  # resumed from its checkpoint, not restarted


@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_slurm_job_is_reported_and_resubmitted(slurm, tmp_path, tones):
    spec = write_spec(tmp_path / "s.toml", tones, '["sleepy"]', "[0]")
    spec.write_text(spec.read_text().replace("epochs = 1", "epochs = 12"))
    plugins = (TOY_PLUGIN, SLOW_PLUGIN)
    args = ("--executor", "slurm", "--partition", "debug", "--time", "10")
    submitted = sweep(tmp_path, spec, *args, "--no-wait", env=slurm.env, plugins=plugins)
    assert submitted.returncode == 0, submitted.stderr
    [entry] = json.loads(state_path(tmp_path / "runs" / "results.sqlite").read_text()).values()
    log = Path(entry["folder"]) / f"{entry['job_id']}_0_log.err"
    wait_for(lambda: log.is_file() and "epoch 1/12" in log.read_text(), 120, "epoch 1")
    env = {**os.environ, **slurm.env}
    # Killed, no requeue: SIGTERM (which submitit and the data workers leave alone), then
    # SIGKILL after the fixture's KillWait of 2 s.
    subprocess.run(["scancel", entry["job_id"]], check=True, env=env)
    wait_for(lambda: entry["job_id"] not in slurm.squeue(), 60, "the job to end")
    status = sweep(tmp_path, spec, "--status", env=slurm.env, plugins=plugins)
    # The cancelled job either wrote the error it died with or ended without a result.
    assert ": failed (" in status.stdout and f"{entry['job_id']}_0_log.err" in status.stdout
    assert "1 failed" in status.stdout

    again = sweep(tmp_path, spec, *args, env=slurm.env, plugins=plugins)
    assert again.returncode == 0, again.stderr
    assert "1 stored, 0 already stored, 0 failed (1 submitted)" in again.stdout
    assert [n for _, n in rows(tmp_path)] == [1]


def test_slurm_testing_reports_why_it_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("tests.slurm_testing.find", lambda name: None)
    with pytest.raises(SlurmUnavailable, match="SLURM is not installed"):
        start_cluster(tmp_path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
