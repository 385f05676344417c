"""A checkpoint path that is not a checkpoint (issue 23, item 3), as a class: every option
that names a weights or checkpoint file (``backbone.checkpoint``, ``aug.dirgen.model``, the
checkpoint of a ``--resume`` folder), given a folder, an empty file, a text file, a
truncated torch file, a pickle with code, or a torch file with the wrong keys or shapes, is
one line naming the file and what is wrong, exit 2, before any data is generated or any
step trains, with nothing written and no ``.partial`` left. The pickle's code never runs.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import typing
from pathlib import Path

import pytest
import torch

from harness.engine.resume import load_checkpoint
from harness.nn.dirgen import load_generator
from harness.nn.torch_files import load_torch_file
from harness.registry.checkpoints import read_checkpoint
from harness.registry.plugins import HOOK_FOR_KIND, load_plugins
from harness.util.errors import DataError, HarnessError
from tests.conftest import TESTS, toy_run_args
from tests.test_hardening import make_tones, run_main
from tests.test_startup_errors import assert_refused_before_work

CHECKPOINT_PLUGIN = TESTS / "checkpoint_plugin.py"


class RunsCode:
    """Unpickling this (without ``weights_only``) would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bad_file(kind: str, folder: Path, good: dict) -> tuple[Path, str]:
    """A file of ``kind`` that is not a usable checkpoint, and the phrase its error names."""
    path = folder / f"{kind}.pt"
    if kind == "folder":
        path.mkdir()
        return path, "is a folder, not a file"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty"
    if kind == "text":
        path.write_text("model weights are on the shared drive\n")
        return path, "is not a torch file"
    if kind == "truncated":
        torch.save(good, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated"
    if kind == "code":
        path.write_bytes(pickle.dumps(RunsCode(folder / "PWNED"), protocol=2))
        return path, "holds pickled code or objects other than tensors (posix.system)"
    raise AssertionError(kind)


UNREADABLE = ["folder", "empty", "text", "truncated", "code"]


@pytest.mark.parametrize("kind", UNREADABLE)
@pytest.mark.parametrize(
    ("loader", "what"),
    [
        (lambda p: load_torch_file(p), "checkpoint"),
        (read_checkpoint, "checkpoint"),
        (load_generator, "DIR generator"),
        (load_checkpoint, "checkpoint"),
    ],
    ids=["load_torch_file", "backbone", "dirgen", "resume"],
)
def test_every_loader_names_the_file_and_what_is_wrong(tmp_path, kind, loader, what):
    path, phrase = write_bad_file(kind, tmp_path, {"w": torch.zeros(64, 64)})
    with pytest.raises(HarnessError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and phrase in message, message
    assert message.startswith(what) or f" {what} " in message
    assert "model weights are on" not in message  # never the file's content
    assert not (tmp_path / "PWNED").exists()  # weights_only: the pickle's code never ran


def test_a_legacy_pickle_with_code_is_refused_too(tmp_path):
    path = tmp_path / "code4.pt"
    path.write_bytes(pickle.dumps(RunsCode(tmp_path / "PWNED"), protocol=4))
    with pytest.raises(DataError, match="nothing in it was run"):
        load_torch_file(path)
    assert not (tmp_path / "PWNED").exists()


def test_a_good_file_loads(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "good.pt")
    assert torch.equal(load_torch_file(tmp_path / "good.pt")["w"], torch.arange(3.0))


# -- every option naming a weights file is covered ------------------------------------------

WEIGHT_FIELD_SUFFIXES = ("checkpoint", "weights", "model", "pretrained")
HANDLED = {"backbone": {"checkpoint"}, "augmentation": {"model"}}
"""Each is read at start-up through :func:`load_torch_file` (``RunParts``: the backbone's
``checkpoint_source``, an augmentation's ``load_files``)."""


def weight_fields():
    plugins = load_plugins()
    for kind in HOOK_FOR_KIND:
        for entry in plugins[kind]:
            hints = typing.get_type_hints(entry.cls.Config)
            for f in dataclasses.fields(entry.cls.Config):
                if f.name.endswith(WEIGHT_FIELD_SUFFIXES) and hints[f.name] in (str, Path):
                    yield kind, entry.name, f.name


def test_every_weights_option_of_the_registry_is_read_at_start_up():
    fields = list(weight_fields())
    assert ("backbone", "passt", "checkpoint") in fields
    assert ("augmentation", "dirgen", "model") in fields
    unhandled = [f for f in fields if f[2] not in HANDLED.get(f[0], set())]
    assert not unhandled, f"read these at start-up through load_torch_file: {unhandled}"


# -- end to end: the command line, before any data is touched -------------------------------


def checkpointed_run(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    args = toy_run_args(tmp_path, "--epochs", "1", *extra)
    args[args.index("toy")] = "toy-checkpointed"
    return run_main(["--plugin", str(CHECKPOINT_PLUGIN), *args], capsys)


def toy_backbone_state() -> dict:
    from tests.checkpoint_plugin import ToyCheckpointed

    return ToyCheckpointed(ToyCheckpointed.Config()).state_dict()


@pytest.mark.parametrize("kind", [*UNREADABLE, "wrong keys", "wrong shapes"])
def test_backbone_checkpoint_that_is_not_one_stops_the_run_at_start_up(tmp_path, capsys, kind):
    state = toy_backbone_state()
    if kind == "wrong keys":
        path, phrase = tmp_path / "keys.pt", "missing keys"
        torch.save({f"encoder.{k}": v for k, v in state.items()}, path)
    elif kind == "wrong shapes":
        path, phrase = tmp_path / "shapes.pt", "shape mismatch"
        torch.save({k: torch.zeros(*v.shape, 2) for k, v in state.items()}, path)
    else:
        path, phrase = write_bad_file(kind, tmp_path, state)
    code, err = checkpointed_run(tmp_path, capsys, "--set", f"backbone.checkpoint={path}")
    assert_refused_before_work(code, err, tmp_path, str(path), phrase)
    assert not any((tmp_path / "tones").iterdir())  # refused before the data set was written
    assert not (tmp_path / "PWNED").exists()


def test_a_good_backbone_checkpoint_is_loaded(tmp_path):
    from harness.cli.main import main

    state = {k: torch.full_like(v, 0.25) for k, v in toy_backbone_state().items()}
    torch.save({"model": state}, tmp_path / "good.pt")
    make_tones(tmp_path / "tones")
    args = toy_run_args(
        tmp_path, "--epochs", "1", "--set", f"backbone.checkpoint={tmp_path / 'good.pt'}"
    )
    args[args.index("toy")] = "toy-checkpointed"
    main(["--plugin", str(CHECKPOINT_PLUGIN), *args])
    (log,) = (tmp_path / "runs").glob("*/log.txt")
    assert f"loaded {len(state)} backbone tensors from {tmp_path / 'good.pt'}" in log.read_text()


@pytest.mark.parametrize("kind", [*UNREADABLE, "not a generator", "wrong keys"])
def test_dirgen_model_that_is_not_one_stops_the_run_at_start_up(tmp_path, capsys, kind):
    if kind == "not a generator":
        path, phrase = tmp_path / "other.pt", "is not a DIR generator"
        torch.save({"w": torch.zeros(2)}, path)
    elif kind == "wrong keys":
        from harness.nn.dirgen import FORMAT

        path, phrase = tmp_path / "keys.pt", "does not fit the generator"
        torch.save(
            {"format": FORMAT, "state_dict": {"w": torch.zeros(2)}, "sample_rate": 8000}, path
        )
    else:
        path, phrase = write_bad_file(kind, tmp_path, {"w": torch.zeros(64, 64)})
    args = toy_run_args(tmp_path, "--epochs", "1", "--set", f"aug.dirgen.model={path}")
    args[args.index("--aug") + 1] = "dirgen"
    code, err = run_main(args, capsys)
    assert_refused_before_work(code, err, tmp_path, str(path), phrase)
    assert not any((tmp_path / "tones").iterdir())  # refused before the data set was written
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """An in-progress folder with a mid-epoch checkpoint (a run interrupted at step 2)."""
    tmp = tmp_path_factory.mktemp("interrupted")
    make_tones(tmp / "tones")
    from harness.cli.main import main

    with pytest.raises(SystemExit):
        main(toy_run_args(tmp, "--method", "interrupting", "--set", "run.checkpoint_every_steps=1"))
    (partial,) = (tmp / "runs" / ".partial").iterdir()
    assert (partial / "rank0.pt").is_file()
    return tmp, partial


@pytest.mark.parametrize("kind", [*UNREADABLE, "incomplete", "wrong shapes"])
def test_resume_from_a_checkpoint_that_is_not_one_is_refused_at_start_up(
    interrupted_run, tmp_path, capsys, kind
):
    source, partial = interrupted_run
    folder = tmp_path / "runs" / ".partial" / partial.name
    folder.parent.mkdir(parents=True)
    shutil.copytree(partial, folder)
    good = torch.load(partial / "rank0.pt", weights_only=True)
    (folder / "rank0.pt").unlink()
    if kind == "incomplete":
        phrase = "not a complete harness checkpoint: position (missing)"
        torch.save({k: v for k, v in good.items() if k != "position"}, folder / "rank0.pt")
    elif kind == "wrong shapes":
        phrase = "does not fit the backbone: mis-shaped"
        backbone = good["backbone"]
        backbone["state_dict"] = {k: torch.zeros(3) for k in backbone["state_dict"]}
        torch.save(good, folder / "rank0.pt")
    else:
        bad, phrase = write_bad_file(kind, tmp_path, good)
        bad.rename(folder / "rank0.pt")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    args = toy_run_args(source, "--method", "interrupting", "--set", "run.checkpoint_every_steps=1")
    args[args.index("--out") + 1] = str(tmp_path / "runs")
    code, err = run_main([*args, "--resume", str(folder)], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(folder / "rank0.pt") in lines[0] and phrase in lines[0], err
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    assert after == before  # nothing written, nothing removed: the folder can still be fixed
    assert not (tmp_path / "PWNED").exists()
