"""Plugin discovery and the typed registries of components.

Plugins come from the ``harness`` entry-point group (built-ins included) and
from ``--plugin PATH_OR_MODULE``. Each ``register_*`` hook fills one
:class:`Registry`; a name claimed twice is an error naming both plugins, and
an unknown name is an error with close-match suggestions.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from harness import api, hookspecs
from harness.errors import HarnessError, UsageError

ENTRY_POINT_GROUP = "harness"

HOOK_FOR_KIND = {
    "backbone": "register_backbones",
    "method": "register_methods",
    "augmentation": "register_augmentations",
    "dataset": "register_datasets",
    "protocol": "register_protocols",
}


@dataclass(frozen=True)
class Entry:
    """A registered component and the plugin that registered it."""

    name: str
    cls: type
    plugin: str


class Registry:
    """Components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, cls: type, plugin: str) -> None:
        base = api.KINDS[self.kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarnessError(
                f"plugin '{plugin}' registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of harness.api.{base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise HarnessError(f"plugin '{plugin}' registered a {self.kind} without a name")
        if name in self._entries:
            other = self._entries[name].plugin
            raise HarnessError(
                f"{self.kind} '{name}' is registered by two plugins: '{other}' and '{plugin}'"
            )
        self._entries[name] = Entry(name, cls, plugin)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise UsageError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self):
        return iter(self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Available: {', '.join(known) or 'none'}"


class Plugins:
    """The loaded plugins and the registries they filled."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.registries = {kind: Registry(kind) for kind in HOOK_FOR_KIND}
        for kind, hook_name in HOOK_FOR_KIND.items():
            self._collect(kind, hook_name)

    def _collect(self, kind: str, hook_name: str) -> None:
        registry = self.registries[kind]
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=lambda cls, p=plugin_name: registry.add(cls, p))

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    def describe(self) -> list[dict[str, Any]]:
        """One row per plugin: name, version, hooks and what it registered."""
        provides: dict[str, list[str]] = {}
        for registry in self.registries.values():
            for entry in registry:
                provides.setdefault(entry.plugin, []).append(f"{registry.kind}:{entry.name}")
        dists = dict(self.pm.list_plugin_distinfo())
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            dist = dists.get(plugin)
            rows.append(
                {
                    "name": name,
                    "package": dist.project_name if dist else "local",
                    "version": dist.version if dist else "",
                    "hooks": sorted(h.name for h in self.pm.get_hookcallers(plugin) or []),
                    "provides": provides.get(name, []),
                }
            )
        return rows


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(extra: Iterable[str] = (), blocked: Iterable[str] = ()) -> Plugins:
    """Load entry-point plugins plus ``extra`` files or modules, skipping ``blocked`` names."""
    pm = new_plugin_manager()
    for name in blocked:
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for spec in extra:
        module = import_plugin(spec)
        if pm.is_registered(module):
            continue
        pm.register(module, name=spec)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise HarnessError(f"plugin '{err.plugin}' implements an unknown hook: {err}") from None
    return Plugins(pm)


def import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a ``.py`` file path or a dotted module name."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise UsageError(f"plugin file not found: {spec}")
        module_name = f"harness_local_plugin_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"cannot import plugin file: {spec}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise HarnessError(f"plugin file {spec} failed to import: {err}") from err
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError:
        raise UsageError(f"plugin module not found: {spec}") from None
