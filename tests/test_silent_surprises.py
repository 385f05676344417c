"""Silent surprises become visible (issue 23, item 7): a class missing from the training
split is a warning line; a misspelled ``run.valid_group`` is a one-line error, not a silent
fall-back to single-clip groups."""

from __future__ import annotations

from pathlib import Path

from harness.api import Clip, DataSplits
from harness.run.components import check_valid_group, classes_without_training_clips
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones, run_main


def run_ok(argv: list[str], capsys) -> str:
    """``harness`` in this process, expected to succeed: its stderr."""
    from harness.cli.main import main

    main(argv)
    return capsys.readouterr().err


LOPSIDED = """
from harness import hookimpl
from tests.toy_plugin import ToyTones


class Lopsided(ToyTones):
    name = "toy-lopsided"

    def load(self):
        splits = super().load()
        splits.train = [c for c in splits.train if c.label != 2]
        return splits


@hookimpl
def register_datasets(register):
    register(Lopsided)
"""


def clips(labels: list[int], meta: dict | None = None) -> list[Clip]:
    return [Clip(Path(f"{i}.wav"), label, meta=meta or {}) for i, label in enumerate(labels)]


def test_classes_without_training_clips_are_named_in_class_order():
    splits = DataSplits(["a", "b", "c", "d"], clips([1, 1, 3]), clips([0, 1, 2, 3]), 1.0)
    assert classes_without_training_clips(splits) == ["a", "c"]
    splits.train = clips([-1, -1])  # unlabeled training (self-supervised): nothing to say
    assert classes_without_training_clips(splits) == []
    splits.train = clips([0, 1, 2, 3])
    assert classes_without_training_clips(splits) == []


def test_a_class_missing_from_the_training_split_is_a_warning_line(tmp_path, capsys):
    plugin = tmp_path / "lopsided.py"
    plugin.write_text(LOPSIDED)
    make_tones(tmp_path / "tones")
    args = toy_run_args(tmp_path, "--epochs", "1")
    args[args.index("toy-tones")] = "toy-lopsided"
    err = run_ok(["--plugin", str(plugin), *args], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING: 1 of 3 classes have no training clip (the classifier never sees them): high"
    ]


def test_a_balanced_run_prints_no_class_warning(tmp_path, capsys):
    make_tones(tmp_path / "tones")
    err = run_ok(toy_run_args(tmp_path, "--epochs", "1"), capsys)
    assert "epoch 1/1" in err and "have no training clip" not in err, err


def test_a_misspelled_valid_group_is_a_one_line_error_before_training(tmp_path, capsys):
    make_tones(tmp_path / "tones")
    extra = ["--set", "run.valid_fraction=0.25", "--set", "run.valid_group=identifer"]
    code, err = run_main(toy_run_args(tmp_path, "--epochs", "1", *extra), capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "run.valid_group='identifer': no training clip has this metadata" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_valid_group_names_the_metadata_the_clips_have(capsys):
    located = clips([0, 1], {"identifier": "x", "city": "y"})
    check_valid_group(located, "city")  # present: fine
    try:
        check_valid_group(located, "town")
    except Exception as err:
        assert str(err).endswith("(clips have: city, identifier)")
    else:
        raise AssertionError("a missing valid_group key passed")
    check_valid_group(clips([0, 1]), "identifier")  # the default on a set without groups
    assert "WARNING: run.valid_group='identifier'" in capsys.readouterr().err
