"""Every numeric config field of every registered component declares its domain."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from harness.api.domains import check_domains, field_domains, field_help, is_numeric_hint
from harness.api.settings import RunSettings
from harness.registry.config import resolve
from harness.registry.plugins import HOOK_FOR_KIND, load_plugins
from harness.util.errors import UsageError


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
        ("lr", "0", r"run: lr must be positive, got 0\.0"),
        ("lr", "11", r"run\.lr: 11\.0 must be in \(0, 10\]"),
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


def test_domain_helpers_bounds_and_descriptions():
    from harness.api.domains import Domain, at_least, between, non_negative, positive, unit

    cases = [
        (positive("h"), [1e-9, 5.0], [0.0, -1.0], "> 0"),
        (non_negative("h"), [0.0, 2.0], [-1e-9], ">= 0"),
        (at_least(2, "h"), [2, 3], [1], ">= 2"),
        (between(1, 5, "h"), [1, 5], [0.5, 5.5], "[1, 5]"),
        (between(0, 1, "h", open_high=True), [0.0, 0.999], [1.0, -0.1], "[0, 1)"),
        (unit("h"), [0.0, 1.0], [1.01, -0.01], "[0, 1]"),
        (Domain(gt=0, lt=1), [0.5], [0.0, 1.0], "(0, 1)"),
        (Domain(le=2.5), [2.5, -3.0], [2.6], "<= 2.5"),
        (Domain(lt=0), [-1.0], [0.0], "< 0"),
        (Domain(), [-1e300, 0.0], [math.nan, math.inf], "finite"),
    ]
    for domain, inside, outside, text in cases:
        assert domain.describe() == text
        for value in inside:
            assert domain.problem(value) is None, (text, value)
            assert domain.problem([value, value]) is None
        for value in outside:
            assert domain.problem(value), (text, value)
            assert domain.problem((inside[0], value)), (text, value)
        assert domain.problem(None) is None and domain.problem(True) is None
    assert positive("x").help == "x" and unit("u").help == "u" and at_least(1, "a").help == "a"
    assert Domain(finite=False).problem(math.inf) is None
    assert Domain(finite=False).problem(math.nan) == "nan must be a finite number"
    assert Domain(finite=False).describe() == "any number"
    assert Domain(pattern=r"a|b").problem("c") == "'c' must match a|b"
    assert Domain(pattern=r"a|b").problem("a") is None
    assert Domain(gt=0).problem(-2) == "-2 must be > 0"
    assert Domain(ge=0, le=1).problem(2.0) == "2.0 must be in [0, 1]"


def test_field_help_and_numeric_hints():
    from harness.api.domains import field_domains

    assert field_help(RunSettings, "lr") == "Peak learning rate of Adam."
    assert field_help(RunSettings, "device").startswith("Torch device")
    assert field_help(RunSettings, "nonexistent") == ""
    assert field_domains(RunSettings)["epochs"].ge == 1
    for hint in (int, float, int | None, list[float], tuple[float, float]):
        assert is_numeric_hint(hint), hint
    for hint in (bool, str, list[str], str | None, typing.Literal["a", "b"]):
        assert not is_numeric_hint(hint), hint


def test_subclass_domains_extend_and_override_their_base():
    import dataclasses as dc

    from harness.api.domains import Domain, domain_map

    @dc.dataclass
    class Base:
        a: float = 1.0
        b: float = 1.0
        domains = domain_map(a=Domain(gt=0), b=Domain(gt=0))

    @dc.dataclass
    class Child(Base):
        c: int = 1
        domains = domain_map(b=Domain(ge=-1), c=Domain(ge=1))

    known = field_domains(Child)
    assert known["a"].gt == 0 and known["b"].ge == -1 and known["c"].ge == 1


def test_dataset_defaults_to_the_first_protocols_preference():
    plugins = load_plugins()
    assert resolve({"protocol": {"names": ["fewshot"]}}, plugins).dataset.name == "fewshot-embedded"
    assert resolve({"protocol": {"names": "fewshot"}}, plugins).dataset.name == "fewshot-embedded"
    assert resolve({}, plugins).dataset.name == "tau22-embedded"
    assert resolve({"protocol": {"names": ["linear"]}}, plugins).dataset.name != "fewshot-embedded"
    named = resolve({"protocol": {"names": ["fewshot"]}, "dataset": {"name": "esc50"}}, plugins)
    assert named.dataset.name == "esc50"
    none = resolve({"protocol": {"names": ["none", "fewshot"]}}, plugins)
    assert none.dataset.name == "fewshot-embedded" and [p.name for p in none.protocols] == [
        "fewshot"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("NO", False),
        ("0", False),
        ("off", False),
        (True, True),
        (False, False),
    ],
)
def test_booleans_from_text(text, expected):
    from harness.registry.config import coerce

    assert coerce(text, bool, "k") is expected


def test_bad_booleans_and_sequences_name_the_key():
    from harness.registry.config import coerce

    with pytest.raises(UsageError, match=r"bad value for k: 'maybe' is not a boolean"):
        coerce("maybe", bool, "k")
    with pytest.raises(UsageError, match=r"bad value for k: 1 is not a boolean"):
        coerce(1, bool, "k")
    with pytest.raises(UsageError, match=r"k: expected 2 values, got 3"):
        coerce("1,2,3", tuple[float, float], "k")
    with pytest.raises(UsageError, match=r"bad value for k: 5 is not a list"):
        coerce(5, list[int], "k")
    assert coerce(" 1, 2 ", tuple[float, float], "k") == (1.0, 2.0)
    assert coerce("", list[int], "k") == [] and coerce([1, 2], list[float], "k") == [1.0, 2.0]
    assert coerce(["a"], tuple[str, ...], "k") == ("a",)
    assert coerce("none", int | None, "k") is None and coerce("3", int | None, "k") == 3
    assert coerce("NULL", float | None, "k") is None and coerce("", str | None, "k") is None


def test_unknown_keys_suggest_close_ones_and_list_the_valid():
    from harness.registry.config import unknown_key_message

    message = unknown_key_message("run.lrr", ["run.lr", "run.eps"])
    assert message == (
        "unknown config key 'run.lrr'. Did you mean: run.lr? Valid keys: run.eps, run.lr"
    )
    assert unknown_key_message("zz", []) == "unknown config key 'zz'. Valid keys: none"


def test_config_dict_round_trips_through_resolve_and_hashes_stably():
    plugins = load_plugins()
    raw = {
        "method": {"name": "icl", "alpha": 0.4},
        "aug": {"names": ["specaugment"], "specaugment": {"freq_mask": 8}},
        "protocol": {"names": ["device-logloss", "linear"], "linear": {"c": 2.0}},
        "run": {"betas": [0.8, 0.9]},
    }
    cfg = resolve(raw, plugins)
    plain = cfg.as_dict()
    assert plain["aug"] == {
        "names": ["specaugment"],
        "specaugment": {**plain["aug"]["specaugment"], "name": "specaugment", "freq_mask": 8},
    }
    assert plain["protocol"]["names"] == ["device-logloss", "linear"]
    assert plain["protocol"]["linear"]["c"] == 2.0 and plain["run"]["betas"] == [0.8, 0.9]
    assert resolve(raw, plugins).config_hash() == cfg.config_hash()
    assert len(cfg.config_hash()) == 16 and cfg.aug_label == "specaugment"
    other = resolve({**raw, "method": {"name": "icl", "alpha": 0.5}}, plugins)
    assert other.config_hash() != cfg.config_hash()
    assert resolve({}, plugins).aug_label == "none"


def test_list_sections_reject_duplicates_and_stray_tables():
    plugins = load_plugins()
    with pytest.raises(UsageError, match="aug.names lists a name twice: vintage, vintage"):
        resolve({"aug": {"names": ["vintage", "vintage"]}}, plugins)
    with pytest.raises(UsageError, match=r"aug\.vintage must be a table of parameters"):
        resolve({"aug": {"names": ["vintage"], "vintage": 3}}, plugins)
    with pytest.raises(UsageError, match=r"method\.name must be a non-empty string"):
        resolve({"method": {"name": ""}}, plugins)
