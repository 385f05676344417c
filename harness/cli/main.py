"""The ``harness`` command line: run, list, leaderboard, plugins, runs and store; the core
commands of :data:`CORE_COMMANDS` (sweep, plot, dirgen) and plugin commands, imported on use."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import traceback
from abc import ABC, abstractmethod
from importlib import import_module
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any

import click
from click.utils import PacifyFlushWrapper

from harness import __version__
from harness.api.settings import RunSettings
from harness.cli.options import (
    DEFAULT_OUT,
    config_and_set_options,
    default_store,
    out_and_store_options,
    plugins_from,
    scan_global_options,
    spec_option,
    store_option,
)
from harness.cli.report import main_metric
from harness.registry.config import merge, parse_set, read_toml, resolve, set_name
from harness.registry.params import describe_fields
from harness.registry.plugins import (
    HOOK_FOR_KIND,
    Plugins,
    build_manifest,
    component_info,
    load_plugins,
)
from harness.results.store import (
    ORPHAN_FOLDER_CHOICES,
    STORE_MARKER,
    ResultStore,
    check_store,
    ingest,
    owned_by,
    remove_run,
    run_folders,
)
from harness.util.cache import clean_stale_cache
from harness.util.errors import HarnessError, UsageError, storage_error
from harness.util.files import write_text_atomic
from harness.util.names import unknown_name_message

PROTOCOL_FLAG = "protocol_flag__"
RUN_KIND = "run"
"""``harness list run``: the run settings (``--set run.KEY=VALUE``)."""
KIND_ALIASES = {f"{kind}s": kind for kind in HOOK_FOR_KIND} | {
    "augs": "augmentation",
    "runs": RUN_KIND,
}

CORE_COMMANDS = {
    "sweep": (
        "harness.cli.sweep:sweep",
        "Run every configuration of SWEEP_FILE that is not yet in the results store.",
    ),
    "plot": (
        "harness.cli.plot:plot",
        "Draw figures (PNG) of impulse-response collections and results.",
    ),
    "dirgen": (
        "harness.cli.dirgen:dirgen",
        "Train and inspect the microphone-trait DIR generator (seed 000, Section 5.3).",
    ),
    "shards": (
        "harness.cli.shards:shards",
        "Write a data set's split as WebDataset shards for streaming, and check them.",
    ),
}
"""Core commands imported on use (``name: ("module:attribute", short help)``), so that
``harness --help`` imports neither torch nor matplotlib."""


class DeclaredCommand(click.Command, ABC):
    """A command listed in ``--help`` before its module is imported; using it imports it."""

    def __init__(self, name: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help, help=short_help)

    @abstractmethod
    def add_real_command(self, ctx: click.Context, group: click.Group) -> None:
        """Add the command this one stands for to ``group``."""

    @property
    @abstractmethod
    def origin(self) -> str:
        """What declares the command, for an error message."""


class PluginCommand(DeclaredCommand):
    """A plugin command known from its manifest; using it imports the plugin."""

    def __init__(self, name: str, plugin: str, short_help: str) -> None:
        super().__init__(name, short_help)
        self.plugin = plugin

    def add_real_command(self, ctx: click.Context, group: click.Group) -> None:
        plugins_from(ctx).call_hook(self.plugin, "register_commands", cli=group)

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}'"


class CoreCommand(DeclaredCommand):
    """A core command of :data:`CORE_COMMANDS`; using it imports its module."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name, short_help)
        self.target = target

    def add_real_command(self, ctx: click.Context, group: click.Group) -> None:
        module, _, attribute = self.target.partition(":")
        group.add_command(vars(import_module(module))[attribute], self.name)

    @property
    def origin(self) -> str:
        return f"module '{self.target}'"


