"""Impossible ``dataset.*`` sizes (issue 23, item 3), as a class: every numeric option of
every registered data set at 0, negative or absurdly large (10**12 clips would fill the
disk), and options inconsistent with each other, are one line naming the option, the value
and the allowed range, exit 2, when the config is read: nothing generated, nothing written.
The ranges are declared in each Config's ``domains`` so ``harness list datasets`` shows them.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from harness.api.domains import field_domains, is_numeric_hint
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness.util.errors import UsageError
from harness_plugins.datasets._common import MAX_GENERATED_CLIPS, MAX_GENERATED_GIB
from tests.test_hardening import run_main

HOSTILE = (0, -1, 10**12)
ACCEPTED = {
    # seeds: any non-negative integer names a data set (or a split) and costs nothing
    ("audioset-embedded", "seed"): {0, 10**12},
    ("fewshot-embedded", "seed"): {0, 10**12},
    ("folder", "seed"): {0, 10**12},
    ("speech-commands-embedded", "seed"): {0, 10**12},
    ("voxceleb1-embedded", "seed"): {0, 10**12},
    ("tau22-embedded", "seed"): {0, 10**12},
    # caps on the clips kept: 0 keeps all, a cap above the set's size keeps all
    ("tau22", "max_train_clips"): {0, 10**12},
    ("tau22", "max_eval_clips"): {0, 10**12},
    # 0 is meaningful: every labeled clip is evaluated; no clip without audio
    ("fewshot-embedded", "fold"): {0},
    ("audioset-embedded", "missing"): {0},
    ("audioset", "max_missing"): {0},
}
"""Values of the hostile set that an option accepts on purpose, and why."""


def numeric_dataset_options():
    for entry in load_plugins()["dataset"]:
        cls = entry.cls.Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if is_numeric_hint(hints[f.name]):
                listed = typing.get_origin(hints[f.name]) in (list, tuple)
                yield entry.name, f.name, cls, listed


OPTIONS = list(numeric_dataset_options())
CASES = [(*option, value) for option in OPTIONS for value in HOSTILE]


def test_the_registry_has_numeric_dataset_options():
    names = {(d, f) for d, f, _, _ in OPTIONS}
    assert {("tau22-embedded", "train_clips_a"), ("fewshot-embedded", "pool_clips")} <= names
    assert len(OPTIONS) >= 30


@pytest.mark.parametrize(
    ("dataset", "option", "cls", "listed", "value"),
    CASES,
    ids=[f"{d}.{o}={v}" for d, o, _, _, v in CASES],
)
def test_every_numeric_dataset_option_refuses_impossible_values(
    dataset, option, cls, listed, value
):
    where = f"dataset.{dataset}"
    given = [value] if listed else value
    if value in ACCEPTED.get((dataset, option), set()):
        build_dataclass(cls, {option: given}, where)
        return
    with pytest.raises(UsageError) as info:
        build_dataclass(cls, {option: given}, where)
    message = str(info.value)
    assert "\n" not in message and where in message and option in message, message
    assert str(value) in message, message
    domain = field_domains(cls).get(option)
    assert domain is not None, f"{where}.{option} declares no range"
    # the allowed range: the declared one, or the component's own words for it ("1-5")
    assert domain.describe() in message or "must be" in message, message
    assert domain.problem(value), f"{where}.{option}={value} is refused but inside its range"


def test_every_clip_count_of_a_generated_set_has_an_upper_bound():
    for dataset, option, cls, _ in OPTIONS:
        if dataset.endswith("-embedded") and option != "seed":
            domain = field_domains(cls)[option]
            bounded = domain.le is not None or domain.lt is not None
            assert bounded, f"dataset.{dataset}.{option} has no upper bound"


INCONSISTENT = [
    (
        "tau22-embedded",
        {"train_clips_a": 100, "train_clips_per_device": 500},
        "train_clips_per_device (500) needs more recordings (50) than train_clips_a (100)",
    ),
    (
        "tau22-embedded",
        {"eval_recordings": 20, "eval_clips_per_device": 201},
        "eval_clips_per_device (201) must be at most 10 per evaluation recording (200",
    ),
    (
        "tau22-embedded",
        {"scale": 100, "train_clips_a": 1_000_000, "train_clips_per_device": 1_000_000},
        f"GiB of audio; at most {MAX_GENERATED_GIB} GiB",
    ),
    ("fewshot-embedded", {"fold": 4, "clips_per_class": 3}, "fold 4 holds no clip"),
    (
        "fewshot-embedded",
        {"pool_clips": MAX_GENERATED_CLIPS, "seconds": 60, "sample_rate": 192000},
        "classes x clips_per_class + pool_clips would generate 1,001,500 clips",
    ),
    (
        "audioset-embedded",
        {"train_clips": MAX_GENERATED_CLIPS, "seconds": 60},
        "train_clips + eval_clips would generate 1,000,120 clips, 1,788 GiB",
    ),
]


@pytest.mark.parametrize(("dataset", "values", "phrase"), INCONSISTENT)
def test_options_inconsistent_with_each_other_are_refused(dataset, values, phrase):
    (entry,) = [e for e in load_plugins()["dataset"] if e.name == dataset]
    with pytest.raises(UsageError, match=f"bad value in dataset.{dataset}: ") as info:
        build_dataclass(entry.cls.Config, values, f"dataset.{dataset}")
    assert phrase in str(info.value), str(info.value)


def test_the_documented_tiny_setting_stays_valid():
    """docs/api.md's tiny run (eval_recordings=2 at scale 0.02) is clamped to one recording
    per scene by the generator, not refused."""
    (entry,) = [e for e in load_plugins()["dataset"] if e.name == "tau22-embedded"]
    values = {"scale": 0.02, "eval_recordings": 2}
    build_dataclass(entry.cls.Config, values, "dataset.tau22-embedded")


def test_an_absurd_size_stops_the_command_line_before_anything_is_generated(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    code, err = run_main(
        [
            "run",
            "--dataset",
            "tau22-embedded",
            "--set",
            "dataset.train_clips_a=1000000000000",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == (
        "harness: error: bad value for dataset.train_clips_a: 1000000000000 must be in [1, 1000000]"
    )
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_harness_list_shows_the_ranges(capsys):
    from harness.cli.main import main

    main(["list", "datasets"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("train_clips_a:"))
    assert "[[1, 1000000]]" in line
