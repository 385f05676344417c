"""Typed, validated run configuration.

A run is described by a nested mapping (from defaults, a TOML file, flags and
``--set key=value``), resolved against the registered components: every key
must be a field of the component's ``Config`` dataclass and every value must
convert to the field's type, or the error names the key and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.api.domains import check_domains, finite
from harness.api.settings import RunSettings
from harness.registry.params import to_plain
from harness.registry.plugins import Entry, Plugins, component_info
from harness.registry.pretrained import apply_pretrained
from harness.util.errors import DataError, UsageError
from harness.util.names import unknown_name_message

DEFAULTS: dict[str, Any] = {
    "run": {},
    "backbone": {"name": "passt"},
    "method": {"name": "ce"},
    "aug": {"names": []},
    "dataset": {"name": "tau22-embedded"},
    "protocol": {"names": ["device-logloss"]},
}

SINGLE_KINDS = {"backbone": "backbone", "method": "method", "dataset": "dataset"}
LIST_KINDS = {"aug": "augmentation", "protocol": "protocol"}


@dataclass
class Component:
    """A resolved component: its registry entry and its validated config."""

    entry: Entry
    config: Any

    @property
    def name(self) -> str:
        return self.entry.name

    def build(self) -> Any:
        return self.entry.cls(self.config)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **to_plain(dataclasses.asdict(self.config))}


@dataclass
class RunConfig:
    """Everything that defines a run; its hash identifies equal runs."""

    run: RunSettings
    backbone: Component
    method: Component
    dataset: Component
    augs: list[Component] = field(default_factory=list)
    protocols: list[Component] = field(default_factory=list)
    loggers: list[Component] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": to_plain(dataclasses.asdict(self.run)),
            "backbone": self.backbone.as_dict(),
            "method": self.method.as_dict(),
            "dataset": self.dataset.as_dict(),
            "aug": {"names": [a.name for a in self.augs]}
            | {a.name: a.as_dict() for a in self.augs},
            "protocol": {"names": [p.name for p in self.protocols]}
            | {p.name: p.as_dict() for p in self.protocols},
        }

    def config_hash(self) -> str:
        text = json.dumps(hashed_config(self.as_dict()), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def aug_label(self) -> str:
        return "+".join(a.name for a in self.augs) or "none"


UNHASHED_RUN_KEYS = (
    "checkpoint_every_steps",
    "loggers",
    "log_every",
    "log_samples",
    "shards",
    "shards_url",
    "data_outside_root",
)
"""Run settings that change what is recorded or allowed, never the result: left out of the
hash, so a run resumes (and compares) whatever its checkpoint frequency and loggers."""


HASHED_WHEN_SET = {
    "data_source": "cache",
    "shuffle_buffer": 1000,
    "ema": 0.0,
    "sampler": "uniform",
    "samples_per_epoch": 0,
    "sampler_replacement": False,
    "schedule": "plateau",
}
"""Run settings added after runs were stored: hashed only away from their default (which
reproduces the earlier runs), so the earlier runs keep their hashes."""


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of :meth:`RunConfig.as_dict` that identifies equal runs."""
    run = {
        k: v
        for k, v in config.get("run", {}).items()
        if k not in UNHASHED_RUN_KEYS and (k not in HASHED_WHEN_SET or v != HASHED_WHEN_SET[k])
    }
    return {**config, "run": run}


# -- building the raw mapping -------------------------------------------------


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read (1 MiB; the largest shipped config is under 2 KiB)."""
MAX_CONFIG_DEPTH = 16
"""The deepest nesting of tables and arrays a config may have (the schema needs 3)."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; a file that is not a small, regular, flat enough TOML file
    (a FIFO, ``/dev/urandom``, a folder, nesting thousands deep) is a one-line error."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise UsageError(f"config file {path} is not a regular file")
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"config file {path} is not UTF-8 text: {err.reason}") from None
    except RecursionError:
        raise UsageError(f"config file {path} is nested too deeply") from None
    if nesting_depth(parsed) > MAX_CONFIG_DEPTH:
        raise UsageError(f"config file {path} is nested deeper than {MAX_CONFIG_DEPTH} levels")
    return parsed