class LazyGroup(click.Group):
    """Lists declared commands in ``--help``; resolving one imports its module or plugin."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, DeclaredCommand):
            cmd.add_real_command(ctx, self)
            real = self.commands.get(name or "")
            if real is None or isinstance(real, DeclaredCommand):
                raise HarnessError(f"{cmd.origin} declares command '{name}' but adds none")
            cmd = real
        return name, cmd, rest


def add_core_commands(group: click.Group) -> None:
    """Declare the :data:`CORE_COMMANDS` that ``group`` does not hold yet."""
    for command, (target, short_help) in CORE_COMMANDS.items():
        if command not in group.commands:
            group.add_command(CoreCommand(command, target, short_help))


def add_declared_commands(plugins: Plugins) -> None:
    """List the commands of plugins not imported yet (from their manifests); a real or core
    command of the same name is kept."""
    for command, (plugin, short_help) in plugins.declared_commands().items():
        if command not in cli.commands or isinstance(cli.commands[command], PluginCommand):
            cli.add_command(PluginCommand(command, plugin, short_help))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
@click.option(
    "--plugin",
    "plugin_specs",
    multiple=True,
    metavar="PATH_OR_MODULE",
    help="Load a plugin from a .py file or an importable module (repeatable).",
)
@click.option(
    "--block",
    "blocked",
    multiple=True,
    metavar="NAME",
    help="Do not load the installed plugin NAME (repeatable).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(
    ctx: click.Context, plugin_specs: tuple[str, ...], blocked: tuple[str, ...], debug: bool
) -> None:
    """Benchmark harness for tuning audio transformers."""
    ctx.ensure_object(dict)


@cli.command()
@click.option("--backbone", help="Backbone name (default: passt).")
@click.option("--method", help="Tuning method (default: ce).")
@click.option("--aug", help="Comma-separated augmentations, or 'none'.")
@click.option("--dataset", help="Data set (default: tau22-embedded).")
@click.option("--protocol", help="Comma-separated evaluation protocols (default: device-logloss).")
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--batch-size", type=int, help="Training batch size.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", help="Torch device: cpu, cuda, cuda:N or auto.")
@config_and_set_options(
    "A TOML config file.", "Override any config value, e.g. --set method.alpha=0.4 (repeatable)."
)
@out_and_store_options("Folder for run folders.")
@click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Processes (GPUs) to train with; launches torchrun (DDP; gloo with --device cpu).",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[PATH]",
    help="Continue the interrupted run of this configuration in OUT (or the in-progress "
    "folder PATH); an error when there is none.",
)
@click.option(
    "--resume-if-any",
    is_flag=True,
    help="Continue the interrupted run of this configuration in OUT if there is one, "
    "else start afresh (for requeued jobs).",
)
@click.option(
    "--log-samples",
    is_flag=True,
    default=None,
    help="Save per-clip predictions of the evaluation split (samples.jsonl in the run "
    "folder: clip, device, label, probabilities); same as --set run.log_samples=true.",
)
@click.pass_context
def run(
    ctx: click.Context,
    config_file: Path | None,
    assignments: tuple[str, ...],
    out: Path,
    store_path: Path | None,
    nproc: int,
    resume: str | None,
    resume_if_any: bool,
    **flags: Any,
) -> None:
    """Train and evaluate one combination, store the run, and print its tables."""
    protocol_sets = [
        f"protocol.{value}"
        for key in [k for k in flags if k.startswith(PROTOCOL_FLAG)]
        for value in flags.pop(key) or ()
    ]
    raw = raw_config(config_file, flags, (*assignments, *protocol_sets))
    cfg = resolve(raw, plugins_from(ctx))
    if nproc != 1 and "LOCAL_RANK" not in os.environ:
        launch_torchrun(nproc, cfg.run.device, ctx.find_root().obj.get("argv", sys.argv[1:]))
        return
    # imports torch: after the config is resolved, so that its errors answer fast
    from harness.run.experiment import run_experiment

    command = ["harness", *ctx.find_root().obj.get("argv", sys.argv[1:])]
    result = run_experiment(
        cfg,
        out,
        ResultStore(store_path or default_store(out)),
        resume,
        resume_if_any,
        command=command,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 prints the tables and the stored run
    for name, table in result.tables.items():
        click.echo(f"\n{name}\n{table}")
    click.echo(f"\nstored run {result.record.run_id} in {result.record.run_dir}")


def launch_torchrun(nproc: int, device: str, argv: list[str]) -> None:
    """Run this command again in ``nproc`` processes under ``torch.distributed.run``."""
    # torch: imported here, not for `harness --help`
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    from harness.engine.distributed import check_nproc

    check_nproc(nproc, device)
    args = strip_nproc(argv)
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores (torchrun would set 1 and warn)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    parsed = get_args_parser().parse_args(
        ["--standalone", "--nproc_per_node", str(nproc), "-m", "harness", *args]
    )
    try:
        torchrun(parsed)
    except ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        code = next((c for c in codes if c > 0), 1)
        raise ProcessFailed(
            f"a training process exited with code {code} (see above)", code
        ) from None


class ProcessFailed(HarnessError):
    """A training process of ``--nproc`` failed; the command exits with its code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def raw_config(
    config_file: str | Path | None, flags: dict[str, Any], assignments: tuple[str, ...]
) -> dict[str, Any]:
    """Defaults < config file < flags < --set."""
    raw: dict[str, Any] = read_toml(config_file) if config_file else {}
    for section in ("backbone", "method", "dataset"):
        if flags.get(section):
            raw = set_name(raw, section, flags[section])
    for flag, section in (("aug", "aug"), ("protocol", "protocol")):
        if flags.get(flag) is not None:
            raw = set_name(raw, section, flags[flag])
    run_flags = {
        k: flags[k]
        for k in ("epochs", "batch_size", "seed", "device", "log_samples")
        if flags.get(k) is not None
    }
    raw = merge(raw, {"run": run_flags})
    return merge(raw, parse_set(list(assignments)))


