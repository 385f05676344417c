"""``harness sweep FILE.toml``: run a grid of configurations, resumably.

The file's ``[sweep]`` table holds a ``base`` config (the same tables as a
``--config`` file), ``seeds``, and one or more ``[[sweep.grid]]`` tables whose
keys are axes: ``backbone``, ``method``, ``aug``, ``dataset``, ``protocol``
(component names) or dotted config keys such as ``method.alpha``, each a list
of values. Each grid is a Cartesian product; the runs are the union over grids
times the seeds. Every configuration is validated before the first run; a run
whose resolved config is already in the results store is skipped, and a run
that fails is reported and the sweep goes on.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harness.cli.executors import (
    Cell,
    ExecutorOptions,
    build_options,
    option_table,
    require_sbatch,
    run_jobs,
    stored_anyway,
)
from harness.cli.options import (
    config_and_set_options,
    default_store,
    out_and_store_options,
    plugins_from,
    scan_global_options,
)
from harness.cli.report import SweepProgress
from harness.registry.config import (
    LIST_KINDS,
    SINGLE_KINDS,
    RunConfig,
    coerce,
    merge,
    parse_set,
    read_toml,
    resolve,
)
from harness.registry.plugins import Plugins
from harness.results.store import ResultStore, ingest
from harness.run.experiment import run_experiment
from harness.util.errors import HarnessError, Interrupted, UsageError
from harness.util.progress import note
from harness.util.specs import SpecFile

NAME_AXES = set(SINGLE_KINDS) | set(LIST_KINDS)
SWEEP_KEYS = {"base", "seeds", "grid"}
CONFIG_SECTIONS = NAME_AXES | {"run"}
"""The first part of every config key (``run.lr``, ``method.alpha``, ``method``)."""


@dataclass
class SweepRun:
    """One run of a sweep: its label and its validated config."""

    label: str
    config: RunConfig
    raw: dict[str, Any] | None = None
    """The raw config the run resolves from (what a cluster job resolves again)."""


def axis_update(axis: str, value: Any) -> dict[str, Any]:
    """The raw-config fragment that sets one axis to one value."""
    if axis in NAME_AXES:
        return {axis: {"names" if axis in LIST_KINDS else "name": value}}
    node: Any = value
    for part in reversed(axis.split(".")):
        node = {part: node}
    return node


def expand(sweep: dict[str, Any], source: str) -> list[tuple[str, dict[str, Any]]]:
    """``(label, raw config)`` for every grid point and seed."""
    unknown = set(sweep) - SWEEP_KEYS
    if unknown:
        raise UsageError(f"unknown key 'sweep.{sorted(unknown)[0]}' in {source}")
    spec = SpecFile(sweep, source, "sweep spec", "sweep.")
    base = spec.get("base", dict, {})
    base_spec = SpecFile(base, source, "sweep spec", "sweep.base.")
    for section in sorted(CONFIG_SECTIONS & set(base)):
        base_spec.typed(section, base[section], dict)
    seeds = spec.items("seeds", int, [0])
    if not seeds:
        raise spec.fail("seeds", "a non-empty array of integers", seeds)
    if isinstance(sweep.get("grid"), dict):
        raise spec.fail("grid", "an array of tables ([[sweep.grid]])", sweep["grid"])
    grids = spec.tables("grid") if "grid" in sweep else [{}]
    for i, grid in enumerate(grids):
        check_axes(SpecFile(grid, source, "sweep spec", f"sweep.grid[{i}]."))
    points = []
    for grid in grids:
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            raw = dict(base)
            for axis, value in zip(axes, combo, strict=True):
                raw = merge(raw, axis_update(axis, value))
            label = ", ".join(f"{a}={v}" for a, v in zip(axes, combo, strict=True))
            points.extend((f"{label}, seed={s}", merge(raw, {"run": {"seed": s}})) for s in seeds)
    return points


def check_axes(grid: SpecFile) -> None:
    """Every axis of one ``[[sweep.grid]]`` table is a non-empty array of values (strings,
    numbers, true/false, or arrays for list options such as ``aug``), never of tables."""
    for axis, values in grid.data.items():
        if axis.split(".")[0] not in CONFIG_SECTIONS:
            sections = ", ".join(sorted(CONFIG_SECTIONS))
            raise UsageError(
                f"{grid.label} {grid.path}: {grid.prefix}{axis} names no config field (a grid "
                f"key is a kind, e.g. method, or a dotted field of {sections})"
            )
        if not isinstance(values, list) or not values:
            raise grid.fail(axis, "a non-empty array of values", values)
        for j, value in enumerate(values):
            if isinstance(value, dict):
                raise grid.fail(f"{axis}[{j}]", "a string, a number, true/false or an array", value)


def with_recipe(raw: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """A grid point on top of a recipe config; the point's augmentations add to the recipe's."""
    combined = merge(recipe, raw)
    recipe_augs = coerce(recipe.get("aug", {}).get("names", []), list[str], "aug.names")
    point_augs = raw.get("aug", {}).get("names")
    if recipe_augs and point_augs is not None:
        added = [a for a in coerce(point_augs, list[str], "aug.names") if a not in ("", "none")]
        combined["aug"] = {**combined["aug"], "names": [*recipe_augs, *added]}
    return combined


def plan(
    path: Path, plugins: Plugins, overrides: list[str], recipe: dict[str, Any]
) -> list[SweepRun]:
    """Validate every configuration of a sweep file before anything runs."""
    data = read_toml(path)
    if "sweep" not in data or not isinstance(data["sweep"], dict):
        raise UsageError(f"{path} has no [sweep] table")
    extra = parse_set(overrides)
    runs, invalid = [], []
    for label, raw in expand(data["sweep"], str(path)):
        try:
            full = merge(with_recipe(raw, recipe), extra)
            runs.append(SweepRun(label, resolve(full, plugins), full))
        except HarnessError as err:
            invalid.append(f"run '{label}': {err}")
    if invalid:
        more = f" (and {len(invalid) - 1} more invalid run(s))" if len(invalid) > 1 else ""
        raise UsageError(f"{path}: {invalid[0]}{more}; nothing was run")
    return runs


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@config_and_set_options(
    "A recipe (TOML) under every run; the grid's augmentations add to its own.",
    "Override a config value in every run (repeatable).",
)
@out_and_store_options("Folder for run folders.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the runs (for slurm also the sbatch file) and whether they are stored; run nothing.",
)
@click.option(
    "--executor",
    type=str,
    default=None,
    help="Where cells run: inline (here, one after the other; default), local (parallel "
    "processes) or slurm (one job per cell, as a job array).",
)
@click.option("--status", "show_status", is_flag=True, help="Show each cell's state; run nothing.")
@click.option("--jobs", type=int, default=None, help="local: processes at once (default: CPUs).")
@click.option("--max-parallel", type=int, default=None, help="slurm: array tasks at once.")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--time", "time_min", type=int, default=None, help="Minutes per job (default 240).")
@click.option("--cpus", type=int, default=None, help="CPUs per job.")
@click.option("--mem", default=None, help="slurm: memory per job, e.g. 32G.")
@click.option("--gpus", type=int, default=None, help="slurm: GPUs per job.")
@click.option("--nproc", type=int, default=None, help="Processes (GPUs) per cell, via torchrun.")
@click.option("--account", default=None, help="slurm: account.")
@click.option("--qos", default=None, help="slurm: quality of service.")
@click.option(
    "--sbatch",
    "sbatch_lines",
    multiple=True,
    metavar="OPTION",
    help="slurm: an extra #SBATCH option, e.g. --sbatch=--constraint=a100 (repeatable).",
)
@click.option(
    "--no-wait", is_flag=True, help="slurm: submit and return; later sweeps ingest the results."
)
@click.pass_context
def sweep(
    ctx: click.Context,
    sweep_file: Path,
    config_file: Path | None,
    assignments: tuple[str, ...],
    out: Path,
    store_path: Path | None,
    dry_run: bool,
    show_status: bool,
    no_wait: bool,
    **flags: Any,
) -> None:
    """Run every configuration of SWEEP_FILE that is not yet in the results store."""
    recipe = read_toml(config_file) if config_file else {}
    opts = executor_options(sweep_file, config_file, recipe, flags)
    recipe = {k: v for k, v in recipe.items() if k != "executor"}
    if opts.executor == "slurm" and not (dry_run or show_status):
        require_sbatch()
    runs = plan(sweep_file, plugins_from(ctx), list(assignments), recipe)
    results = ResultStore(store_path or default_store(out))
    ingest(out, results)
    if show_status or opts.executor != "inline":
        specs, blocked, _ = scan_global_options(ctx.find_root().obj.get("argv", []))
        specs = [str(Path(s).resolve()) if Path(s).is_file() else s for s in specs]
        cells = [
            Cell(
                r.label,
                r.config.config_hash(),
                r.raw,
                str(out.resolve()),
                specs,
                blocked,
                store=results.owner,
            )
            for r in runs
        ]
        report = SweepProgress(len(runs), plugins_from(ctx))
        run_jobs(sweep_file, cells, opts, out, results, dry_run, show_status, no_wait, report)
        return
    run_inline(sweep_file, runs, out, results, dry_run, SweepProgress(len(runs), plugins_from(ctx)))


def run_inline(
    sweep_file: Path,
    runs: list[SweepRun],
    out: Path,
    results: ResultStore,
    dry_run: bool,
    report: SweepProgress,
) -> None:
    """Run the cells here, one after the other: a result line per cell with the ETA across
    cells, then a summary."""
    if dry_run:
        for i, run in enumerate(runs, 1):
            stored = results.has_config(run.config.config_hash())
            note(f"[{i}/{len(runs)}] {run.label}: {'already stored' if stored else 'would run'}")
        todo = sum(1 for r in runs if not results.has_config(r.config.config_hash()))
        click.echo(f"sweep {sweep_file}: {todo} to run, {len(runs) - todo} already stored")
        return
    for i, run in enumerate(runs, 1):
        if results.has_config(run.config.config_hash()):
            note(report.skipped(run.label))
            continue
        note(f"[{i}/{len(runs)}] {run.label}: running")
        started = time.monotonic()
        try:
            result = run_experiment(run.config, out, results)
        except KeyboardInterrupt:
            stored = [r.label for r in report.results if r.state == "stored"]
            skipped = sum(1 for r in report.results if r.state == "skipped")
            failed = sum(1 for r in report.results if r.state == "failed")
            raise Interrupted(
                f"sweep {sweep_file} interrupted at run {i}/{len(runs)} ({run.label}), which "
                f"was not stored; {len(stored)} run(s) stored before it"
                + (f" ({', '.join(stored)})" if stored else "")
                + f", {skipped} already stored, {failed} failed"
            ) from None
        except Exception as err:  # a failing run is reported and the sweep goes on
            kind = "" if isinstance(err, HarnessError) else f"{type(err).__name__}: "
            why = f"{kind}{' '.join(str(err).split())}"
            # stored after the check above: the run committed before it failed (or another
            # sweep stored this cell meanwhile); the store decides, with a warning
            records = results.records(config_hash=run.config.config_hash())
            if records:
                note(stored_anyway(run.label, f"the run raised an error ({why})"))
                note(report.stored(run.label, records[-1], time.monotonic() - started))
                continue
            note(report.failed(run.label, why, time.monotonic() - started))
            continue
        note(report.stored(run.label, result.record, time.monotonic() - started))
    for line in report.summary(str(sweep_file)):
        click.echo(line)
    failed = [r.label for r in report.results if r.state == "failed"]
    stored = sum(1 for r in report.results if r.state == "stored")
    click.echo(
        f"sweep {sweep_file}: {stored} stored, {len(runs) - stored - len(failed)} already "
        f"stored, {len(failed)} failed"
    )
    if failed:
        raise HarnessError(f"{len(failed)} sweep run(s) failed: {'; '.join(failed)}")


CLI_KEYS = {"time_min": "time", "sbatch_lines": "sbatch"}


def executor_options(
    sweep_file: Path, config_file: Path | None, recipe: dict[str, Any], flags: dict[str, Any]
) -> ExecutorOptions:
    """Executor options: the config's ``[executor]``, then the spec's, then the flags."""
    spec = read_toml(sweep_file).get("executor", {})
    layers = [option_table(spec, str(sweep_file))]
    if "executor" in recipe:
        layers.insert(0, option_table(recipe["executor"], str(config_file)))
    return build_options(*layers, {CLI_KEYS.get(k, k): v for k, v in flags.items()})
