"""Where the cells of a sweep run: in this process, as local processes, or as SLURM jobs.

The ``local`` and ``slurm`` executors are submitit's. A job runs one cell through
:func:`run_cell` and commits its run folder only (:class:`~harness.results.store.FolderOnlyStore`);
the driver ingests finished folders into the SQLite store, so SQLite is never written by
several hosts at once. Job ids per cell live in a small state file next to the store.

The driver never unpickles anything a job wrote: a job reports its outcome in a JSON
status file of its own (:func:`status_file`), written before submitit pickles the result,
and ``--status`` reads only that file (a crafted result pickle in a shared output folder
runs no code).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import submitit
import torch
from submitit.slurm.slurm import _make_sbatch_string

from harness.cli.report import SweepProgress
from harness.registry.config import RunConfig, resolve
from harness.registry.plugins import load_plugins
from harness.results.store import (
    FolderOnlyStore,
    ResultStore,
    RunRecord,
    ingest,
    owned_by,
    record_from_folder,
    run_folders,
    write_json,
)
from harness.run.experiment import run_experiment
from harness.util.errors import HarnessError, Interrupted, UsageError
from harness.util.progress import note

EXECUTORS = ("inline", "local", "slurm")
SLURM_ONLY = ("max_parallel", "partition", "time", "mem", "gpus", "account", "qos", "sbatch")
MEM = re.compile(r"^\d+[KMGT]?$")
SBATCH_FLAG = re.compile(r"^--?([A-Za-z][A-Za-z0-9_-]*)(?:[= ](.+))?$")
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED"}


@dataclass
class ExecutorOptions:
    """How a sweep's cells are run; keys of an ``[executor]`` table and ``harness sweep`` flags."""

    executor: str = "inline"
    jobs: int | None = None
    """Local processes at once (default: the CPU count)."""
    max_parallel: int | None = None
    """SLURM: array tasks running at once (``--array=...%N``)."""
    partition: str | None = None
    time: int = 240
    """SLURM: time limit per job, in minutes (a job requeues itself when it runs out)."""
    cpus: int | None = None
    mem: str | None = None
    gpus: int | None = None
    nproc: int = 1
    """Processes (GPUs) per cell, launched with torchrun inside the job."""
    account: str | None = None
    qos: str | None = None
    sbatch: list[str] = field(default_factory=list)
    """Extra ``#SBATCH`` lines, e.g. ``--constraint=a100``."""
    max_requeues: int = 3
    """Times a job may requeue itself after hitting its time limit."""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def option_table(table: Any, source: str) -> dict[str, Any]:
    """An ``[executor]`` table, checked: known keys with values of the right type."""
    if not isinstance(table, dict):
        raise UsageError(f"'executor' in {source} must be a table ([executor])")
    known = ExecutorOptions.keys()
    for key, value in table.items():
        if key not in known:
            raise UsageError(
                f"unknown key 'executor.{key}' in {source} (known: {', '.join(known)})"
            )
        expected = ExecutorOptions.__dataclass_fields__[key].type
        if key == "sbatch":
            wanted, ok = (
                "an array of strings",
                isinstance(value, list) and all(isinstance(v, str) for v in value),
            )
        elif "int" in str(expected):
            wanted, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
        else:
            wanted, ok = "a string", isinstance(value, str)
        if not ok:
            raise UsageError(
                f"executor.{key} in {source} has the wrong type: must be {wanted}, got {value!r}"
            )
    return dict(table)


