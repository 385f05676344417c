"""What several commands share: the run and store paths, the ``--set`` and ``--config``
options, the loaded plugins and the global options read before click parses."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from harness.registry.plugins import Plugins

DEFAULT_OUT = Path("runs")
STORE_DEFAULT_HELP = "default: OUT/results.sqlite, or $HARNESS_STORE"


def default_store(out: Path) -> Path:
    """The results store of run folders in ``out``, unless ``$HARNESS_STORE`` names one."""
    return Path(os.environ.get("HARNESS_STORE", out / "results.sqlite"))


def plugins_from(ctx: click.Context) -> Plugins:
    """The plugins :func:`harness.cli.main.main` loaded for this command line."""
    return ctx.find_root().obj["plugins"]


def store_option(
    what: str = "SQLite results store",
    default_help: str = "default: runs/results.sqlite, or $HARNESS_STORE",
    dest: str = "store",
) -> Callable:
    """``--store``: the SQLite results store file (``dest`` names the parameter)."""
    return click.option(
        "--store",
        dest,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{what} ({default_help}).",
    )


def spec_option(help_text: str) -> Callable:
    """``--spec``: a leaderboard spec file (TOML)."""
    return click.option("--spec", type=click.Path(dir_okay=False, path_type=Path), help=help_text)


def out_and_store_options(out_help: str = "Folder of the run folders.") -> Callable:
    """The ``--out`` folder and ``--store`` file options that every command writing or reading
    run folders takes (parameters ``out`` and ``store_path``)."""

    def decorate(command: Callable) -> Callable:
        command = store_option(default_help=STORE_DEFAULT_HELP, dest="store_path")(command)
        return click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_OUT,
            show_default=True,
            help=out_help,
        )(command)

    return decorate


def config_and_set_options(config_help: str, set_help: str) -> Callable:
    """``--config FILE`` (parameter ``config_file``) and repeatable ``--set KEY=VALUE``
    (parameter ``assignments``)."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--set", "assignments", multiple=True, metavar="KEY=VALUE", help=set_help
        )(command)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=config_help,
        )(command)

    return decorate


def scan_global_options(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """Find --plugin/--block/--debug before click parses, so plugin commands can be added."""
    specs, blocked, debug = [], [], False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--plugin", "--block") and i + 1 < len(argv):
            (specs if arg == "--plugin" else blocked).append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(("--plugin=", "--block=")):
            key, _, value = arg.partition("=")
            (specs if key == "--plugin" else blocked).append(value)
        elif arg == "--debug":
            debug = True
        elif not arg.startswith("-"):
            break
        i += 1
    env_specs = [s for s in os.environ.get("HARNESS_PLUGINS", "").split(os.pathsep) if s]
    return env_specs + specs, blocked, debug
