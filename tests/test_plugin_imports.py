"""Plugins use the public API only: ``harness`` (``hookimpl``, ``__version__``), ``harness.api``,
``harness.nn`` and the shared ``_``-modules of their own folder; never another plugin or the
core's internals (cli, run, registry, results, engine, data, util)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
CHECKED_KINDS = ("augmentations", "loggers")
"""Plugin folders held to the rule here (the others are moved to it in their own changes)."""


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at any depth (relative imports resolved to the package)."""
    package = f"harness_plugins.{path.parent.name}"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            found.append(f"{package}.{module}" if node.level else module)
    return found


def allowed(module: str, kind: str) -> bool:
    """Whether a plugin of folder ``kind`` may import ``module``."""
    if module == "harness" or module.startswith(("harness.api", "harness.nn")):
        return module == "harness" or module.split(".")[1] in ("api", "nn")
    if module.startswith("harness_plugins"):
        parts = module.split(".")
        return len(parts) == 3 and parts[1] == kind and parts[2].startswith("_")
    return not module.startswith("harness")


def test_the_rule_admits_the_api_and_own_helpers_only():
    assert allowed("harness", "augmentations") and allowed("torch.nn", "augmentations")
    assert allowed("harness.api", "methods") and allowed("harness.nn.impulse.bank", "methods")
    assert allowed("harness_plugins.datasets._common", "datasets")
    assert not allowed("harness_plugins.datasets._common", "methods")  # another kind's helper
    assert not allowed("harness_plugins.augmentations.multidir", "augmentations")  # a plugin
    assert not allowed("harness.apix", "methods") and not allowed("harness.nnx", "methods")
    for internal in ("cli.main", "run.experiment", "registry.config", "results.store", "util"):
        assert not allowed(f"harness.{internal}", "augmentations")


@pytest.mark.parametrize("kind", CHECKED_KINDS)
def test_plugins_import_only_the_public_api(kind):
    files = sorted((PLUGINS / kind).glob("*.py"))
    assert files
    wrong = [
        f"{path.name}: {module}"
        for path in files
        for module in imported_modules(path)
        if not allowed(module, kind)
    ]
    assert wrong == []