def build_options(*layers: dict[str, Any]) -> ExecutorOptions:
    """Options from layers (later wins; ``None`` values are unset), validated."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None and v != ()})
    if "sbatch" in merged:
        merged["sbatch"] = list(merged["sbatch"])
    opts = ExecutorOptions(**merged)
    if opts.executor not in EXECUTORS:
        raise UsageError(f"unknown executor '{opts.executor}' (choose from {', '.join(EXECUTORS)})")
    for key in ("jobs", "max_parallel", "cpus", "gpus", "nproc", "time"):
        value = getattr(opts, key)
        if value is not None and value < (0 if key == "gpus" else 1):
            raise UsageError(f"executor option {key} must be positive, not {value}")
    if opts.mem is not None and not MEM.match(opts.mem):
        raise UsageError(f"executor option mem must look like 16G or 4000M, not '{opts.mem}'")
    if opts.executor != "slurm":
        given = [k for k in SLURM_ONLY if k in merged]
        if given:
            flag = given[0].replace("_", "-")
            raise UsageError(f"option --{flag} needs --executor slurm (not {opts.executor})")
    if opts.executor == "inline" and (opts.nproc != 1 or opts.jobs is not None):
        raise UsageError("--jobs and --nproc need --executor local or slurm")
    for line in opts.sbatch:
        if not SBATCH_FLAG.match(line.removeprefix("#SBATCH").strip()):
            raise UsageError(f"extra sbatch line '{line}' is not an option like --constraint=a100")
    return opts


def require_sbatch() -> None:
    """Fail before anything is submitted when SLURM's ``sbatch`` is missing."""
    if shutil.which("sbatch") is None:
        raise UsageError("executor 'slurm' needs SLURM's sbatch on PATH; nothing was submitted")


@dataclass
class Cell:
    """One sweep run, as a job needs it: the raw config and how to load the plugins."""

    label: str
    config_hash: str
    raw: dict[str, Any]
    out_dir: str
    plugin_specs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    nproc: int = 1
    threads: int | None = None
    """Torch threads in the job (local jobs share this machine's cores)."""
    store: str = ""
    """The driver's results store (absolute), named in the run folder (``STORE_MARKER``)."""


def finished_record(out_dir: Path, config_hash: str, store: ResultStore) -> RunRecord | None:
    """The record of a finished run folder of this config in ``out_dir`` that belongs to
    ``store``, else None."""
    for folder in run_folders(out_dir):
        if not owned_by(folder, store):
            continue
        try:
            record = record_from_folder(folder)
        except HarnessError:
            continue
        if record.config_hash == config_hash:
            return record
    return None


def run_cell(cfg: RunConfig, out_dir: Path, resume: bool = True, owner: str = "") -> RunRecord:
    """Run one cell with ``harness run`` semantics, committing its run folder only.

    A cell whose folder is already complete (a requeued job that had finished) is not
    run again; ``resume`` continues from the engine's checkpoints where it supports it.
    """

    store = FolderOnlyStore(out_dir, owner)
    done = finished_record(out_dir, cfg.config_hash(), store)
    if done is not None:
        return done
    if not resume:
        return run_experiment(cfg, out_dir, store).record
    # a requeued job continues from its last checkpoint; a first start finds none
    return run_experiment(cfg, out_dir, store, resume="auto", resume_if_any=True).record


def resolve_cell(cell: Cell) -> RunConfig:
    """The cell's config resolved in the job; it must hash as it did in the driver."""
    cfg = resolve(cell.raw, load_plugins(cell.plugin_specs, cell.blocked, lazy=True))
    if cfg.config_hash() != cell.config_hash:
        raise HarnessError(
            f"cell '{cell.label}' resolves to another config in the job "
            f"({cfg.config_hash()[:8]} != {cell.config_hash[:8]}): plugins or defaults differ"
        )
    return cfg


