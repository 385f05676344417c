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
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import UsageError
from harness.plugins import Entry, Plugins

# -- field domains ------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """The values one config field accepts, and its one-line help for listings.

    A component's ``Config`` lists its fields' domains in a class attribute
    ``domains = domain_map(field=Domain(...), ...)``; :func:`build_dataclass` checks
    every value against it. Numbers must be finite unless ``finite=False``;
    a sequence's items are each checked; ``None`` (an optional field left unset)
    always passes. A float field without an entry still has to be finite.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    pattern: str | None = None
    """For strings: a regular expression the whole value must match."""
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the domain (``"must be ..."``), or None."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, list | tuple):
            return next((p for p in map(self.problem, value) if p), None)
        if isinstance(value, str):
            if self.pattern and not re.fullmatch(self.pattern, value):
                return f"{value!r} must match {self.pattern}"
            return None
        if not isinstance(value, int | float):
            return None
        if (self.finite or math.isnan(value)) and not math.isfinite(value):
            return f"{value!r} must be a finite number"
        inside = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if not inside:
            where = self.describe()
            return f"{value!r} must be {where if where[0] in '<>' else 'in ' + where}"
        return None

    def describe(self) -> str:
        """The accepted range in interval notation, e.g. ``(0, 1]`` or ``>= 1``."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            return f"{left}{_num(low)}, {_num(high)}{right}"
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_num(low)}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {_num(high)}"
        return "finite" if self.finite else "any number"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


FINITE = Domain()


def domain_map(**fields: Domain) -> types.MappingProxyType:
    """A read-only ``{field: Domain}`` mapping for a Config's ``domains`` attribute."""
    return types.MappingProxyType(fields)


def positive(help: str = "") -> Domain:
    return Domain(gt=0, help=help)


def non_negative(help: str = "") -> Domain:
    return Domain(ge=0, help=help)


def at_least(low: float, help: str = "") -> Domain:
    return Domain(ge=low, help=help)


def between(low: float, high: float, help: str = "", open_high: bool = False) -> Domain:
    """``[low, high]``, or ``[low, high)`` with ``open_high``."""
    if open_high:
        return Domain(ge=low, lt=high, help=help)
    return Domain(ge=low, le=high, help=help)


def unit(help: str = "") -> Domain:
    """A probability or fraction in [0, 1]."""
    return Domain(ge=0, le=1, help=help)


def field_domains(cls: type) -> dict[str, Domain]:
    """Every field's domain, ``domains`` of base classes included (subclasses win)."""
    merged: dict[str, Domain] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("domains", {}))
    return merged


def field_help(cls: type, name: str) -> str:
    """The one-line help of a Config field ('' when none)."""
    domain = field_domains(cls).get(name)
    return domain.help if domain else ""


def is_numeric_hint(hint: Any) -> bool:
    """Whether a field's type holds numbers (int, float, optional or sequences of them)."""
    if hint is bool:
        return False
    if hint in (int, float):
        return True
    return any(is_numeric_hint(a) for a in typing.get_args(hint) if a is not Ellipsis)


def finite(value: Any) -> bool:
    """False for NaN or infinity, also inside a sequence."""
    if isinstance(value, list | tuple):
        return all(map(finite, value))
    return not isinstance(value, float) or math.isfinite(value)


def check_domains(cls: type, values: dict[str, Any], where: str) -> None:
    """Raise a UsageError naming the first value outside its field's domain."""
    known = field_domains(cls)
    for key, value in values.items():
        problem = known.get(key, FINITE).problem(value)
        if problem:
            raise UsageError(f"bad value for {where}.{key}: {problem}")


