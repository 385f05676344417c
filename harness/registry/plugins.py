"""Plugin discovery and the typed registries of components.

Plugins come from the ``harness`` entry-point group (built-ins included) and
from ``--plugin PATH_OR_MODULE``. Each ``register_*`` hook fills one
:class:`Registry`; a name claimed twice is an error naming both plugins, and
an unknown name is an error with close-match suggestions.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pluggy

from harness import api
from harness.api import hookspecs
from harness.registry.params import describe_fields
from harness.util.errors import HarnessError, UsageError
from harness.util.names import unknown_name_message

ENTRY_POINT_GROUP = "harness"
MANIFEST_GROUP = "harness.manifest"
"""Entry points naming a plugin package's manifest: metadata read without importing plugins."""
MANIFEST_FORMAT = 1

HOOK_FOR_KIND = {
    "backbone": "register_backbones",
    "method": "register_methods",
    "augmentation": "register_augmentations",
    "dataset": "register_datasets",
    "protocol": "register_protocols",
    "logger": "register_loggers",
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
        name = cls.name
        if not isinstance(name, str) or not name:
            raise HarnessError(f"plugin '{plugin}' registered a {self.kind} without a name")
        declared = self._entries.get(name)
        if isinstance(declared, LazyEntry) and declared.plugin == plugin:
            self._entries[name] = Entry(name, cls, plugin)
            return
        if name in self._entries:
            other = self._entries[name].plugin
            raise HarnessError(
                f"{self.kind} '{name}' is registered by two plugins: '{other}' and '{plugin}'"
            )
        self._entries[name] = Entry(name, cls, plugin)

    def add_lazy(self, entry: LazyEntry) -> None:
        """Declare a component from a manifest; its plugin is imported on first ``entry.cls``."""
        if entry.name in self._entries:
            other = self._entries[entry.name].plugin
            raise HarnessError(
                f"{self.kind} '{entry.name}' is registered by two plugins: "
                f"'{other}' and '{entry.plugin}'"
            )
        self._entries[entry.name] = entry

    def lazy_names(self, plugin: str) -> list[str]:
        return [
            e.name
            for e in self._entries.values()
            if isinstance(e, LazyEntry) and e.plugin == plugin
        ]

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


class LazyEntry:
    """A component declared in a plugin's manifest: importing its plugin waits for ``cls``."""

    def __init__(self, kind: str, info: dict[str, Any], plugin: str, owner: Plugins) -> None:
        self.kind = kind
        self.name: str = info["name"]
        self.info = info
        self.plugin = plugin
        self._owner = owner

    @property
    def cls(self) -> type:
        self._owner.load(self.plugin)
        return self._owner[self.kind].get(self.name).cls


INFO_KEYS = {
    "description",
    "extra",
    "params",
    "cli_flags",
    "default_dataset",
    "primary",
    "root_fields",
}
"""What :func:`component_info` returns (``pretrained`` aside, optional for older manifests)."""


def component_info(entry: Entry | LazyEntry) -> dict[str, Any]:
    """``description``, ``extra`` lines, ``params`` (name, type, default, help) for listings and
    a protocol's ``cli_flags`` (``harness run`` flags) and ``default_dataset``: what the
    command line needs before a run, read from a manifest without importing the plugin."""
    if isinstance(entry, LazyEntry) and entry.info.keys() >= INFO_KEYS:
        return entry.info
    cls = entry.cls  # an older manifest lacks some keys: import the plugin
    return {
        "name": entry.name,
        "description": cls.description,
        "extra": list(cls.describe_extra()),
        "pretrained": sorted(cls.pretrained) if issubclass(cls, api.Backbone) else [],
        "params": describe_fields(cls.Config),
        "cli_flags": dict(cls.cli_flags) if issubclass(cls, api.Protocol) else {},
        "default_dataset": cls.default_dataset if issubclass(cls, api.Protocol) else "",
        "primary": primary_column(cls) if issubclass(cls, api.Protocol) else [],
        "root_fields": list(cls.root_fields) if issubclass(cls, api.Dataset) else [],
    }


def primary_column(protocol: type[api.Protocol]) -> list[Any]:
    """``[metric key, label, unit, scale]`` of the column that ranks a protocol's runs
    (``[]``: none); unit and scale as :class:`harness.api.Column` shows the value."""
    key = protocol.primary or (protocol.columns[0].key if protocol.columns else "")
    column = next((c for c in protocol.columns if c.key == key), api.Column(key, key))
    return [key, column.label, column.unit, column.scale] if key else []


@dataclass
class DeclaredPlugin:
    """An entry-point plugin whose manifest stands in for it until something needs it."""

    name: str
    entry_point: Any
    manifest: dict[str, Any]


class Plugins:
    """The loaded plugins and the registries they filled."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        declared: Iterable[DeclaredPlugin] = (),
        dists: dict[str, Any] | None = None,
    ) -> None:
        self.pm = pm
        self.dists: dict[str, Any] = dict(dists or {})
        """``importlib.metadata.Distribution`` by plugin name, for entry points loaded here."""
        self.registries = {kind: Registry(kind) for kind in HOOK_FOR_KIND}
        self.declared = {d.name: d for d in declared}
        for plugin in self.declared.values():
            for kind, infos in plugin.manifest.get("components", {}).items():
                for info in infos:
                    self.registries[kind].add_lazy(LazyEntry(kind, info, plugin.name, self))
        for kind, hook_name in HOOK_FOR_KIND.items():
            self._collect(kind, hook_name)

    def _collect(self, kind: str, hook_name: str, only: object = None) -> None:
        registry = self.registries[kind]
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if only is not None and impl.plugin is not only:
                continue
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=lambda cls, p=plugin_name: registry.add(cls, p))

    def load(self, name: str) -> object:
        """Import a declared plugin now and register what it provides (a no-op once loaded)."""
        if name not in self.declared:
            return self.pm.get_plugin(name)
        plugin = self.declared.pop(name)
        try:
            module = plugin.entry_point.load()
        except Exception as err:
            raise HarnessError(f"plugin '{name}' failed to import: {err}") from err
        self.pm.register(module, name=name)
        self.dists[name] = plugin.entry_point.dist
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as err:
            raise HarnessError(f"plugin '{err.plugin}' implements an unknown hook: {err}") from None
        for kind, hook_name in HOOK_FOR_KIND.items():
            self._collect(kind, hook_name, only=module)
            stale = self.registries[kind].lazy_names(name)
            if stale:
                raise HarnessError(
                    f"plugin '{name}' declares {kind} '{stale[0]}' in its manifest but does not "
                    f"register it; regenerate the manifest (harness plugins --manifest-for ...)"
                )
        return module

    def load_all(self) -> None:
        for name in list(self.declared):
            self.load(name)

    def call_hook(self, name: str, hook_name: str, **kwargs: Any) -> None:
        """Call one plugin's implementation of ``hook_name`` (loading the plugin first)."""
        module = self.load(name)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin is module:
                impl.function(**kwargs)

    def declared_commands(self) -> dict[str, tuple[str, str]]:
        """``{command: (plugin, short help)}`` of plugins that are not imported yet."""
        return {
            command: (plugin.name, short_help)
            for plugin in self.declared.values()
            for command, short_help in plugin.manifest.get("commands", {}).items()
        }

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    def describe(self) -> list[dict[str, Any]]:
        """One row per plugin: name, version, hooks and what it registered."""
        provides: dict[str, list[str]] = {}
        for registry in self.registries.values():
            for entry in registry:
                provides.setdefault(entry.plugin, []).append(f"{registry.kind}:{entry.name}")
        dists = {self.pm.get_name(p): d for p, d in self.pm.list_plugin_distinfo()}
        dists |= self.dists | {n: d.entry_point.dist for n, d in self.declared.items()}
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            rows.append(_row(name, dists.get(name), hooks, provides))
        for name, declared in self.declared.items():
            rows.append(_row(name, dists.get(name), declared.manifest["hooks"], provides))
        return sorted(rows, key=lambda row: row["name"])


def _row(name: str, dist: Any, hooks: list[str], provides: dict) -> dict:
    package = getattr(dist, "project_name", None) or (dist.metadata["Name"] if dist else None)
    return {
        "name": name,
        "package": package or "local",
        "version": dist.version if dist else "",
        "hooks": hooks,
        "provides": provides.get(name, []),
    }


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    extra: Iterable[str] = (), blocked: Iterable[str] = (), lazy: bool = False
) -> Plugins:
    """Load entry-point plugins plus ``extra`` files or modules, skipping ``blocked`` names.

    With ``lazy``, an entry-point plugin whose package ships a current manifest (see
    :func:`build_manifest`) is not imported until one of its components or commands is used;
    plugins without one are imported at once, as before.
    """
    pm = new_plugin_manager()
    blocked = list(blocked)
    for name in blocked:
        pm.set_blocked(name)
    declared: list[DeclaredPlugin] = []
    dists: dict[str, Any] = {}
    if lazy:
        declared = declared_plugins(blocked)
        skip = {d.name for d in declared}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in skip or pm.is_blocked(ep.name) or pm.get_plugin(ep.name):
                continue
            pm.register(ep.load(), name=ep.name)
            dists[ep.name] = ep.dist
    else:
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
    return Plugins(pm, declared, dists)