@cli.command("list")
@click.argument("kind", required=False)
@click.pass_context
def list_(ctx: click.Context, kind: str | None) -> None:
    """List the run settings (``run``) and the registered components with their plugin,
    description and parameters (type, default, help and accepted values)."""
    plugins = plugins_from(ctx)
    kinds = list(HOOK_FOR_KIND)
    if kind is not None:
        wanted = KIND_ALIASES.get(kind, kind)
        if wanted not in (*HOOK_FOR_KIND, RUN_KIND):
            known = [RUN_KIND, *(f"{k}s" for k in kinds)]
            raise HarnessError(unknown_name_message("kind", kind, known))
        kinds = [wanted]
    if kind is None or kinds == [RUN_KIND]:
        click.echo("run settings (--set run.KEY=VALUE):")
        echo_params(describe_fields(RunSettings))
        click.echo("")
    for name in [k for k in kinds if k != RUN_KIND]:
        click.echo(f"{name}s:")
        for entry in plugins[name]:
            info = component_info(entry)
            click.echo(f"  {entry.name}  [{entry.plugin}]  {info['description']}")
            for line in info["extra"]:
                click.echo(f"      {line}")
            if info.get("pretrained"):
                names = ", ".join(info["pretrained"])
                click.echo(f"      pretrained (--set {name}.pretrained=NAME): {names}")
            echo_params(info["params"], indent="      ")
        click.echo("")


def echo_params(rows: list[list[str]], indent: str = "  ") -> None:
    """One line per parameter: ``name: type = default  help  [accepted values]``."""
    for param, type_name, default, help_text, *domain in rows:
        described = f"  {help_text}" if help_text else ""
        accepted = f"  [{domain[0]}]" if domain and domain[0] else ""
        click.echo(f"{indent}{param}: {type_name} = {default}{described}{accepted}")


