"""Typed configuration: coercion, unknown keys, bad values, precedence."""

import math
from pathlib import Path

import pytest

from harness.registry.config import coerce, parse_set, resolve
from harness.registry.plugins import load_plugins
from harness.util.errors import UsageError

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
        "normalize": True,
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
    from harness.registry.config import hashed_config

    config = {"method": {"name": "ce"}, "run": {"lr": 1.0, "loggers": ["x"],
                                                "checkpoint_every_steps": 5}}  # fmt: skip
    assert hashed_config(config) == {"method": {"name": "ce"}, "run": {"lr": 1.0}}
    assert hashed_config({"method": {"name": "ce"}}) == {"method": {"name": "ce"}, "run": {}}


def test_finite_to_plain_and_domain_helpers():
    import math

    from harness.api.domains import between, finite, non_negative, positive, unit
    from harness.registry.config import to_plain

    assert finite(1) and finite("x") and finite([1.0, 2]) and finite(0.0)
    assert not finite(math.nan) and not finite(-math.inf) and not finite((1.0, math.inf))
    assert to_plain({"p": Path("a/b"), "t": (1, Path("c"))}) == {"p": "a/b", "t": [1, "c"]}
    for domain in (positive("h"), non_negative("h"), unit("h"), between(0, 1, "h"),
                   between(0, 1, "h", open_high=True)):  # fmt: skip
        assert domain.help == "h"


def test_a_config_file_that_is_not_utf8_names_the_file_and_the_reason(tmp_path):
    from harness.registry.config import read_toml

    path = tmp_path / "bad.toml"
    path.write_bytes(b'title = "\xff"\n')
    with pytest.raises(UsageError, match="^config file .*bad.toml is not UTF-8 text: invalid"):
        read_toml(path)


def test_the_first_protocols_preferred_dataset_is_the_default(plugins):
    fewshot = resolve({"protocol": {"names": ["fewshot"]}}, plugins)
    assert fewshot.as_dict()["dataset"]["name"] == "fewshot-embedded"
    plain = resolve({"protocol": {"names": ["none", "device-logloss"]}}, plugins)
    assert plain.as_dict()["dataset"]["name"] == "tau22-embedded"


# -- exact messages and types (from surviving mutants) ---------------------------------------


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        ("c", "Literal", "bad value for k: 'c' is not one of a, b"),
        ("1.5", int, "bad value for k: '1.5' is not an integer"),
        ("x", float, "bad value for k: 'x' is not a number"),
        (True, float, "bad value for k: True is not a number"),
        ("x", "int | None", "bad value for k: 'x' is not an integer"),
        (5, Path, "bad value for k: 5 is not a path"),
        ("a\0b", Path, "bad value for k: 'a\\x00b' is not a path"),
        ([1, 2, 3], "tuple[float, float]", "bad value for k: expected 2 values, got 3"),
        ("x", "list[int]", "bad value for k: 'x' is not an integer"),
        ("x", "tuple[float, float]", "bad value for k: expected 2 values, got 1"),
    ],
)
def test_coerce_names_the_key_and_the_expected_type(value, hint, message):
    from typing import Literal

    hints = {"Literal": Literal["a", "b"], "int | None": int | None,
             "tuple[float, float]": tuple[float, float], "list[int]": list[int]}  # fmt: skip
    with pytest.raises(UsageError) as raised:
        coerce(value, hints.get(hint, hint), "k")
    assert str(raised.value) == message


def test_coerce_sequences_by_hand():
    assert coerce([1, "2"], tuple[float, float], "k") == (1.0, 2.0)
    assert coerce("1, 2, 3", tuple[int, ...], "k") == (1, 2, 3)
    assert coerce("0.9,0.999", tuple[float, float], "k") == (0.9, 0.999)
    assert coerce("", list[str], "k") == [] and coerce("3", int | None, "k") == 3
    assert coerce("none", int | None, "k") is None


def test_set_values_keep_everything_after_the_first_equals_sign():
    assert parse_set(["dataset.root=/data/a=b"]) == {"dataset": {"root": "/data/a=b"}}


def test_a_table_over_a_value_names_the_full_key():
    from harness.registry.config import merge

    with pytest.raises(UsageError) as raised:
        merge({"method": {"head": {"dim": 1}}}, {"method": {"head": {"dim": {"x": 1}}}})
    assert str(raised.value) == "config key 'method.head.dim' must be a table, got 1"


def test_unknown_keys_suggest_at_most_three_close_names():
    from harness.registry.config import unknown_key_message

    known = ["run.lr", "run.lr1", "run.lr2", "run.lr3", "run.seed"]
    assert unknown_key_message("run.lrx", known) == (
        "unknown config key 'run.lrx'. Did you mean: run.lr, run.lr3, run.lr2? "
        "Valid keys: run.lr, run.lr1, run.lr2, run.lr3, run.seed"
    )
    assert unknown_key_message("zzz", []).endswith("Valid keys: none")
    with pytest.raises(UsageError, match="^unknown config key 'runn'. Did you mean: run\\?"):
        resolve({"runn": {}}, load_plugins())


def test_domain_messages_read_as_a_bound_or_a_range():
    from harness.api.domains import Domain

    assert Domain(gt=0).problem(-1) == "-1 must be > 0"
    assert Domain(ge=0, lt=1).problem(2) == "2 must be in [0, 1)"
    assert Domain(gt=0).problem(math.inf) == "inf must be a finite number"


def test_list_sections_name_the_listed_components():
    plugins = load_plugins()
    with pytest.raises(UsageError) as raised:
        resolve({"aug": {"names": [], "vintage": {"p": 0.5}}}, plugins)
    assert str(raised.value) == "aug.vintage is set but 'vintage' is not in aug.names (empty)"
    with pytest.raises(UsageError) as raised:
        resolve({"aug": {"names": ["vintage"], "vintage": {"p": 2.0}}}, plugins)
    assert str(raised.value) == "bad value in aug.vintage: p must be in [0, 1], got 2.0"
    with pytest.raises(UsageError) as raised:  # non-finite: the domain names the key
        resolve({"aug": {"names": ["vintage"], "vintage": {"p": "nan"}}}, plugins)
    assert str(raised.value).startswith("bad value for aug.vintage.p: nan must be")
    with pytest.raises(UsageError) as raised:
        resolve({"protocol": {"names": "fewshot,linear", "fewshot": {"n_way": "x"}}}, plugins)
    assert str(raised.value) == "bad value for protocol.fewshot.n_way: 'x' is not an integer"


def test_the_first_protocol_picks_the_default_data_set_and_loggers_are_kept():
    plugins = load_plugins()
    fewshot = resolve({"protocol": {"names": ["fewshot"]}}, plugins)
    preferred = plugins["protocol"].get("fewshot").cls.default_dataset
    assert preferred and fewshot.dataset.name == preferred
    assert (
        resolve({}, plugins).dataset.name
        == resolve({"protocol": {"names": []}}, plugins).dataset.name
    )
    logged = resolve({"run": {"loggers": ["tensorboard"]}}, plugins)
    assert [c.name for c in logged.loggers] == ["tensorboard"]


def test_only_a_backbone_takes_a_published_checkpoint_name():
    plugins = load_plugins()
    with pytest.raises(UsageError, match="method.pretrained"):
        resolve({"method": {"name": "ce", "pretrained": "x"}}, plugins)
