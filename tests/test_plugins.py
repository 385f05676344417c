"""Plugin discovery: entry points, local files, duplicates, unknown names."""

import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from harness.registry.plugins import load_plugins
from harness.util.errors import HarnessError, UsageError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "harness-focal-loss"


def test_builtins_register_through_the_entry_point_group():
    plugins = load_plugins()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(pyproject["project"]["entry-points"]["harness"])
    loaded = {row["name"] for row in plugins.describe()}
    assert declared <= loaded
    assert plugins["method"].get("icl").plugin == "icl"
    assert plugins["protocol"].get("device-logloss").plugin == "device-logloss"


def write_plugin(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


DUPLICATE_CE = """
    from harness import hookimpl
    from harness.api import Method

    class MyCE(Method):
        name = "ce"
        description = "A second 'ce'."

    @hookimpl
    def register_methods(register):
        register(MyCE)
"""


def test_two_plugins_with_one_name_is_an_error_naming_both(tmp_path):
    path = write_plugin(tmp_path / "dup.py", DUPLICATE_CE)
    with pytest.raises(
        HarnessError, match=rf"method 'ce' is registered by two plugins: 'ce' and '{path}'"
    ):
        load_plugins([str(path)])


def test_blocked_plugin_is_not_loaded(tmp_path):
    path = write_plugin(tmp_path / "dup.py", DUPLICATE_CE)
    plugins = load_plugins([str(path)], blocked=["ce"])
    assert plugins["method"].get("ce").cls.description == "A second 'ce'."


def test_misspelled_hook_fails_loudly(tmp_path):
    path = write_plugin(
        tmp_path / "typo.py",
        """
        from harness import hookimpl

        @hookimpl
        def register_method(register):
            pass
        """,
    )
    with pytest.raises(HarnessError, match="unknown hook"):
        load_plugins([str(path)])


def test_registering_a_non_component_is_an_error(tmp_path):
    path = write_plugin(
        tmp_path / "bad.py",
        """
        from harness import hookimpl

        @hookimpl
        def register_methods(register):
            register(dict)
        """,
    )
    with pytest.raises(HarnessError, match="not a subclass of harness.api.Method"):
        load_plugins([str(path)])


def test_unknown_plugin_file_or_module():
    with pytest.raises(UsageError, match="plugin file not found: nothere.py"):
        load_plugins(["nothere.py"])
    with pytest.raises(UsageError, match="plugin module not found: no_such_module_xyz"):
        load_plugins(["no_such_module_xyz"])


def test_third_party_package_is_discovered_through_its_dist_info(tmp_path, monkeypatch):
    """Install the example package's metadata the way pip does: a .dist-info on sys.path."""
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    project = meta["project"]
    site = tmp_path / "site"
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_lines = [f"{k} = {v}" for k, v in project["entry-points"]["harness"].items()]
    (dist_info / "entry_points.txt").write_text("[harness]\n" + "\n".join(entry_lines) + "\n")
    for module in (EXAMPLE / "src").glob("*.py"):
        (site / module.name).write_text(module.read_text())
    monkeypatch.syspath_prepend(str(site))

    plugins = load_plugins()
    entry = plugins["method"].get("focal")
    assert entry.plugin == "focal"
    row = next(r for r in plugins.describe() if r["name"] == "focal")
    assert row["package"] == project["name"] and row["version"] == project["version"]
    sys.modules.pop("harness_focal_loss", None)


def test_global_options_are_found_before_the_command_and_from_the_environment(monkeypatch):
    import os

    from harness.cli.main import scan_global_options

    monkeypatch.setenv("HARNESS_PLUGINS", os.pathsep.join(["env_a", "", "env_b"]))
    argv = ["--plugin", "p1", "--block=b1", "--debug", "--plugin=p2", "--block", "b2", "run",
            "--plugin", "after-the-command"]  # fmt: skip
    assert scan_global_options(argv) == (["env_a", "env_b", "p1", "p2"], ["b1", "b2"], True)
    monkeypatch.delenv("HARNESS_PLUGINS")
    assert scan_global_options(["--plugin"]) == ([], [], False)  # a flag without its value
    assert scan_global_options(["list", "--debug"]) == ([], [], False)


def test_the_command_is_the_first_argument_that_is_no_global_option_or_its_value():
    from harness.cli.main import first_command

    assert first_command(["--plugin", "run", "--debug", "--block", "x", "sweep", "run"]) == "sweep"
    assert first_command(["run"]) == "run"
    assert first_command(["--plugin=p", "--debug"]) is None
    assert first_command([]) is None


def test_unknown_name_suggests_up_to_three_close_names_and_lists_all():
    from harness.util.names import unknown_name_message

    names = ["passt", "passa", "pas", "passtt", "beats"]
    assert unknown_name_message("backbone", "pass", names) == (
        "unknown backbone 'pass'. Did you mean: passt, passa, pas? "
        "Available: passt, passa, pas, passtt, beats"
    )
    # similarity 0.5 (2 of 8 letters matched twice) is close enough
    assert unknown_name_message("method", "abcd", ["abxy"]) == (
        "unknown method 'abcd'. Did you mean: abxy? Available: abxy"
    )
    assert unknown_name_message("method", "zzz", ["ce"]) == "unknown method 'zzz'. Available: ce"
    assert unknown_name_message("method", "x", []) == "unknown method 'x'. Available: none"


@pytest.mark.parametrize("name", ["", None, 5])
def test_a_component_needs_a_non_empty_string_name(name):
    from harness.api import Method
    from harness.registry.plugins import Registry

    cls = type("Nameless", (Method,), {} if name is None else {"name": name})
    with pytest.raises(HarnessError, match="^plugin 'p' registered a method without a name$"):
        Registry("method").add(cls, "p")


def test_a_registered_entry_knows_its_name_class_and_plugin():
    from harness.api import Method
    from harness.registry.plugins import Registry

    registry = Registry("method")
    cls = type("Named", (Method,), {"name": "named"})
    registry.add(cls, "my-plugin")
    entry = registry.get("named")
    assert (entry.name, entry.cls, entry.plugin) == ("named", cls, "my-plugin")


LAZY_DEMO = '''
from harness import hookimpl
from harness.api import Method


class LazyDemo(Method):
    name = "lazy-demo"
    description = "A method declared by its package's manifest."


@hookimpl
def register_methods(register):
    register(LazyDemo)


@hookimpl
def register_commands(cli):
    @cli.command("lazy-hello")
    def hello():
        """Says hello lazily."""
'''


def install_lazy_demo(site, manifest_text: str | None = None):
    """A package with one plugin and (optionally) its manifest, installed the way pip does."""
    import importlib

    dist_info = site / "lazy_demo-1.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lazy-demo\nVersion: 1.0\n")
    groups = "[harness]\nlazydemo = harness_lazy_demo\n"
    if manifest_text is not None:
        groups += "[harness.manifest]\nlazydemo = harness_lazy_demo_manifest:MANIFEST\n"
        (site / "harness_lazy_demo_manifest.py").write_text(f"MANIFEST = {manifest_text}\n")
    (dist_info / "entry_points.txt").write_text(groups)
    (site / "harness_lazy_demo.py").write_text(LAZY_DEMO)
    importlib.invalidate_caches()
    for name in ("harness_lazy_demo", "harness_lazy_demo_manifest"):
        sys.modules.pop(name, None)