class CellJob(submitit.helpers.Checkpointable):
    """A submitit job running one cell; on preemption or timeout it requeues itself."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    def __call__(self) -> str:
        status = status_file(submitit.JobEnvironment().paths)
        try:
            run_id = self.run()
        except Exception as err:
            write_json(status, {"outcome": "error", "error": error_line(err)})
            raise
        write_json(status, {"outcome": "success", "run_id": run_id})
        return run_id

    def run(self) -> str:
        """Run the cell in this job; its run id."""
        out_dir = Path(self.cell.out_dir)
        if self.cell.threads:
            torch.set_num_threads(self.cell.threads)
        if self.cell.nproc > 1:
            return run_distributed(self.cell)
        return run_cell(resolve_cell(self.cell), out_dir, resume=True, owner=self.cell.store).run_id


def status_file(paths: submitit.core.utils.JobPaths) -> Path:
    """The JSON file in which a job reports its outcome (next to submitit's result pickle)."""
    return paths.folder / f"{paths.job_id}_{paths.task_id}_status.json"


def error_line(err: BaseException) -> str:
    """``Type: message``, one line, for a job's status file."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def run_distributed(cell: Cell) -> str:
    """Run a cell in ``nproc`` processes under torchrun (the engine's DDP), in this job."""
    out_dir = Path(cell.out_dir)
    owner = FolderOnlyStore(out_dir, cell.store)
    done = finished_record(out_dir, cell.config_hash, owner)
    if done is not None:
        return done.run_id
    spec = out_dir / ".sweep-cells" / f"{cell.config_hash}.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(cell)))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cell.nproc}",
        "-m",
        "harness.cli.executors",
        str(spec),
    ]
    subprocess.run(command, check=True)
    record = finished_record(out_dir, cell.config_hash, owner)
    if record is None:
        raise HarnessError(f"cell '{cell.label}': torchrun finished without a run folder")
    return record.run_id


# --- the driver side -----------------------------------------------------------------------


def state_path(store_path: Path) -> Path:
    """The sweep state file next to the store: job ids per config hash."""
    return store_path.with_name(f"{store_path.stem}.sweep-jobs.json")


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """The sweep's job state file (``{}`` when there is none yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise HarnessError(f"sweep state file {path} is not readable: {err}") from None
    if not isinstance(data, dict):
        return {}
    for number, (key, entry) in enumerate(data.items(), 1):
        if not isinstance(key, str) or not valid_entry(entry):  # its text is not quoted
            raise HarnessError(
                f"sweep state file {path}: entry {number} is malformed; delete the file "
                "to forget the sweep's jobs"
            )
    return data


def valid_entry(entry: Any) -> bool:
    """A state entry with string fields, a known executor and a plain job id."""
    if not isinstance(entry, dict):
        return False
    fields_ok = all(isinstance(entry.get(k), str) for k in ("executor", "job_id", "folder"))
    return (
        fields_ok
        and entry["executor"] in ("local", "slurm")
        and re.fullmatch(r"\d+(_\d+)?", entry["job_id"]) is not None
    )


def write_state(path: Path, state: dict[str, dict[str, Any]]) -> None:
    """Write the sweep's job state file atomically."""
    write_json(path, state)


@dataclass
class CellStatus:
    """Where one cell of a sweep stands, for ``--status`` and the progress lines."""

    state: str
    """stored, running, queued, failed, finished (folder not yet ingested) or not started."""
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.state} ({self.detail})" if self.detail else self.state


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: SLURM state}`` from squeue, for the jobs it still knows."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    result = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = {}
    for line in result.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        states[job_id] = state
    return states


def job_paths(entry: dict[str, Any]) -> submitit.core.utils.JobPaths:
    """submitit's paths (logs, result) of a state entry's job."""
    return submitit.core.utils.JobPaths(entry["folder"], job_id=entry["job_id"], task_id=0)


