"""The import rules of docs/architecture.md, read from the source with ``ast``.

- Core packages are layers: a module imports only its own package and the packages below.
- No import circles between core modules, counting imports inside functions too (only
  ``if TYPE_CHECKING:`` imports are left out): an import inside a function may keep torch
  out of ``harness --help``, never hide a circle.
- Imports inside functions are listed here with their reason; a new one fails until listed.
- A plugin imports only ``harness``, ``harness.api``, ``harness.nn`` and the ``_`` helper
  modules of its own kind: never another plugin, never the core's internals.
- No ``getattr``/``hasattr`` on components: optional behaviour is declared on the base
  classes of ``harness.api``. The calls that remain are on other objects, listed here.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ["util", "api", "data", "nn", "registry", "results", "engine", "run", "cli"]
"""Core packages, lowest first: each may import itself and those before it."""
TOP_MODULES = {"harness.notebook": len(LAYERS), "harness.__main__": len(LAYERS)}
ROOT_RANK = LAYERS.index("api")
"""``harness`` itself (``hookimpl``, ``__version__``) and the ``harness.testing`` shim sit
with the API."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "plugins":
        parts[0] = "harness_plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


CORE = {module_name(p): p for p in sorted((ROOT / "harness").rglob("*.py"))}
PLUGINS = {module_name(p): p for p in sorted((ROOT / "plugins").rglob("*.py"))}


def rank(module: str) -> int:
    if module in TOP_MODULES:
        return TOP_MODULES[module]
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return ROOT_RANK


def type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(sub) for sub in ast.walk(node))
    return inside


