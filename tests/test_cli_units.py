"""The command line in process: program name, error mapping, plugin commands, protocol flags,
the --set chain and the store default (the subprocess view is in test_cli.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click
import pytest

from harness.cli import main as cli_module
from harness.cli.main import (
    CORE_COMMANDS,
    DeclaredCommand,
    LazyGroup,
    PluginCommand,
    add_declared_commands,
    add_protocol_flags,
    main,
    raw_config,
)
from harness.cli.options import default_store, out_and_store_options
from harness.registry.plugins import load_plugins
from harness.util.errors import HarnessError, UsageError

HELLO_PLUGIN = '''
import click
from harness import hookimpl

@hookimpl
def register_commands(cli):
    @cli.command("hello")
    @click.argument("who")
    def hello(who):
        """Greets WHO."""
        click.echo(f"hello {who}")
'''


def exit_code(argv: list[str]) -> int | None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code


def test_main_reads_sys_argv_and_names_the_program(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["harness", "--version"])
    main()
    assert capsys.readouterr().out.startswith("harness, version ")
    main(["run", "--help"])
    assert capsys.readouterr().out.startswith("Usage: harness run [OPTIONS]")


def test_a_finished_command_returns_instead_of_exiting(capsys):
    assert main(["list", "methods"]) is None  # not standalone: no SystemExit(0)
    assert "icl" in capsys.readouterr().out


def test_a_plugin_file_adds_its_commands(tmp_path, capsys):
    plugin = tmp_path / "hello_plugin.py"
    plugin.write_text(HELLO_PLUGIN)
    main(["--plugin", str(plugin), "hello", "world"])
    assert capsys.readouterr().out == "hello world\n"
    assert "hello" in cli_module.cli.commands
    cli_module.cli.commands.pop("hello")


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (SystemExit(3), 2, "harness: error: plugin code called sys.exit(3)"),
        (UsageError("bad value for run.lr: -1"), 2, "harness: error: bad value for run.lr: -1"),
        (HarnessError("store is locked"), 2, "harness: error: store is locked"),
        (KeyboardInterrupt(), 130, "harness: interrupted; nothing was stored"),
        (click.exceptions.Abort(), 130, "harness: interrupted; nothing was stored"),
        (click.UsageError("No such option: --x"), 2, "Error: No such option: --x"),
    ],
)
def test_errors_become_one_line_and_an_exit_code(monkeypatch, capsys, raised, code, message):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(cli_module.cli, "main", fail)
    assert exit_code(["list"]) == code
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    if isinstance(raised, (SystemExit, HarnessError)):
        with pytest.raises(type(raised)):  # --debug: the traceback
            main(["--debug", "list"])


def test_cli_main_gets_the_plugins_and_the_raw_argv(monkeypatch):
    seen = {}

    def record(argv, prog_name, standalone_mode, obj):
        seen.update(argv=argv, prog_name=prog_name, standalone=standalone_mode, obj=obj)

    monkeypatch.setattr(cli_module.cli, "main", record)
    main(["--debug", "list", "methods"])
    assert seen["argv"] == seen["obj"]["argv"] == ["--debug", "list", "methods"]
    assert (seen["prog_name"], seen["standalone"]) == ("harness", False)
    assert set(seen["obj"]) == {"plugins", "argv"} and seen["obj"]["plugins"]["method"]


def test_run_gets_the_flags_protocols_declare(capsys):
    main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--sweep-n" in out and "Sets protocol.fewshot.sweep_n (protocol 'fewshot')." in out


def test_protocol_flags_are_added_once_and_set_their_field():
    loaded = load_plugins(lazy=True)
    before = len(cli_module.run.params)
    add_protocol_flags(loaded)
    add_protocol_flags(loaded)
    added = {o: p for p in cli_module.run.params for o in p.opts if o.startswith("--sweep")}
    assert set(added) == {"--sweep-n", "--sweep-k"}
    assert len(cli_module.run.params) - before in (0, 2)  # 0: added by an earlier main()
    option = added["--sweep-n"]
    assert option.multiple and option.name == "protocol_flag__fewshot_sweep_n"
    assert option.callback(None, option, ("3", "5")) == ["fewshot.sweep_n=3", "fewshot.sweep_n=5"]


def test_declared_commands_are_listed_until_a_real_one_replaces_them():
    class Declaring:
        def declared_commands(self):
            return {"sketch": ("sketch-plugin", "Draws."), "run": ("other", "Not this.")}

    real_run = cli_module.cli.commands["run"]
    try:
        add_declared_commands(Declaring())
        sketch = cli_module.cli.commands["sketch"]
        assert isinstance(sketch, DeclaredCommand)
        assert (sketch.name, sketch.plugin, sketch.short_help, sketch.help) == (
            "sketch", "sketch-plugin", "Draws.", "Draws.",
        )  # fmt: skip
        assert cli_module.cli.commands["run"] is real_run  # a real command is kept
        add_declared_commands(Declaring())  # a declared one is replaced by its new declaration
        assert cli_module.cli.commands["sketch"] is not sketch
    finally:
        cli_module.cli.commands.pop("sketch", None)


def test_raw_config_puts_every_flag_in_its_section_and_set_last(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[run]\nepochs = 9\nlr = 0.5\n[method]\nname = "ce"\n')
    flags = {
        "backbone": "toy", "method": "icl", "dataset": "toy-tones", "aug": ["dir"],
        "protocol": ["fewshot"], "epochs": 2, "batch_size": 4, "seed": 7, "device": "cpu",
    }  # fmt: skip
    raw = raw_config(str(config), flags, ("run.seed=8", "method.alpha=0.3"))
    assert raw["backbone"]["name"] == "toy" and raw["dataset"]["name"] == "toy-tones"
    assert raw["method"] == {"name": "icl", "alpha": "0.3"}  # --set values: coerced later
    assert raw["run"] == {"epochs": 2, "lr": 0.5, "batch_size": 4, "seed": "8", "device": "cpu"}
    assert "dir" in str(raw["aug"]) and "fewshot" in str(raw["protocol"])
    empty = raw_config(None, {k: None for k in flags}, ())
    assert empty == {"run": {}}


def test_the_store_defaults_to_the_output_folder_unless_harness_store_is_set(monkeypatch):
    assert default_store(Path("runs")) == Path("runs") / "results.sqlite"
    monkeypatch.setenv("HARNESS_STORE", "/data/all.sqlite")
    assert default_store(Path("runs")) == Path("/data/all.sqlite")


def test_out_and_store_options_give_a_command_both_paths(tmp_path):
    from click.testing import CliRunner

    @click.command()
    @out_and_store_options("Where the runs go.")
    def show(out, store_path):
        click.echo(f"{type(out).__name__} {out} {store_path!r}")

    runner = CliRunner()
    assert runner.invoke(show, []).output == "PosixPath runs None\n"
    store = tmp_path / "s.sqlite"
    result = runner.invoke(show, ["--out", str(tmp_path), "--store", str(store)])
    assert result.output == f"PosixPath {tmp_path} PosixPath('{store}')\n"
    help_text = " ".join(runner.invoke(show, ["--help"]).output.split())
    assert "--out DIRECTORY Where the runs go. [default: runs]" in help_text
    assert (
        "--store FILE SQLite results store (default: OUT/results.sqlite, or $HARNESS_STORE)."
        in help_text
    )
    assert help_text.index("--out") < help_text.index("--store")
    afile = tmp_path / "f"
    afile.write_text("x")
    assert runner.invoke(show, ["--out", str(afile)]).exit_code == 2  # a file, not a folder
    assert runner.invoke(show, ["--store", str(tmp_path)]).exit_code == 2  # a folder
    default_help = " ".join(runner.invoke(
        click.command()(out_and_store_options()(lambda out, store_path: None)), ["--help"]
    ).output.split())  # fmt: skip
    assert "Folder of the run folders. [default: runs]" in default_help


def test_lazy_core_commands_are_listed_and_import_their_module_when_used(capsys):
    main(["--help"])
    listing = capsys.readouterr().out
    assert "sweep" in listing and "Run every configuration of SWEEP_FILE" in listing
    main(["sweep", "--help"])
    assert capsys.readouterr().out.startswith("Usage: harness sweep [OPTIONS] SWEEP_FILE")
    assert not isinstance(cli_module.cli.commands["sweep"], DeclaredCommand)  # the real one
    assert exit_code(["no-such-command"]) == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_every_core_command_target_is_a_click_command_of_that_name():
    for name, (target, short_help) in CORE_COMMANDS.items():
        module, _, attribute = target.partition(":")
        command = vars(importlib.import_module(module))[attribute]
        assert isinstance(command, click.Command) and command.name == name
        assert command.get_short_help_str(limit=200) == short_help


def test_a_declared_command_whose_target_adds_nothing_is_an_error():
    group = LazyGroup()
    group.add_command(PluginCommand("phantom", "phantom-plugin", "Nothing either."))

    class NoPlugins:
        def call_hook(self, plugin, hook, cli):
            assert (plugin, hook, cli) == ("phantom-plugin", "register_commands", group)

    context = click.Context(group, obj={"plugins": NoPlugins()})
    with pytest.raises(HarnessError, match="plugin 'phantom-plugin' declares command 'phantom'"):
        group.resolve_command(context, ["phantom"])


def test_plot_outputs_show_a_fixed_default_or_the_pattern_the_command_fills_in(capsys):
    main(["plot", "tsne", "--help"])
    tsne_help = " ".join(capsys.readouterr().out.split())
    assert (
        "--output PATH PNG file, or folder, to write (default: <run folder>/plots/tsne.png)."
        in tsne_help
    )
    assert "--store FILE SQLite results store for run ids (default: runs/results.sqlite" in (
        tsne_help
    )
    main(["plot", "dirs", "--help"])
    dirs_help = " ".join(capsys.readouterr().out.split())
    assert (
        "--output PATH PNG file, or folder, to write (default: runs/plots/dirs-<aug>.png)."
        in dirs_help
    )
    assert "[default: dirs" not in dirs_help