def first_error_line(trace: str) -> str:
    """The last non-empty line of a traceback: the error itself."""
    lines = [line.strip() for line in str(trace).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def job_outcome(entry: dict[str, Any]) -> CellStatus | None:
    """Failed or finished, from the job's JSON status file; None while the job has none.

    submitit's result pickle is never loaded (unpickling a file from a shared output
    folder could run another user's code): only its existence tells that a job ended
    before it could write its status (e.g. its cell could not be unpickled)."""
    paths = job_paths(entry)
    status = status_file(paths)
    try:
        data = json.loads(status.read_text())
    except FileNotFoundError:
        if paths.result_pickle.exists():
            return CellStatus("failed", f"job ended without a status file; log: {paths.stderr}")
        return None
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not JSON"
        return CellStatus("failed", f"unreadable job status {status} ({reason})")
    outcome = data.get("outcome") if isinstance(data, dict) else None
    if outcome == "success" and isinstance(data.get("run_id"), str):
        return CellStatus("finished", f"run {data['run_id']}")
    if outcome == "error" and isinstance(data.get("error"), str):
        return CellStatus("failed", f"{first_error_line(data['error'])}; log: {paths.stderr}")
    return CellStatus("failed", f"job status {status} is malformed")


def pid_alive(pid: int) -> bool:
    """Whether a local process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(entry: dict[str, Any], slurm: dict[str, str]) -> CellStatus:
    """The state of one submitted job (not of its stored row)."""
    job_id = entry["job_id"]
    if entry["executor"] == "slurm":
        state = slurm.get(job_id)
        if state in QUEUED:
            return CellStatus("queued", f"job {job_id}")
        if state in RUNNING:
            return CellStatus("running", f"job {job_id}")
    elif entry.get("host") == socket.gethostname() and pid_alive(int(job_id)):
        outcome = job_outcome(entry)
        return outcome or CellStatus("running", f"process {job_id}")
    outcome = job_outcome(entry)
    if outcome is not None:
        return outcome
    state = slurm.get(job_id, "gone") if entry["executor"] == "slurm" else "gone"
    log = job_paths(entry).stderr
    return CellStatus("failed", f"job {job_id} ended ({state}) without a result; log: {log}")


def statuses(
    hashes: list[str], stored: set[str], state: dict[str, dict[str, Any]]
) -> dict[str, CellStatus]:
    """Each cell's status: stored, or its job's, or not started."""
    pending = [state[h]["job_id"] for h in hashes if h not in stored and h in state]
    slurm = slurm_states([j for j in pending if "_" in j or j.isdigit()])
    result = {}
    for h in hashes:
        if h in stored:
            result[h] = CellStatus("stored")
        elif h in state:
            result[h] = job_status(state[h], slurm)
        else:
            result[h] = CellStatus("not started")
    return result


def sbatch_flags(opts: ExecutorOptions) -> dict[str, Any]:
    """Extra ``#SBATCH`` lines as submitit's ``additional_parameters``."""
    extra: dict[str, Any] = {}
    for line in opts.sbatch:
        match = SBATCH_FLAG.match(line.removeprefix("#SBATCH").strip())
        assert match is not None  # checked by build_options
        extra[match[1].replace("-", "_")] = match[2].strip() if match[2] else True
    return extra


def slurm_parameters(opts: ExecutorOptions, name: str) -> dict[str, Any]:
    """The SlurmExecutor parameters of a sweep's jobs."""
    params: dict[str, Any] = {
        "job_name": name,
        "time": opts.time,
        "nodes": 1,
        "ntasks_per_node": 1,  # torchrun starts the nproc processes inside the one task
        "signal_delay_s": 120,
    }
    optional = {
        "partition": opts.partition,
        "cpus_per_task": opts.cpus,
        "mem": opts.mem,
        "gpus_per_node": opts.gpus,
        "account": opts.account,
        "qos": opts.qos,
        "array_parallelism": opts.max_parallel,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    if opts.sbatch:
        params["additional_parameters"] = sbatch_flags(opts)
    return params


def sbatch_script(opts: ExecutorOptions, folder: Path, name: str, count: int) -> str:
    """The sbatch file submitit would write for an array of ``count`` cells."""
    params = slurm_parameters(opts, name)
    python, where = shlex.quote(sys.executable), shlex.quote(str(folder))
    command = f"{python} -u -m submitit.core._submit {where}"
    return _make_sbatch_string(command=command, folder=folder, map_count=count, **params)


def make_executor(opts: ExecutorOptions, folder: Path, name: str) -> submitit.Executor:
    """The submitit executor of ``opts`` (SLURM job array or local processes)."""
    if opts.executor == "slurm":
        require_sbatch()
        executor: submitit.Executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=opts.max_requeues
        )
        executor.update_parameters(**slurm_parameters(opts, name))
    else:
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=opts.max_requeues)
        # the job controllers share the terminal: on Ctrl-C their tracebacks go to a log
        log = shlex.quote(str(folder / "controllers.err"))
        params: dict[str, Any] = {"timeout_min": opts.time, "setup": [f"exec 2>>{log}"]}
        if opts.cpus:
            params["cpus_per_task"] = opts.cpus
        executor.update_parameters(**params)
    return executor


