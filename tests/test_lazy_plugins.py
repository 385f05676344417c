"""Fast CLI: --help, --version, list and plugins import neither torch nor plugin modules."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness.registry.plugins as plugins_module
from harness.registry.plugins import Entry, LazyEntry, build_manifest, load_plugins
from harness.util.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "plugins" / "manifest.json"

PROBE = """
import sys
from harness.cli.main import main
try:
    main({argv!r})
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "matplotlib")))
plugins = sorted(m for m in sys.modules if m.startswith("harness_plugins.") and m.count(".") > 1)
print("HEAVY", heavy[:5], plugins[:5])
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["list"], ["list", "backbones"], ["plugins"]]
)
def test_fast_commands_import_no_torch_and_no_plugin_module(argv):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "HEAVY [] []" in out, out


def test_help_lists_the_lazy_core_commands():
    out = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "sweep" in out and "plot" in out and "dirgen" in out and "leaderboard" in out


COMMAND_MODULES = """
import sys
from harness.cli.main import main
main({argv!r})
print("LOADED", sorted(m for m in sys.modules if m in {modules!r}))
"""


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["--help"], []),
        (["sweep", "--help"], ["harness.cli.sweep"]),
        (["dirgen", "--help"], ["harness.cli.dirgen"]),
    ],
)
def test_a_lazy_core_command_imports_its_module_only_when_used(argv, loaded):
    modules = ["harness.cli.dirgen", "harness.cli.plot", "harness.cli.sweep"]
    result = subprocess.run(
        [sys.executable, "-c", COMMAND_MODULES.format(argv=argv, modules=modules)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"LOADED {loaded}" in result.stdout
    if argv[0] == "sweep":
        assert "Usage: harness sweep [OPTIONS] SWEEP_FILE" in result.stdout


def test_committed_manifest_is_current():
    fresh = build_manifest(load_plugins(), "audio-tuning-harness")
    committed = json.loads(MANIFEST.read_text())
    assert committed == json.loads(json.dumps(fresh)), (
        "plugins/manifest.json is stale: run "
        "harness plugins --manifest-for audio-tuning-harness --output plugins/manifest.json"
    )


def test_lazy_entry_imports_its_plugin_on_first_use():
    plugins = load_plugins(lazy=True)
    entry = plugins["method"].get("icl")
    assert isinstance(entry, LazyEntry) and "icl" in plugins.declared
    from harness_plugins.methods.icl import InverseContrastive as ICL

    assert entry.cls is ICL
    assert "icl" not in plugins.declared
    assert isinstance(plugins["method"].get("icl"), Entry)
    assert plugins["method"].get("icl").cls is ICL


def test_listing_is_the_same_lazy_or_imported():
    lazy = load_plugins(lazy=True)
    eager = load_plugins()
    for kind in plugins_module.HOOK_FOR_KIND:
        assert [e.name for e in lazy[kind]] == [e.name for e in eager[kind]]
    assert lazy.describe() == eager.describe()


def test_changed_source_falls_back_to_importing(monkeypatch):
    monkeypatch.setattr(plugins_module, "source_sha256", lambda name: "edited")
    plugins = load_plugins(lazy=True)
    assert not plugins.declared
    assert isinstance(plugins["method"].get("icl"), Entry)


def test_local_plugin_clashing_with_a_declared_name_names_both(tmp_path):
    path = tmp_path / "dup.py"
    path.write_text(
        textwrap.dedent(
            """
            from harness import hookimpl
            from harness.api import Method

            class MyCE(Method):
                name = "ce"
                description = "A second 'ce'."

            @hookimpl
            def register_methods(register):
                register(MyCE)
            """
        )
    )
    with pytest.raises(
        HarnessError, match=rf"'ce' is registered by two plugins: 'ce' and '{path}'"
    ):
        load_plugins([str(path)], lazy=True)


def test_manifest_that_declares_more_than_the_plugin_registers_is_an_error():
    plugins = load_plugins(lazy=True)
    info = {"name": "ghost", "description": "", "extra": [], "params": []}
    plugins["method"].add_lazy(LazyEntry("method", info, "ce", plugins))
    with pytest.raises(HarnessError, match="declares method 'ghost' in its manifest"):
        plugins.load("ce")