# -- manifests: metadata declared without importing -----------------------------------


def declared_plugins(blocked: Iterable[str] = ()) -> list[DeclaredPlugin]:
    """Entry-point plugins whose package manifest is current for their source file."""
    manifests: dict[str, dict[str, Any]] = {}
    for ep in importlib.metadata.entry_points(group=MANIFEST_GROUP):
        try:
            manifest = ep.load()
        except Exception:
            continue  # a broken manifest only costs speed: its plugins are imported
        if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT:
            manifests.update(manifest.get("plugins", {}))
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        manifest = manifests.get(ep.name)
        if ep.name in blocked or manifest is None or manifest.get("module") != ep.value:
            continue
        if manifest.get("source_sha256") != source_sha256(ep.value):
            continue  # edited since the manifest was written: import it instead
        out.append(DeclaredPlugin(ep.name, ep, manifest))
    return out


def source_sha256(module_name: str) -> str | None:
    """Hash of a module's source file, found without importing the module itself."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def build_manifest(plugins: Plugins, distribution: str) -> dict[str, Any]:
    """The manifest of every entry-point plugin of ``distribution`` (imports them all)."""
    plugins.load_all()
    wanted = importlib.metadata.distribution(distribution).entry_points
    entries = {ep.name: ep for ep in wanted.select(group=ENTRY_POINT_GROUP)}
    out: dict[str, Any] = {}
    for name, ep in sorted(entries.items()):
        module = plugins.pm.get_plugin(name)
        if module is None:
            continue
        components: dict[str, list[dict[str, Any]]] = {}
        for kind, registry in plugins.registries.items():
            infos = [component_info(e) for e in registry if e.plugin == name]
            if infos:
                components[kind] = infos
        group = click.Group()
        plugins.call_hook(name, "register_commands", cli=group)
        out[name] = {
            "module": ep.value,
            "source_sha256": source_sha256(ep.value),
            "hooks": sorted(h.name for h in plugins.pm.get_hookcallers(module) or []),
            "components": components,
            "commands": {
                cmd_name: cmd.get_short_help_str(limit=80)
                for cmd_name, cmd in sorted(group.commands.items())
            },
        }
    return {"format": MANIFEST_FORMAT, "distribution": distribution, "plugins": out}


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