def state_entry(opts: ExecutorOptions, job: submitit.Job, folder: Path, label: str) -> dict:
    """What the state file keeps of a submitted job."""
    return {
        "executor": opts.executor,
        "job_id": str(job.job_id),
        "folder": str(folder),
        "host": socket.gethostname(),
        "label": label,
        "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def submit(
    opts: ExecutorOptions, cells: list[Cell], folder: Path, name: str
) -> list[tuple[Cell, submitit.Job]]:
    """Submit every cell now: one SLURM job array, or one local process each."""
    executor = make_executor(opts, folder, name)
    if opts.executor == "slurm":
        with executor.batch():
            jobs = [executor.submit(CellJob(cell)) for cell in cells]
    else:
        jobs = [executor.submit(CellJob(cell)) for cell in cells]
    return list(zip(cells, jobs, strict=True))


def describe(cells: list[Cell], status: dict[str, CellStatus]) -> None:
    """Print one line per cell with its status."""
    for i, cell in enumerate(cells, 1):
        where = f"{cell.label} [{cell.config_hash[:8]}]"
        click.echo(f"[{i}/{len(cells)}] {where}: {status[cell.config_hash]}")


def run_jobs(
    sweep_file: Path,
    cells: list[Cell],
    opts: ExecutorOptions,
    out: Path,
    store: ResultStore,
    dry_run: bool = False,
    show_status: bool = False,
    no_wait: bool = False,
    report: SweepProgress | None = None,
) -> None:
    """Submit the cells that are neither stored nor running, wait, ingest, report (a result
    line per cell with the ETA across cells, then a summary)."""

    hashes = [c.config_hash for c in cells]
    state_file = state_path(store.path)
    state = read_state(state_file)
    stored = {h for h in hashes if store.has_config(h)}
    status = statuses(hashes, stored, state)
    if show_status:
        describe(cells, status)
        counts: dict[str, int] = {}
        for s in status.values():
            counts[s.state] = counts.get(s.state, 0) + 1
        click.echo(f"sweep {sweep_file}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        return
    jobs = opts.jobs or os.cpu_count() or 1
    for cell in cells:
        cell.nproc = opts.nproc
        if opts.executor == "local":
            cell.threads = max(1, (os.cpu_count() or 1) // jobs)
    resubmit = ("not started", "failed", "finished")  # finished: its folder went missing
    todo = [c for c in cells if status[c.config_hash].state in resubmit]
    live = [c for c in cells if status[c.config_hash].state in ("queued", "running")]
    name = f"harness-{Path(sweep_file).stem}"
    folder = (out / ".sweeps" / Path(sweep_file).stem).resolve()
    if dry_run:
        for i, cell in enumerate(cells, 1):
            st = status[cell.config_hash]
            verb = f"would submit ({opts.executor})" if cell in todo else str(st)
            click.echo(f"[{i}/{len(cells)}] {cell.label}: {verb}")
        if opts.executor == "slurm" and todo:
            click.echo(f"\n# sbatch file of the job array ({len(todo)} task(s)):")
            click.echo(sbatch_script(opts, folder, name, len(todo)))
        click.echo(
            f"sweep {sweep_file}: {len(todo)} to submit, {len(stored)} already stored, "
            f"{len(live)} queued or running"
        )
        return
    for cell in todo:  # a previous failure is reported again before the cell is resubmitted
        if status[cell.config_hash].state == "failed":
            note(f"{cell.label}: resubmitting after: {status[cell.config_hash].detail}")
    report = report or SweepProgress(len(cells), None)
    for cell in cells:
        if cell.config_hash in stored:
            report.skipped(cell.label)
    driver = Driver(opts, folder, name, state_file, state, store, out, report)
    try:
        driver.run(todo, live if opts.executor == "slurm" else [], no_wait)
    except KeyboardInterrupt:
        if opts.executor == "local":
            driver.cancel()
            raise Interrupted(
                f"sweep {sweep_file} interrupted; its local jobs were cancelled, "
                f"{len(driver.stored)} run(s) stored"
            ) from None
        raise Interrupted(
            f"sweep {sweep_file} interrupted; its SLURM jobs keep running "
            f"(harness sweep {sweep_file} --status)"
        ) from None
    if no_wait:
        click.echo(
            f"sweep {sweep_file}: {len(todo)} submitted, {len(stored)} already stored, "
            f"{len(live)} queued or running"
        )
        return
    for line in report.summary(str(sweep_file)):
        click.echo(line)
    click.echo(
        f"sweep {sweep_file}: {len(driver.stored)} stored, {len(stored)} already stored, "
        f"{len(driver.failed)} failed ({len(todo)} submitted)"
    )
    if driver.failed:
        raise HarnessError(
            f"{len(driver.failed)} sweep run(s) failed: "
            + "; ".join(f"{label}: {why}" for label, why in driver.failed)
        )


def stored_anyway(label: str, why: str) -> str:
    """The warning line for a cell that is stored although its run or job said otherwise."""
    return (
        f"WARNING: {label}: {why}, but its run is in the store; counted as stored "
        "(the store decides)"
    )


class Driver:
    """Submits cells, follows their jobs, and ingests the run folders they finish."""

    def __init__(
        self,
        opts: ExecutorOptions,
        folder: Path,
        name: str,
        state_file: Path,
        state: dict[str, dict[str, Any]],
        store: ResultStore,
        out: Path,
        report: SweepProgress,
    ) -> None:
        self.opts, self.folder, self.name = opts, folder, name
        self.state_file, self.state, self.store, self.out = state_file, state, store, out
        self.report = report
        self.launched: dict[str, float] = {}
        self.active: dict[str, tuple[Cell, submitit.Job | None]] = {}
        self.stored: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def launch(self, cells: list[Cell]) -> None:
        if not cells:
            return
        for cell, job in submit(self.opts, cells, self.folder, self.name):
            self.state[cell.config_hash] = state_entry(self.opts, job, self.folder, cell.label)
            self.active[cell.config_hash] = (cell, job)
            self.launched[cell.config_hash] = time.monotonic()
            note(f"{cell.label}: submitted as job {job.job_id}")
        write_state(self.state_file, self.state)

    def run(self, todo: list[Cell], live: list[Cell], no_wait: bool) -> None:
        for cell in live:
            self.active[cell.config_hash] = (cell, None)
        pending = list(todo)
        limit = len(pending) if self.opts.executor == "slurm" else self.opts.jobs or os.cpu_count()
        while pending or self.active:
            free = max(0, (limit or 1) - sum(1 for _, j in self.active.values() if j is not None))
            if pending and free:
                self.launch(pending[:free])
                pending = pending[free:]
            if no_wait:
                return
            self.poll()
            if self.active:
                time.sleep(1.0)

    def poll(self) -> None:

        entries = {h: self.state[h] for h in self.active}
        slurm = slurm_states([e["job_id"] for e in entries.values() if e["executor"] == "slurm"])
        for h, entry in entries.items():
            cell, job = self.active[h]
            if entry["executor"] == "local" and job is not None and not job.done():
                continue
            st = job_status(entry, slurm)
            if st.state in ("queued", "running"):
                continue
            del self.active[h]
            ingest(self.out, self.store)
            took = time.monotonic() - self.launched.get(h, time.monotonic())
            records = self.store.records(config_hash=h)
            if records:  # the store decides: a job's status may be missing, late or wrong
                if st.state == "failed":
                    note(stored_anyway(cell.label, f"its job reported failure ({st.detail})"))
                self.stored.append(cell.label)
                note(self.report.stored(cell.label, records[-1], records[-1].duration_s))
            else:
                why = st.detail if st.state == "failed" else f"no run folder ({st.detail})"
                self.failed.append((cell.label, why))
                note(self.report.failed(cell.label, why, took))

    def cancel(self) -> None:
        for _, job in self.active.values():
            if job is not None:
                job.cancel(check=False)


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.cli.executors CELL.json``: one rank of a multi-process cell."""
    args = sys.argv[1:] if argv is None else argv
    cell = Cell(**json.loads(Path(args[0]).read_text()))
    run_cell(resolve_cell(cell), Path(cell.out_dir), resume=True, owner=cell.store)


if __name__ == "__main__":
    main()
