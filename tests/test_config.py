"""Typed configuration: coercion, unknown keys, bad values, precedence."""

from pathlib import Path

import pytest

from harness.config import coerce, parse_set, resolve
from harness.errors import UsageError
from harness.plugins import load_plugins

TOY = str(Path(__file__).parent / "toy_plugin.py")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins([TOY])


def toy_raw(**sections):
    return {"backbone": {"name": "toy"}, "dataset": {"name": "toy-tones"}, **sections}


def test_set_values_are_typed_by_the_component_config(plugins):
    raw = toy_raw(**parse_set(["method.alpha=0.4", "run.epochs=3", "run.betas=0.9,0.99"]))
    raw["method"]["name"] = "icl"
    cfg = resolve(raw, plugins)
    assert cfg.method.config.alpha == 0.4
    assert cfg.run.epochs == 3
    assert cfg.run.betas == (0.9, 0.99)
    assert cfg.as_dict()["method"] == {
        "name": "icl",
        "alpha": 0.4,
        "beta": 1.0,
        "lambda_icl": 0.5,
        "normalize": False,
        "label_smoothing": 0.0,
    }


def test_unknown_key_names_it_with_a_suggestion(plugins):
    raw = toy_raw(method={"name": "icl", "alpah": "0.3"})
    with pytest.raises(UsageError, match=r"unknown config key 'method\.alpah'.*method\.alpha"):
        resolve(raw, plugins)


def test_bad_value_names_key_and_value(plugins):
    with pytest.raises(UsageError, match=r"run\.epochs: 'ten' is not an integer"):
        resolve(toy_raw(run={"epochs": "ten"}), plugins)
    with pytest.raises(UsageError, match=r"run: epochs must be at least 1"):
        resolve(toy_raw(run={"epochs": 0}), plugins)


def test_unknown_component_suggests_close_names(plugins):
    with pytest.raises(UsageError, match=r"unknown method 'icll'\. Did you mean: icl\?"):
        resolve(toy_raw(method={"name": "icll"}), plugins)


def test_aug_parameters_need_the_aug_to_be_selected(plugins):
    raw = toy_raw(aug={"names": [], "vintage": {"p": "0.5"}})
    with pytest.raises(UsageError, match="aug.vintage is set but 'vintage' is not in aug.names"):
        resolve(raw, plugins)


def test_config_hash_depends_on_values_only(plugins):
    a = resolve(toy_raw(run={"epochs": 2}), plugins)
    b = resolve(toy_raw(run={"epochs": "2"}), plugins)
    c = resolve(toy_raw(run={"epochs": 3}), plugins)
    assert a.config_hash() == b.config_hash() != c.config_hash()


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ("true", bool, True),
        ("0", bool, False),
        ("3", int, 3),
        ("1e-3", float, 1e-3),
        (2, float, 2.0),
        ("a,b", list[str], ["a", "b"]),
        ("", list[str], []),
        ("none", int | None, None),
    ],
)
def test_coerce(value, hint, expected):
    assert coerce(value, hint, "k") == expected


@pytest.mark.parametrize(
    ("value", "hint"), [("yes please", bool), (1.5, int), (True, int), (3, str)]
)
def test_coerce_rejects(value, hint):
    with pytest.raises(UsageError, match="bad value for k"):
        coerce(value, hint, "k")


def test_parse_set_rejects_malformed_items():
    with pytest.raises(UsageError, match="expected key=value"):
        parse_set(["method.alpha"])
    with pytest.raises(UsageError, match="expected section.field"):
        parse_set(["epochs=3"])


# -- what identifies a run, and the small helpers ----------------------------------------


def test_config_hash_ignores_order_and_record_only_run_keys(plugins):
    first = resolve({"method": {"name": "icl", "alpha": 0.3}, "run": {"epochs": 2}}, plugins)
    second = resolve({"run": {"epochs": 2}, "method": {"alpha": 0.3, "name": "icl"}}, plugins)
    logged = resolve(
        {"method": {"name": "icl", "alpha": 0.3}, "run": {"epochs": 2, "loggers": ["tensorboard"]}},
        plugins,
    )
    other = resolve({"method": {"name": "icl", "alpha": 0.4}, "run": {"epochs": 2}}, plugins)
    assert first.config_hash() == second.config_hash() == logged.config_hash()
    assert first.config_hash() != other.config_hash()
    assert list(first.as_dict()) == ["run", "backbone", "method", "dataset", "aug", "protocol"]
    assert first.as_dict()["dataset"]["name"] == "tau22-embedded"
    assert first.as_dict()["backbone"]["name"] == "passt"


def test_hashed_config_drops_record_only_keys_and_keeps_the_rest():
    from harness.config import hashed_config

    config = {"method": {"name": "ce"}, "run": {"lr": 1.0, "loggers": ["x"],
                                                "checkpoint_every_steps": 5}}  # fmt: skip
    assert hashed_config(config) == {"method": {"name": "ce"}, "run": {"lr": 1.0}}
    assert hashed_config({"method": {"name": "ce"}}) == {"method": {"name": "ce"}, "run": {}}


def test_finite_to_plain_and_domain_helpers():
    import math

    from harness.config import between, finite, non_negative, positive, to_plain, unit

    assert finite(1) and finite("x") and finite([1.0, 2]) and finite(0.0)
    assert not finite(math.nan) and not finite(-math.inf) and not finite((1.0, math.inf))
    assert to_plain({"p": Path("a/b"), "t": (1, Path("c"))}) == {"p": "a/b", "t": [1, "c"]}
    for domain in (positive("h"), non_negative("h"), unit("h"), between(0, 1, "h"),
                   between(0, 1, "h", open_high=True)):  # fmt: skip
        assert domain.help == "h"


def test_a_config_file_that_is_not_utf8_names_the_file_and_the_reason(tmp_path):
    from harness.config import read_toml

    path = tmp_path / "bad.toml"
    path.write_bytes(b'title = "\xff"\n')
    with pytest.raises(UsageError, match="^config file .*bad.toml is not UTF-8 text: invalid"):
        read_toml(path)


def test_the_first_protocols_preferred_dataset_is_the_default(plugins):
    fewshot = resolve({"protocol": {"names": ["fewshot"]}}, plugins)
    assert fewshot.as_dict()["dataset"]["name"] == "fewshot-embedded"
    plain = resolve({"protocol": {"names": ["none", "device-logloss"]}}, plugins)
    assert plain.as_dict()["dataset"]["name"] == "tau22-embedded"
