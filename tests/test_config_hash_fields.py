"""Tests that bite (issue 23, item 9): no config field can drop out of the run hash unnoticed.

For every field of ``RunSettings`` and of every registered component's ``Config``, a run
config differing in that one field alone must hash differently, unless the field is
record-only (``UNHASHED_RUN_KEYS``), which must hash the same. A field that a change made
invisible to the hash (left out of ``as_dict``, added to the unhashed keys, dropped by
``to_plain``) would let a sweep skip a cell as stored, or resume a checkpoint of another
configuration.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest

from harness.registry.config import UNHASHED_RUN_KEYS, Component, RunConfig, resolve
from harness.registry.plugins import load_plugins

SLOTS = {"backbone": "backbone", "method": "method", "dataset": "dataset"}
LIST_SLOTS = {"augmentation": "augs", "protocol": "protocols"}
RECORD_ONLY = {
    "checkpoint_every_steps",
    "loggers",
    "log_every",
    "log_samples",
    "shards",
    "shards_url",
    "data_outside_root",
}
"""The run settings that change only what is recorded or allowed, never the result (how often
a checkpoint is written or a step logged, where events go, whether per-clip predictions are
saved, where the shards of the same clips are read from, whether clip files may lie outside
the data set's root), kept here by hand: adding a key to ``UNHASHED_RUN_KEYS`` must be a
reviewed change of this list too, since any other field changes the result."""


def another_value(value: Any) -> Any:
    """A value of the same kind that differs from ``value`` (types are not re-validated:
    the hash sees only the stored values)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.5
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, Path):
        return value / "other"
    if isinstance(value, list | tuple):
        return type(value)([*value, value[0] if value else 1])
    if isinstance(value, dict):
        return {**value, "other": 1}
    if value is None:
        return 1
    raise AssertionError(f"no other value for {value!r}")


def with_field(config: Any, name: str) -> Any:
    """A copy of ``config`` with field ``name`` changed (``__post_init__`` checks bypassed:
    the changed value need not be valid, only different)."""
    changed = copy.copy(config)
    object.__setattr__(changed, name, another_value(getattr(config, name)))
    return changed


@functools.cache
def base_config() -> RunConfig:
    return resolve({}, load_plugins())


def with_component(cfg: RunConfig, kind: str, component: Component) -> RunConfig:
    if kind in SLOTS:
        return dataclasses.replace(cfg, **{SLOTS[kind]: component})
    return dataclasses.replace(cfg, **{LIST_SLOTS[kind]: [component]})


def cases():
    for f in dataclasses.fields(base_config().run):
        yield "run", None, f.name
    plugins = load_plugins()
    for kind in (*SLOTS, *LIST_SLOTS):
        for entry in plugins[kind]:
            for f in dataclasses.fields(entry.cls.Config):
                yield kind, entry, f.name


CASES = list(cases())
IDS = [f"{k}.{e.name if e else 'run'}.{name}" for k, e, name in CASES]


def test_the_walk_covers_every_kind_and_the_unhashed_keys():
    kinds = {k for k, _, _ in CASES}
    assert kinds == {"run", *SLOTS, *LIST_SLOTS}
    assert {name for k, _, name in CASES if k == "run"} >= set(UNHASHED_RUN_KEYS)
    assert set(UNHASHED_RUN_KEYS) == RECORD_ONLY
    assert len(CASES) > 200


@pytest.mark.parametrize(("kind", "entry", "name"), CASES, ids=IDS)
def test_every_result_field_changes_the_hash_and_no_record_only_field_does(kind, entry, name):
    cfg = base_config()
    if entry is not None:
        cfg = with_component(cfg, kind, Component(entry, entry.cls.Config()))
        config = with_field(cfg_component(cfg, kind).config, name)
        changed = with_component(cfg, kind, Component(entry, config))
    else:
        changed = dataclasses.replace(cfg, run=with_field(cfg.run, name))
    if kind == "run" and name in RECORD_ONLY:
        assert changed.config_hash() == cfg.config_hash(), f"record-only run.{name} is hashed"
    else:
        assert changed.config_hash() != cfg.config_hash(), f"{kind} field {name} is not hashed"


def cfg_component(cfg: RunConfig, kind: str) -> Component:
    return getattr(cfg, SLOTS[kind]) if kind in SLOTS else getattr(cfg, LIST_SLOTS[kind])[0]
