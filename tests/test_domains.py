"""Every numeric config field of every registered component declares its domain."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from harness.config import (
    RunSettings,
    check_domains,
    field_domains,
    field_help,
    is_numeric_hint,
    resolve,
)
from harness.errors import UsageError
from harness.plugins import HOOK_FOR_KIND, load_plugins


def config_classes():
    plugins = load_plugins()
    yield "run", RunSettings
    for kind in HOOK_FOR_KIND:
        for entry in plugins[kind]:
            yield f"{kind} {entry.name}", entry.cls.Config


CLASSES = list(config_classes())


@pytest.mark.parametrize(("where", "cls"), CLASSES, ids=[w for w, _ in CLASSES])
def test_every_numeric_field_has_a_domain_that_its_default_satisfies(where, cls):
    hints = typing.get_type_hints(cls)
    known = field_domains(cls)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if is_numeric_hint(hints[f.name]) and f.name not in known
    ]
    assert not missing, f"{where}: numeric fields without a domain: {missing}"
    assert set(known) <= {f.name for f in dataclasses.fields(cls)}, f"{where}: stale domain keys"
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
    }
    check_domains(cls, defaults, where)  # the defaults are inside their own domains


def test_help_texts_are_one_line():
    for where, cls in CLASSES:
        for name in field_domains(cls):
            assert "\n" not in field_help(cls, name), f"{where}.{name}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", "nan", r"run\.lr: nan must be a finite number"),
        ("lr", "inf", r"run\.lr: inf must be a finite number"),
        ("lr", "0", r"run\.lr: 0\.0 must be in \(0, 10\]"),
        ("plateau_factor", "2", r"run\.plateau_factor: 2\.0 must be in \(0, 1\)"),
        ("betas", "0.9,1.0", r"run\.betas: 1\.0 must be in \[0, 1\)"),
        ("betas", "-0.1,0.9", r"run\.betas: -0\.1 must be in \[0, 1\)"),
        ("eps", "-1e-8", r"run\.eps: -1e-08 must be >= 0"),
        ("weight_decay", "-1", r"run\.weight_decay: -1\.0 must be >= 0"),
        ("threads", "-2", r"run\.threads: -2 must be >= 0"),
        ("warmup_epochs", "-1", r"run\.warmup_epochs: -1 must be >= 0"),
        ("device", "meta", r"run\.device: 'meta' must match"),
    ],
)
def test_run_settings_outside_their_domain_are_usage_errors(key, value, message):
    plugins = load_plugins()
    with pytest.raises(UsageError, match=message):
        resolve({"run": {key: value}, "dataset": {"name": "tau22-embedded"}}, plugins)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dataset": {"name": "tau22-embedded", "scale": "nan"}}, r"dataset\.scale: nan"),
        ({"dataset": {"name": "tau22-embedded", "scale": "inf"}}, r"dataset\.scale: inf"),
        ({"dataset": {"name": "esc50", "clip_seconds": "nan"}}, r"dataset\.clip_seconds: nan"),
        ({"dataset": {"name": "esc50", "clip_seconds": 1e12}}, r"must be in \(0, 3600\]"),
        ({"dataset": {"name": "esc50", "root": 5}}, r"dataset\.root: 5 is not a path"),
        ({"dataset": {"name": "esc50", "root": ["a"]}}, r"dataset\.root: \['a'\] is not a path"),
        ({"method": {"name": "icl", "alpha": math.nan}}, r"method\.alpha: nan"),
        ({"run": 5}, r"config key 'run' must be a table, got 5"),
    ],
)
def test_component_values_outside_their_domain_are_usage_errors(raw, message):
    with pytest.raises(UsageError, match=message):
        resolve(raw, load_plugins())


def test_int_field_gets_an_int_and_float_field_a_float_from_toml_and_set():
    plugins = load_plugins()
    from_toml = resolve({"method": {"name": "icl", "alpha": 1}}, plugins)
    from_set = resolve({"method": {"name": "icl", "alpha": "1"}}, plugins)
    assert type(from_toml.method.config.alpha) is float
    assert type(from_set.method.config.alpha) is float
    assert from_toml.config_hash() == from_set.config_hash()
    epochs = resolve({"run": {"epochs": "3"}}, plugins).run.epochs
    assert type(epochs) is int and epochs == 3