def nesting_depth(value: Any) -> int:
    """How deep tables and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; a table never replaces a value or back."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge(old, value, f"{where}{key}.")
        elif isinstance(value, dict) != isinstance(old, dict) and old is not None:
            table, other = (key, old) if isinstance(value, dict) else (key, value)
            raise UsageError(f"config key '{where}{table}' must be a table, got {other!r}")
        else:
            out[key] = value
    return out


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``["method.alpha=0.4", ...]`` -> nested mapping of strings (typed later)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"bad --set '{item}': expected key=value, e.g. method.alpha=0.4")
        parts = key.split(".")
        if len(parts) < 2 or not all(parts):
            raise UsageError(f"bad --set key '{key}': expected section.field, e.g. run.epochs")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"bad --set key '{key}': '{part}' is already a value")
        node[parts[-1]] = value.strip()
    return out


def set_name(raw: dict[str, Any], section: str, value: Any) -> dict[str, Any]:
    """Put a flag such as ``--method icl`` into the raw mapping."""
    return merge(raw, {section: {"names" if section in LIST_KINDS else "name": value}})


# -- resolving ----------------------------------------------------------------


def resolve(raw: dict[str, Any], plugins: Plugins) -> RunConfig:
    """Validate a raw mapping against the registered components."""
    named_dataset = isinstance(raw.get("dataset"), dict) and "name" in raw["dataset"]
    raw = merge(DEFAULTS, raw)
    check_names(raw, plugins)
    check_dataset_roots(raw, plugins)
    if not named_dataset:
        raw["dataset"] = {**raw["dataset"], "name": default_dataset(raw, plugins)}
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(unknown_key_message(key, list(DEFAULTS)))
    run = build_dataclass(RunSettings, table(raw, "run"), "run")
    singles = {
        section: resolve_single(table(raw, section), section, plugins[kind])
        for section, kind in SINGLE_KINDS.items()
    }
    lists = {
        section: resolve_list(table(raw, section), section, plugins[kind])
        for section, kind in LIST_KINDS.items()
    }
    loggers = [
        Component(entry, build_dataclass(entry.cls.Config, {}, f"logger {name}"))
        for name in run.loggers
        for entry in [plugins["logger"].get(name)]
    ]
    return RunConfig(
        run=run, **singles, augs=lists["aug"], protocols=lists["protocol"], loggers=loggers
    )


def check_dataset_roots(raw: dict[str, Any], plugins: Plugins) -> None:
    """Every folder the run's data set reads (its ``root_fields``) that the config sets
    exists: checked from the manifest, so a missing ``dataset.root`` answers before torch."""
    values = table(raw, "dataset")
    name = values.get("name")
    if not isinstance(name, str) or name not in plugins["dataset"]:
        return
    for field_name in component_info(plugins["dataset"].get(name)).get("root_fields", []):
        value = values.get(field_name)
        if isinstance(value, str) and value and not Path(value).expanduser().exists():
            raise DataError(f"dataset.{field_name} does not exist: {Path(value).expanduser()}")


def check_names(raw: dict[str, Any], plugins: Plugins) -> None:
    """Every component name (and a published checkpoint's name) is registered: checked from
    the registries and manifests alone, before any plugin is imported, so a typo answers fast."""
    for section, kind in SINGLE_KINDS.items():
        name = table(raw, section).get("name")
        if isinstance(name, str) and name:
            plugins[kind].get(name)
    for section, kind in LIST_KINDS.items():
        names = coerce(table(raw, section).get("names", []), list[str], f"{section}.names")
        for name in names:
            if name and name != "none":
                plugins[kind].get(name)
    for name in coerce(raw["run"].get("loggers", []), list[str], "run.loggers"):
        plugins["logger"].get(name)
    backbone, pretrained = table(raw, "backbone").get("name"), raw["backbone"].get("pretrained")
    if isinstance(pretrained, str) and pretrained:
        known = component_info(plugins["backbone"].get(backbone)).get("pretrained")
        if known is not None and pretrained not in known:
            where = f"pretrained {backbone} checkpoint"
            raise UsageError(unknown_name_message(where, pretrained, known))


def default_dataset(raw: dict[str, Any], plugins: Plugins) -> str:
    """The first protocol's preferred data set, else the global default."""
    names = (
        raw.get("protocol", {}).get("names", []) if isinstance(raw.get("protocol"), dict) else []
    )
    names = [n for n in coerce(names, list[str], "protocol.names") if n and n != "none"]
    if names and names[0] in plugins["protocol"]:
        preferred = component_info(plugins["protocol"].get(names[0]))["default_dataset"]
        if preferred:
            return preferred
    return DEFAULTS["dataset"]["name"]


def table(raw: dict[str, Any], section: str) -> dict[str, Any]:
    value = raw[section]
    if not isinstance(value, dict):
        raise UsageError(f"config section '{section}' must be a table, got {value!r}")
    return value


def resolve_single(values: dict[str, Any], section: str, registry) -> Component:
    values = dict(values)
    name = values.pop("name", None)
    if not isinstance(name, str) or not name:
        raise UsageError(f"{section}.name must be a non-empty string")
    entry = registry.get(name)
    if section == "backbone" and "pretrained" in values:  # a published checkpoint by name
        values = apply_pretrained(entry.cls, values)
    return Component(entry, build_dataclass(entry.cls.Config, values, section))


def resolve_list(values: dict[str, Any], section: str, registry) -> list[Component]:
    values = dict(values)
    names = coerce(values.pop("names", []), list[str], f"{section}.names")
    names = [n for n in names if n and n != "none"]
    if len(set(names)) != len(names):
        raise UsageError(f"{section}.names lists a name twice: {', '.join(names)}")
    for key in values:
        if key not in names:
            raise UsageError(
                f"{section}.{key} is set but '{key}' is not in {section}.names "
                f"({', '.join(names) or 'empty'})"
            )
    components = []
    for name in names:
        entry = registry.get(name)
        params = values.get(name, {})
        if not isinstance(params, dict):
            raise UsageError(f"{section}.{name} must be a table of parameters")
        components.append(
            Component(entry, build_dataclass(entry.cls.Config, params, f"{section}.{name}"))
        )
    return components


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass from loosely typed values, naming any bad key or value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise UsageError(
                unknown_key_message(f"{where}.{key}", [f"{where}.{f}" for f in fields])
            )
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        built = cls(**kwargs)  # the component's own checks (and messages) come first
    except (ValueError, TypeError) as err:
        check_domains(cls, {k: v for k, v in kwargs.items() if not finite(v)}, where)
        raise UsageError(f"bad value in {where}: {err}") from None
    check_domains(cls, kwargs, where)
    return built


def unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown config key '{key}'.{hint} Valid keys: {', '.join(sorted(known)) or 'none'}"


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (typed, or a string from ``--set``) to the type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and is_none_text(value):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise UsageError(f"bad value for {key}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        return coerce_sequence(value, origin, args, key)
    if hint is bool:
        return coerce_bool(value, key)
    if hint in (int, float):
        return coerce_number(value, hint, key)
    if hint is str:
        if not isinstance(value, str):
            raise UsageError(f"bad value for {key}: {value!r} is not a string")
        return value
    if hint is Path:
        if not isinstance(value, str | Path) or "\0" in str(value):
            raise UsageError(f"bad value for {key}: {value!r} is not a path")
        return Path(value)
    return value


def is_none_text(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))


def coerce_sequence(value: Any, origin: type, args: tuple, key: str) -> Any:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")] if value.strip() else []
    if not isinstance(value, list | tuple):
        raise UsageError(f"bad value for {key}: {value!r} is not a list")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise UsageError(f"bad value for {key}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, key) for v, a in zip(value, args, strict=True))
    item = args[0] if args else Any
    items = [coerce(v, item, key) for v in value]
    return tuple(items) if origin is tuple else items


def coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"bad value for {key}: {value!r} is not a boolean (true/false)")


def coerce_number(value: Any, hint: type, key: str) -> int | float:
    kind = "an integer" if hint is int else "a number"
    if isinstance(value, bool):
        raise UsageError(f"bad value for {key}: {value!r} is not {kind}")
    if isinstance(value, int | float) and not (hint is int and isinstance(value, float)):
        return hint(value)
    if isinstance(value, str):
        try:
            return hint(value)
        except ValueError:
            pass
    raise UsageError(f"bad value for {key}: {value!r} is not {kind}")
