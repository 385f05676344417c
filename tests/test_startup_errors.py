"""Errors before work (issue 23, item 3): every hostile option, file or folder is one line,
exit 2, found before the first training step, with nothing written and no ``.partial`` left.

In process (``harness.cli.main.main``) on the toy plugin, so each case costs well under a
second; out-of-space is injected (``shutil.disk_usage``) and a read-only store is SQLite's
own read-only mode, so the suite needs neither root nor a tmpfs.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import struct
import subprocess
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.api import SPLIT_NAMES
from harness.data.audio import check_header, read_audio
from harness.nn.impulse.bank import read_ir
from harness.registry.config import MAX_CONFIG_BYTES, coerce, read_toml
from harness.registry.plugins import HOOK_FOR_KIND, load_plugins
from harness.util.errors import DataError, UsageError
from harness.util.files import NAME_MAX
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones, run_main


def assert_refused_before_work(code: int, err: str, tmp_path: Path, *needles: str) -> None:
    """Exit 2, one line naming the problem, no epoch trained, no run folder or .partial."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error:"), err
    for needle in needles:
        assert needle in lines[0], err
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


def toy_run(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    make_tones(tmp_path / "tones")
    return run_main(toy_run_args(tmp_path, "--epochs", "1", *extra), capsys)


# -- split options of every protocol --------------------------------------------------------


def split_fields():
    plugins = load_plugins()
    for kind in HOOK_FOR_KIND:
        for entry in plugins[kind]:
            cls = entry.cls.Config
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.name.endswith("split") and f.default in SPLIT_NAMES:
                    yield f"{kind}.{entry.name}.{f.name}", hints[f.name], f.default


SPLIT_FIELDS = list(split_fields())


def test_the_registry_has_split_fields_to_check():
    assert len(SPLIT_FIELDS) >= 3  # device-logloss.split, device-probe.train/eval_split


@pytest.mark.parametrize(
    ("key", "hint", "default"), SPLIT_FIELDS, ids=[k for k, _, _ in SPLIT_FIELDS]
)
def test_every_split_field_refuses_an_unknown_split_when_the_config_is_read(key, hint, default):
    with pytest.raises(UsageError, match=rf"{key}: 'bogus' is not one of"):
        coerce("bogus", hint, key)
    assert coerce(default, hint, key) == default


@pytest.mark.parametrize(
    ("protocol", "key"),
    [("device-logloss", "split"), ("device-probe", "train_split"), ("device-probe", "eval_split")],
)
def test_a_misspelled_protocol_split_stops_the_run_before_training(tmp_path, capsys, protocol, key):
    code, err = toy_run(
        tmp_path, capsys, "--protocol", protocol, "--set", f"protocol.{protocol}.{key}=bogus"
    )
    assert_refused_before_work(code, err, tmp_path, f"protocol.{protocol}.{key}", "'bogus'")
    assert "epoch" not in err


# -- devices --------------------------------------------------------------------------------


def test_a_device_the_machine_lacks_is_refused(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code, err = toy_run(tmp_path, capsys, "--device", "mps")
    assert_refused_before_work(code, err, tmp_path, "run.device is 'mps'", "no MPS device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = toy_run(tmp_path, capsys, "--device", "cuda:3")
    assert_refused_before_work(code, err, tmp_path, "'cuda:3'", "has 1 CUDA device")


# -- config files ---------------------------------------------------------------------------


def test_a_fifo_or_a_device_as_config_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="fifo.toml is not a regular file"):
        read_toml(fifo)  # opening a FIFO for reading would wait for a writer
    with pytest.raises(UsageError, match="/dev/urandom is not a regular file"):
        read_toml("/dev/urandom")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
        ("[" + ".".join(["x"] * 3000) + "]\n", "nested deeper than 16 levels"),
        ("[run]\nepochs = 1\n" + "# pad\n" * (MAX_CONFIG_BYTES // 6 + 1), "larger than"),
    ],
    ids=["arrays", "inline-tables", "table-header", "huge"],
)
def test_a_config_nested_thousands_deep_or_huge_is_a_one_line_error(
    tmp_path, capsys, text, message
):
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, err = toy_run(tmp_path, capsys, "--config", str(path))
    assert_refused_before_work(code, err, tmp_path, str(path), message)


def test_a_shipped_config_is_well_inside_the_limits():
    for path in sorted(Path(__file__).parents[1].glob("configs/**/*.toml")):
        assert read_toml(path) is not None


# -- path names, read-only stores, free space ------------------------------------------------


def test_a_path_component_over_255_bytes_is_refused(tmp_path, capsys):
    long = "a" * (NAME_MAX + 1)
    code, err = toy_run(tmp_path, capsys, "--out", str(tmp_path / long / "runs"))
    assert_refused_before_work(code, err, tmp_path, "output folder", "longer than 255 bytes")
    assert long not in os.listdir(tmp_path)
    code, err = toy_run(tmp_path, capsys, "--store", str(tmp_path / f"{long}.sqlite"))
    assert_refused_before_work(code, err, tmp_path, "results store", "longer than 255 bytes")


@pytest.fixture
def read_only_mount(tmp_path):
    """A small tmpfs holding a fresh store, remounted read-only (where the machine allows:
    root with mount rights); unmounted afterwards."""
    mount = tmp_path / "ro-mount"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a tmpfs needs root and mount rights")
    try:
        from harness.results.store import ResultStore

        ResultStore(mount / "results.sqlite").check_writable()  # an ordinary, empty store
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_store_on_a_read_only_mount_is_refused_before_training(tmp_path, capsys, read_only_mount):
    store = read_only_mount / "results.sqlite"
    code, err = toy_run(tmp_path, capsys, "--store", str(store))
    assert_refused_before_work(code, err, tmp_path, str(store), "not writable", "readonly")
    assert "epoch" not in err


def test_a_store_sqlite_opens_read_only_is_refused_before_training(tmp_path, capsys, monkeypatch):
    store = tmp_path / "ro.sqlite"
    sqlite3.connect(store).close()
    connect = sqlite3.connect

    def read_only(path, *args, **kwargs):
        return connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    code, err = toy_run(tmp_path, capsys, "--store", str(store))
    assert_refused_before_work(code, err, tmp_path, str(store), "readonly")
    assert "epoch" not in err


def full_disk(monkeypatch, free: int) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free))


