"""Old module paths of the flat core, kept importable for one release (0.2) with a warning.

Before the layered packages, plugins imported helpers as ``harness.config``,
``harness.impulse``, ``harness.testing`` ... Importing such a name now warns and gives a module
whose attributes are looked up in the new homes of its names. Names that became packages
(``harness.api``, ``harness.data``, ``harness.engine``, ``harness.cli``) are not aliased: the
public API stays ``harness.api``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, tuple[str, ...]] = {
    "harness.audio": ("harness.data.audio", "harness.util.audio_files"),
    "harness.audio_cache": ("harness.data.audio_cache",),
    "harness.cache": ("harness.util.cache",),
    "harness.dirgen": ("harness.nn.dirgen", "harness.run.dirgen"),
    "harness.checkpoints": ("harness.registry.checkpoints", "harness.nn.state_dicts"),
    "harness.config": ("harness.registry.config", "harness.api.domains", "harness.api.settings"),
    "harness.distributed": ("harness.engine.distributed",),
    "harness.errors": ("harness.util.errors",),
    "harness.evaluation": ("harness.data.embeddings",),
    "harness.executors": ("harness.cli.executors",),
    "harness.faults": ("harness.util.faults",),
    "harness.fbank": ("harness.nn.fbank",),
    "harness.hookspecs": ("harness.api.hookspecs",),
    "harness.impulse": ("harness.nn.impulse",),
    "harness.layers": ("harness.nn.layers",),
    "harness.leaderboard": ("harness.results.leaderboard", "harness.results.render"),
    "harness.leaderboard_html": ("harness.results.html",),
    "harness.metrics_log": ("harness.engine.metrics_log",),
    "harness.plugins": ("harness.registry.plugins",),
    "harness.pretrained": ("harness.registry.pretrained", "harness.api.pretrained"),
    "harness.progress": ("harness.util.progress",),
    "harness.resume": ("harness.engine.resume",),
    "harness.runner": ("harness.run.experiment",),
    "harness.store": ("harness.results.store",),
    "harness.testing": ("harness.api.testing",),
}
"""Old module -> the modules its names live in now, searched in order."""

_MISSING = object()


class MovedModule(ModuleType):
    """An old module name whose attributes are looked up in its new homes."""

    homes: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> object:
        for home in self.homes:
            value = vars(importlib.import_module(home)).get(name, _MISSING)
            if value is not _MISSING:
                return value
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _Alias(importlib.abc.Loader):
    def __init__(self, homes: tuple[str, ...]) -> None:
        self.homes = homes

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {' and '.join(self.homes)}; "
            "the old name goes away in harness 0.2",
            DeprecationWarning,
            stacklevel=2,
        )
        module = MovedModule(spec.name)
        module.homes = self.homes
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: attributes come from the new homes."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds :data:`MOVED` names and loads their new homes in their place."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        homes = MOVED.get(fullname)
        if homes is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(homes))


def install() -> None:
    """Add the finder once (importing :mod:`harness` calls this)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