def imported(node: ast.Import | ast.ImportFrom, known: dict[str, Path], package: str) -> list[str]:
    """The modules an import statement loads (``from a import b`` is ``a.b`` when that is a
    module, else ``a``); relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
    ]


def imports_of(path: Path, known: dict[str, Path]) -> list[tuple[str, bool, int]]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return imports_in(path.read_text(), known, package)


def imports_in(source: str, known: dict[str, Path], package: str) -> list[tuple[str, bool, int]]:
    """``(module, inside_a_function, line)`` of every import but ``TYPE_CHECKING`` ones."""
    tree = ast.parse(source)
    skip = type_checking_nodes(tree)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function.update(id(sub) for sub in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
            for module in imported(node, known, package):
                found.append((module, id(node) in in_function, node.lineno))
    return found


def test_the_layers_are_the_core_packages():
    packages = {p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)
    for package in LAYERS:
        init = ROOT / "harness" / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init} must say what its package may import"


def test_core_packages_import_only_their_own_layer_and_those_below():
    wrong = [
        f"{CORE[source].relative_to(ROOT)}:{line} imports {target}"
        for source in CORE
        for target, _, line in imports_of(CORE[source], CORE)
        if target.startswith("harness") and rank(target) > rank(source)
    ]
    assert wrong == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def core_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, path in CORE.items():
        graph[source]
        for target, _, _ in imports_of(path, CORE):
            if target in CORE and target != source:
                graph[source].add(target)
    return graph


def test_tarjan_finds_a_circle_and_only_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_core_modules():
    assert strongly_connected(core_graph()) == []


TORCH_FREE_HELP = "keeps torch (or pandas) out of `harness --help` and the fast commands"
LAZY_IMPORTS = {
    "harness.cli.main": (
        {
            "harness.run.experiment",
            "harness.engine.distributed",
            "harness.engine.resume",
            "harness.results.leaderboard",
            "harness.results.render",
            "torch.distributed.elastic.multiprocessing.errors",
            "torch.distributed.run",
        },
        TORCH_FREE_HELP,
    ),
    "harness.notebook": ({"harness.run.experiment"}, "reading stored results needs no torch"),
    "harness.registry.pretrained": (
        {"harness.util.progress", "tqdm.auto"},
        "a progress bar only while downloading (tqdm is 60 ms of every start otherwise)",
    ),
    "harness.nn.impulse.bank": ({"sofar"}, "read only for .sofa files (a slow import)"),
}
"""Imports inside functions, each with its reason (see the module docstring)."""


def test_imports_inside_functions_are_listed_with_their_reason():
    found: dict[str, set[str]] = defaultdict(set)
    for source, path in CORE.items():
        for target, in_function, _ in imports_of(path, CORE):
            if in_function:
                found[source].add(target)
    listed = {module: set(targets) for module, (targets, _) in LAZY_IMPORTS.items()}
    unlisted = {m: sorted(t - listed.get(m, set())) for m, t in found.items()}
    assert {m: t for m, t in unlisted.items() if t} == {}
    stale = {m: sorted(t - found.get(m, set())) for m, t in listed.items()}
    assert {m: t for m, t in stale.items() if t} == {}


ALLOWED_FOR_PLUGINS = re.compile(r"^harness(\.api(\..+)?|\.nn(\..+)?)?$")


def plugin_import_problems(module: str, source: str) -> list[str]:
    kind = module.split(".")[1] if module.count(".") >= 2 else None
    problems = []
    for target, _, line in imports_in(source, CORE | PLUGINS, module.rsplit(".", 1)[0]):
        where = f"{module}:{line}"
        if target.startswith("harness_plugins"):
            parts = target.split(".")
            own_helper = len(parts) == 3 and parts[1] == kind and parts[2].startswith("_")
            if not own_helper:
                problems.append(f"{where} imports the plugin {target}")
        elif target.startswith("harness") and not ALLOWED_FOR_PLUGINS.match(target):
            problems.append(f"{where} imports the core's internal {target}")
    return problems


def test_plugin_rule_refuses_other_plugins_and_core_internals():
    source = (
        "from harness import hookimpl\nfrom harness.api import Method\n"
        "from harness.nn.layers import vit_block\n"
        "from harness_plugins.methods._common import x\n"
        "from harness_plugins.methods.ce import CrossEntropy\n"
        "from harness_plugins.datasets._common import y\n"
        "from harness.run.experiment import run_experiment\n"
        "from . import ce\n"
        "from ._common import z\n"
    )
    problems = plugin_import_problems("harness_plugins.methods.example", source)
    assert [p.split(" imports ")[1] for p in problems] == [
        "the plugin harness_plugins.methods.ce",
        "the plugin harness_plugins.datasets._common",
        "the core's internal harness.run.experiment",
        "the plugin harness_plugins.methods.ce",
    ]


@pytest.mark.parametrize("module", sorted(PLUGINS))
def test_plugins_import_only_the_public_api_and_their_own_helpers(module):
    assert plugin_import_problems(module, PLUGINS[module].read_text()) == []


PROBE_FREE_OBJECTS = {
    "harness/cli/executors.py": ({"opts"}, "the executor options' own fields by name"),
    "harness/cli/main.py": ({"os"}, "sched_getaffinity exists on Linux only"),
    "harness/data/loader.py": (
        {"signal", "os", "iterator", "self.loader"},
        "platform signals and torch DataLoader internals (worker shutdown)",
    ),
    "harness/nn/impulse/bank.py": ({"sofa"}, "optional fields of a SOFA file"),
    "harness/notebook.py": ({"r"}, "RunRecord fields by name"),
    "harness/registry/plugins.py": (
        {"dist", "self.pm.hook"},
        "pluggy's hook callers by name; an old importlib distribution's project_name",
    ),
    "harness/results/html.py": ({"value"}, "numpy scalars to plain numbers"),
    "harness/results/leaderboard.py": (
        {"record", "r", "comparison"},
        "RunRecord fields a spec names; a paired comparison's fields by CSV column",
    ),
}
"""getattr/hasattr calls that are not on components (see the module docstring)."""


def attribute_probes(path: Path) -> list[tuple[str, int]]:
    probes = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
        ):
            probes.append((ast.unparse(node.args[0]), node.lineno))
    return probes


def test_no_getattr_or_hasattr_on_components():
    unlisted = []
    for path in [*CORE.values(), *PLUGINS.values()]:
        name = str(path.relative_to(ROOT))
        allowed, _ = PROBE_FREE_OBJECTS.get(name, (set(), ""))
        for target, line in attribute_probes(path):
            if target != "self" and target not in allowed:
                unlisted.append(f"{name}:{line} getattr/hasattr on {target}")
    assert unlisted == []


def test_every_package_is_in_the_distribution():
    """A package missing from ``[tool.setuptools] packages`` works in an editable install and
    is absent from the wheel."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {module_name(init) for init in ROOT.glob("harness/**/__init__.py")}
    found |= {module_name(init) for init in ROOT.glob("plugins/**/__init__.py")}
    assert found == listed