@dataclass
class RunSettings:
    """Settings of the training loop shared by every method."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    plateau_patience: int = 10
    """Epochs without improvement of the training loss before the learning rate drops."""
    plateau_factor: float = 0.5
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    workers: int | None = None
    """DataLoader worker processes per training process (``none``: auto,
    ``min(8, CPUs / processes - 1)``)."""
    audio_cache: str = "auto"
    """Decoded-audio cache: ``auto`` (under the harness cache folder), ``off``, or a folder."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast dtype of the backbone and method (the front-end stays fp32); fp16 adds a
    gradient scaler."""
    compile: bool = False
    """``torch.compile`` the backbone."""
    grad_accum: int = 1
    """Micro-batches whose gradients add up to one optimizer step."""
    grad_clip: float = 0.0
    """Clip the gradients' global norm to this (0: off)."""
    sync_every: int = 50
    """Steps between reads of the accumulated loss (the step never waits for the GPU)."""
    checkpoint_every_steps: int = 0
    """Optimizer steps between mid-epoch checkpoints (0: only after every epoch)."""
    loggers: list[str] = field(default_factory=list)
    """Loggers that receive the training metrics besides ``metrics.jsonl`` (e.g. tensorboard)."""
    valid_fraction: float = 0.0
    """Fraction of the training clips held out for validation, by whole ``valid_group``
    (0: off, so published protocols stay comparable; a data set's own validation split
    is used when it has one)."""
    valid_group: str = "identifier"
    """Clip metadata key held out together (TAU22: ``identifier``, the recording location),
    so no group is in both; clips without it are their own group."""
    select: Literal["last", "best"] = "last"
    """Weights evaluated: the last epoch's, or the best epoch's by ``select_metric``."""
    select_metric: Literal["valid_acc", "valid_loss"] = "valid_acc"
    """Validation metric ``select=best`` ranks epochs by (accuracy: higher, loss: lower)."""

    domains = domain_map(
        epochs=at_least(1, "Training epochs."),
        batch_size=at_least(1, "Training batch size."),
        eval_batch_size=at_least(1, "Batch size for evaluation."),
        seed=Domain(ge=0, lt=2**63, help="Random seed of torch, numpy and Python."),
        device=Domain(
            pattern=r"cpu|auto|mps|cuda(:\d+)?", help="Torch device: cpu, cuda, cuda:N or auto."
        ),
        lr=Domain(gt=0, le=10, help="Peak learning rate of Adam."),
        betas=between(0, 1, "Adam's beta1, beta2 (each in [0, 1)).", open_high=True),
        eps=non_negative("Adam's epsilon."),
        weight_decay=non_negative("Adam's (L2) weight decay."),
        warmup_epochs=non_negative("Epochs of linear learning-rate warmup."),
        plateau_patience=non_negative("Epochs without improvement before the lr drops."),
        plateau_factor=Domain(gt=0, lt=1, help="Factor of the lr drop on a plateau."),
        threads=non_negative("CPU threads for torch (0: torch's default)."),
        workers=non_negative("DataLoader workers per process (none: auto)."),
        grad_accum=at_least(1, "Micro-batches per optimizer step."),
        grad_clip=non_negative("Clip the gradients' global norm to this (0: off)."),
        sync_every=at_least(1, "Steps between reads of the accumulated loss."),
        checkpoint_every_steps=non_negative("Steps between mid-epoch checkpoints (0: off)."),
        valid_fraction=between(0, 1, "Training clips held out for validation.", open_high=True),
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self.check_scale_settings()

    def check_scale_settings(self) -> None:
        if not self.audio_cache:
            raise ValueError("audio_cache must be auto, off or a folder")


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


UNHASHED_RUN_KEYS = ("checkpoint_every_steps", "loggers")
"""Run settings that change what is recorded, never the result: left out of the hash, so a
run resumes (and compares) whatever its checkpoint frequency and loggers."""


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of :meth:`RunConfig.as_dict` that identifies equal runs."""
    run = {k: v for k, v in config.get("run", {}).items() if k not in UNHASHED_RUN_KEYS}
    return {**config, "run": run}


def to_plain(value: Any) -> Any:
    """Tuples to lists and paths to strings, so configs round-trip through JSON and TOML."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# -- building the raw mapping -------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"config file {path} is not UTF-8 text: {err.reason}") from None
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err.strerror or err}") from None


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


def default_dataset(raw: dict[str, Any], plugins: Plugins) -> str:
    """The first protocol's preferred data set, else the global default."""
    names = (
        raw.get("protocol", {}).get("names", []) if isinstance(raw.get("protocol"), dict) else []
    )
    names = [n for n in coerce(names, list[str], "protocol.names") if n and n != "none"]
    if names and names[0] in plugins["protocol"]:
        preferred = plugins["protocol"].get(names[0]).cls.default_dataset
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
        from harness.pretrained import apply_pretrained

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


def describe_params(cls: type) -> list[tuple[str, str, Any]]:
    """``(name, type, default)`` for each field of a component's Config."""
    hints = typing.get_type_hints(cls.Config)
    rows = []
    for f in dataclasses.fields(cls.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        type_name = type_label(hints[f.name])
        rows.append((f.name, type_name, to_plain(default)))
    return rows


def type_label(hint: Any) -> str:
    """``int``, ``list[str]``, ``one of tiny|small|base`` ... for listings."""
    if typing.get_origin(hint) is Literal:
        return "one of " + "|".join(map(str, typing.get_args(hint)))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")