@cli.command()
@click.option(
    "--manifest-for",
    "distribution",
    metavar="DIST",
    help="Print the manifest of DIST's plugins (metadata read without importing them).",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.pass_context
def plugins(ctx: click.Context, distribution: str | None, output: Path | None) -> None:
    """List loaded plugins: package, version, hooks and what they register."""
    if distribution is not None:
        write_manifest(plugins_from(ctx), distribution, output)
        return
    for row in plugins_from(ctx).describe():
        source = f"{row['package']} {row['version']}" if row["version"] else row["package"]
        click.echo(f"{row['name']}  ({source})")
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
        if row["provides"]:
            click.echo(f"    provides: {', '.join(row['provides'])}")


@cli.command()
@store_option()
@spec_option("A leaderboard spec (TOML), e.g. leaderboards/device_generalization.toml.")
@click.option(
    "--protocol", default=None, help="Protocol whose columns to show (default: device-logloss)."
)
@click.option(
    "--metric",
    default=None,
    help="Metric family of the protocol's columns (e.g. logloss, acc); replaces the spec's list.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "csv", "latex", "html", "json"]),
    help="html: one self-contained page (sortable tables, figures); json: for programs.",
    default="markdown",
    show_default=True,
)
@click.option(
    "--agg",
    type=click.Choice(["best", "mean", "both", "runs"]),
    default=None,
    help="Seeds: best run, mean ± 95% CI, both, or every run (default: the spec's, else both).",
)
@click.option(
    "--baseline",
    default=None,
    help="A row (its label) every other row is compared to, paired by seed, in the mean table: "
    "difference, 95% CI, p-value, Holm (default: the spec's baseline).",
)
@click.option("--backbone", help="Only runs with this backbone.")
@click.option("--method", help="Only runs with this method.")
@click.option("--aug", help="Only runs with this augmentation label (e.g. multidir, none).")
@click.option("--dataset", help="Only runs on this data set.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
@click.pass_context
def leaderboard(
    ctx: click.Context,
    store: Path | None,
    spec: Path | None,
    fmt: str,
    output: Path | None,
    force: bool,
    **options: Any,
) -> None:
    """Render stored runs as a leaderboard table."""
    if output is not None and output.exists() and not force:
        raise UsageError(f"{output} exists; --force overwrites it, --output writes elsewhere")
    # the leaderboard modules import torch (through harness.api): not for `harness --help`
    from harness.results.leaderboard import LeaderboardSpec
    from harness.results.render import render_leaderboard

    board = LeaderboardSpec.from_file(spec) if spec else LeaderboardSpec()
    board = board.with_options(**options)
    results = ResultStore(store or default_store(DEFAULT_OUT))
    ingest(results.path.parent, results)  # run folders that cluster jobs finished
    where = f" --store {store}" if store else ""
    commands = []
    if fmt == "html":
        spec_arg = f" --spec {spec}" if spec else ""
        commands = [f"harness sweep {spec}{where}"] if spec else []
        commands.append(f"harness leaderboard{spec_arg}{where} --format html")
    text = render_leaderboard(board, results, plugins_from(ctx), fmt, commands)
    if spec and fmt == "markdown":
        reproduce = f"harness sweep {spec}{where}\n     harness leaderboard --spec {spec}{where}"
        text = f"<!-- {reproduce} -->\n\n{text}"
    if output:
        write_text_atomic(output, text)
    else:
        click.echo(text)


def write_manifest(loaded: Plugins, distribution: str, output: Path | None) -> None:
    """Print, or write to ``output``, the manifest of ``distribution``'s plugins."""
    try:
        manifest = build_manifest(loaded, distribution)
    except PackageNotFoundError:
        raise HarnessError(f"distribution '{distribution}' is not installed") from None
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    write_text_atomic(output, text)


@cli.command()
@out_and_store_options()
@click.option("--partial", is_flag=True, help="List interrupted (in-progress) runs instead.")
@click.pass_context
def runs(ctx: click.Context, out: Path, store_path: Path | None, partial: bool) -> None:
    """List stored runs with their main metric, or with --partial the interrupted runs
    --resume can continue."""
    if partial:
        from harness.engine.resume import list_partials  # imports torch: not for `harness --help`

        store_file = store_path or default_store(out)
        stored = ResultStore(store_file).run_ids() if store_file.exists() else {}
        found = list_partials(out, stored)
        for item in found:
            click.echo(item.describe())
        if not found:
            click.echo(f"no interrupted runs in {out}")
        return
    records = ResultStore(store_path or default_store(out)).records()
    for record in records:
        click.echo(
            f"{record.run_id}  {record.backbone}/{record.method}/{record.aug}/{record.dataset}"
            f"  seed {record.seed}  {main_metric(record, plugins_from(ctx))}  {record.run_dir}"
        )
    if not records:
        click.echo(f"no stored runs in {store_path or default_store(out)}")


@cli.group()
def store() -> None:
    """Inspect and repair the results store and its run folders."""


@store.command("check")
@out_and_store_options()
@click.option("--repair", is_flag=True, help="Fix what can be fixed (see the list printed).")
@click.option(
    "--orphan-folders",
    type=click.Choice(ORPHAN_FOLDER_CHOICES),
    default="store",
    show_default=True,
    help="With --repair, a run folder without a row: store its record, or delete the folder. "
    "A row without a folder is always deleted.",
)
def store_check(out: Path, store_path: Path | None, repair: bool, orphan_folders: str) -> None:
    """Report inconsistencies between run folders and rows (temporary folders too)."""
    results = ResultStore(store_path or default_store(out))
    problems = check_store(out, results, repair, orphan_folders)
    if repair:
        problems += [f"stale cache folder (removed): {p}" for p in clean_stale_cache()]
    for line in problems:
        click.echo(line)
    open_problems = [p for p in problems if "not recoverable" in p or "integrity_check" in p]
    if not problems:
        click.echo(f"store {results.path} and run folders in {out}: consistent")
    elif not repair:
        raise HarnessError(
            f"{len(problems)} problem(s) found; --repair stores run folders without a row and "
            "deletes rows without a folder (--repair --orphan-folders delete deletes those "
            "folders instead)"
        )
    elif open_problems:
        raise HarnessError(f"{len(open_problems)} problem(s) could not be repaired")


@store.command("rm")
@out_and_store_options()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
def store_rm(out: Path, store_path: Path | None, run_ids: tuple[str, ...]) -> None:
    """Delete stored runs: each one's row and run folder, as one unit."""
    results = ResultStore(store_path or default_store(out))
    for run_id in run_ids:
        folder = remove_run(run_id, results, out)
        where = f" and its folder {folder}" if folder else " (its folder was gone)"
        click.echo(f"deleted run {run_id}: its row in {results.path}{where}")


@store.command("ingest")
@out_and_store_options("Folder of the run folders (written by cluster jobs).")
def store_ingest(out: Path, store_path: Path | None) -> None:
    """Add finished run folders that have no row yet to the store (idempotent)."""
    results = ResultStore(store_path or default_store(out))
    added, problems = ingest(out, results)
    for line in problems:
        click.echo(f"not ingested: {line}")
    click.echo(f"ingested {len(added)} run(s) from {out} into {results.path}")
    others = [f for f in run_folders(out) if not owned_by(f, results)]
    if others:
        click.echo(f"left alone: {len(others)} run folder(s) of other stores ({STORE_MARKER})")
    if problems:
        raise HarnessError(f"{len(problems)} run folder(s) hold no complete record")


def add_protocol_flags(plugins: Plugins) -> None:
    """Give ``harness run`` the extra flags protocols declare (e.g. ``--sweep-n``), read from
    their manifests where they have one (so ``harness run --help`` imports no torch)."""
    existing = {opt for param in run.params for opt in param.opts}
    for entry in plugins["protocol"]:
        for flag, field_name in component_info(entry)["cli_flags"].items():
            if flag in existing:
                continue
            prefix = f"{entry.name}.{field_name}="
            dest = f"{PROTOCOL_FLAG}{entry.name}_{field_name}".replace("-", "_")
            run.params.append(
                click.Option(
                    [flag, dest],
                    multiple=True,
                    callback=lambda _ctx, _param, values, p=prefix: [p + v for v in values],
                    help=f"Sets protocol.{entry.name}.{field_name} (protocol '{entry.name}').",
                )
            )
            existing.add(flag)


def first_command(argv: list[str]) -> str | None:
    """The sub-command's name: the first argument that is neither a global option nor its value."""
    i = 0
    while i < len(argv):
        if argv[i] in ("--plugin", "--block"):
            i += 2
            continue
        if not argv[i].startswith("-"):
            return argv[i]
        i += 1
    return None


def setup_plugins(specs: list[str], blocked: list[str], debug: bool, argv: list[str]) -> Plugins:
    """Load the plugins and their commands; a plugin that raises is a one-line error naming it."""
    try:
        loaded = load_plugins(specs, blocked, lazy=True)
        loaded.pm.hook.register_commands(cli=cli)
        add_declared_commands(loaded)
        if first_command(argv) == "run":  # protocol flags need the protocols imported
            add_protocol_flags(loaded)
    except (HarnessError, SystemExit):
        raise
    except Exception as err:
        if debug:
            raise
        frames = traceback.extract_tb(err.__traceback__)
        where = frames[-1].filename if frames else "?"
        message = " ".join(str(err).split()) or type(err).__name__
        raise HarnessError(
            f"a plugin failed while loading ({where}): {type(err).__name__}: {message}"
        ) from None
    return loaded


def main(argv: list[str] | None = None) -> None:
    """The ``harness`` entry point: load plugins, run the command, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    specs, blocked, debug = scan_global_options(argv)
    try:
        loaded = setup_plugins(specs, blocked, debug, argv)
        cli.main(
            argv, prog_name="harness", standalone_mode=False, obj={"plugins": loaded, "argv": argv}
        )
    except SystemExit as err:
        if debug or isinstance(sys.stdout, PacifyFlushWrapper):
            raise  # click's exit on a closed pipe (harness list | head): no error to report
        click.echo(f"harness: error: plugin code called sys.exit({err.code!r})", err=True)
        sys.exit(2)
    except HarnessError as err:
        if debug:
            raise
        click.echo(f"harness: error: {err}", err=True)
        sys.exit(err.exit_code)
    except (OSError, sqlite3.OperationalError) as err:
        storage = None if debug else storage_error(err)
        if storage is None:
            raise
        click.echo(f"harness: error: {storage}", err=True)
        sys.exit(storage.exit_code)
    except click.exceptions.Abort:
        click.echo("harness: interrupted; nothing was stored", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("harness: interrupted; nothing was stored", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)


add_core_commands(cli)