def test_an_output_folder_without_space_for_the_run_is_refused_before_work(
    tmp_path, capsys, monkeypatch
):
    full_disk(monkeypatch, 1000)
    code, err = toy_run(tmp_path, capsys)
    assert_refused_before_work(code, err, tmp_path, "not enough free space", "runs")
    assert "epoch" not in err and not (tmp_path / "runs" / ".partial").exists()


def test_a_cache_folder_without_space_for_the_decoded_audio_is_refused(
    tmp_path, capsys, monkeypatch
):
    from harness.data import audio_cache

    real = audio_cache.check_free_space

    def cache_disk_full(folder, needed, what):
        assert needed > 0
        real(folder, needed + (1 << 50), what)  # a petabyte more than the disk has

    monkeypatch.setattr(audio_cache, "check_free_space", cache_disk_full)
    cache = Path(os.environ["HARNESS_CACHE"])  # shared by the session's tests

    def entries() -> set[Path]:
        return {p for p in cache.rglob("*hz-*") if p.is_dir()}

    before = entries()
    code, err = toy_run(tmp_path, capsys, "--set", "run.audio_cache=auto")
    assert_refused_before_work(code, err, tmp_path, "decoded-audio cache", "free")
    assert entries() == before  # no half-built entry


def test_the_estimate_counts_every_clip_of_the_decoded_audio(tmp_path, monkeypatch):
    from harness.data import audio_cache

    asked = []
    monkeypatch.setattr(audio_cache, "check_free_space", lambda f, n, w: asked.append(n))
    files = make_tones(tmp_path / "tones")
    from harness.data.loader import split_audio
    from tests.toy_plugin import ToyTones

    splits = ToyTones(ToyTones.Config(root=str(tmp_path / "tones"))).load()
    audio = split_audio(splits.train, 8000, splits.clip_seconds, splits.devices)
    audio_cache.cached_audio(audio, str(tmp_path / "c"))
    samples = round(8000 * splits.clip_seconds)
    assert asked == [len(splits.train) * (samples * 2 + 4)] and files


# -- audio headers --------------------------------------------------------------------------


def wav_with_rate(path: Path, rate: int) -> Path:
    sf.write(path, np.full(400, 0.1, np.float32), 16000, subtype="FLOAT")
    data = bytearray(path.read_bytes())
    at = data.index(b"fmt ") + 12  # the sample rate field of the fmt chunk
    data[at : at + 4] = struct.pack("<I", rate)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [2_000_000_000, 768_001])
@pytest.mark.parametrize("reader", [check_header, read_audio, read_ir], ids=lambda f: f.__name__)
def test_an_absurd_sample_rate_in_a_header_is_refused_before_decoding(tmp_path, reader, rate):
    path = wav_with_rate(tmp_path / "a.wav", rate)
    with pytest.raises(DataError, match=rf"a.wav claims a sample rate of {rate} Hz"):
        reader(path)


def test_the_highest_real_sample_rate_is_accepted(tmp_path):
    path = wav_with_rate(tmp_path / "a.wav", 768_000)
    check_header(path)
    assert read_audio(path)[1] == 768_000


# -- leaderboard spec field types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rows = 5", "rows must be an array, got 5"),
        ("rows = [1]", "rows[0] must be a table, got 1"),
        ('[[rows]]\nlabel = "a"\nmatch = "ce"', "rows[0].match must be a table, got 'ce'"),
        ("[[rows]]\nlabel = [1]\nmatch = {}", "rows[0].label must be a string, got [1]"),
        ("columns = 5", "columns must be an array, got 5"),
        ("columns = [1]", "columns[0] must be a string or a table, got 1"),
        ('recipe_augs = "vintage"', "recipe_augs must be an array, got 'vintage'"),
        ("title = 5", "title must be a string, got 5"),
        ("protocol = 5", "protocol must be a string, got 5"),
        ("metric = 3", "metric must be a string, got 3"),
        ("agg = 5", "agg must be a string, got 5"),
        ("baseline = true", "baseline must be a string, got True"),
        ("filters = 3", "filters must be a table, got 3"),
        ("where = []", "where must be a table, got []"),
    ],
)
def test_a_leaderboard_spec_field_of_the_wrong_type_is_a_one_line_error(
    tmp_path, capsys, text, message
):
    spec = tmp_path / "spec.toml"
    spec.write_text(text + "\n")
    output = tmp_path / "board.md"
    code, err = run_main(
        [
            "leaderboard",
            "--spec",
            str(spec),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--output",
            str(output),
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1, err
    assert f"leaderboard spec {spec}: {message}" in err
    assert not output.exists()


def test_every_shipped_leaderboard_spec_reads_with_its_types():
    from harness.results.leaderboard import LeaderboardSpec

    specs = sorted(Path(__file__).parents[1].glob("leaderboards/*.toml"))
    assert specs and all(LeaderboardSpec.from_file(s).rows for s in specs)