def test_a_package_manifest_stands_in_for_its_plugin_until_it_is_used(tmp_path, monkeypatch):
    from harness.registry.plugins import LazyEntry, build_manifest

    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    install_lazy_demo(site)
    manifest = build_manifest(load_plugins(), "lazy-demo")
    assert manifest["format"] == 1 and list(manifest["plugins"]) == ["lazydemo"]
    declared = manifest["plugins"]["lazydemo"]
    assert declared["module"] == "harness_lazy_demo"
    assert declared["commands"] == {"lazy-hello": "Says hello lazily."}
    install_lazy_demo(site, repr(manifest))
    try:
        lazy = load_plugins(lazy=True)
        assert "harness_lazy_demo" not in sys.modules
        entry = lazy["method"].get("lazy-demo")
        assert isinstance(entry, LazyEntry) and entry.plugin == "lazydemo"
        assert lazy.declared_commands()["lazy-hello"] == ("lazydemo", "Says hello lazily.")
        assert entry.cls.name == "lazy-demo" and "harness_lazy_demo" in sys.modules
        assert lazy.dists["lazydemo"].metadata["Name"] == "lazy-demo"
        blocked = load_plugins(blocked=["lazydemo"], lazy=True)
        assert "lazy-demo" not in blocked["method"]
        # an edited source no longer matches the manifest: the plugin is imported at once
        sys.modules.pop("harness_lazy_demo", None)
        (site / "harness_lazy_demo.py").write_text(LAZY_DEMO + "\n# edited\n")
        edited = load_plugins(lazy=True)
        assert "harness_lazy_demo" in sys.modules
        assert not isinstance(edited["method"].get("lazy-demo"), LazyEntry)
        # a manifest of another format is ignored
        install_lazy_demo(site, repr({**manifest, "format": 99}))
        assert not isinstance(load_plugins(lazy=True)["method"].get("lazy-demo"), LazyEntry)
    finally:
        for name in ("harness_lazy_demo", "harness_lazy_demo_manifest"):
            sys.modules.pop(name, None)


def test_source_hashes_of_missing_modules_are_none():
    from harness.registry.plugins import source_sha256

    assert source_sha256("no_such_module_xyz") is None
    assert source_sha256("sys") is None  # built in: no source file
    assert len(source_sha256("harness.util.errors")) == 64
