"""The TAU22 loader on small folders written in the official layout, well-formed and not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.data.loader import load_clips
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError, UsageError
from harness_plugins.datasets._tau22_layout import load_tau22, parse_file_name
from harness_plugins.datasets.tau22 import Tau22
from tests.conftest import run_cli

RATE = 44100
META_HEADER = "filename\tscene_label\tidentifier\tsource_label"
FOLD_HEADER = "filename\tscene_label"


def file_name(scene: str, city: str, location: int, segment: int, k: int, device: str) -> str:
    return f"audio/{scene}-{city}-{location}-{segment}-{k}-{device}.wav"


def write_tau22(
    root: Path,
    train: list[tuple],
    evaluate: list[tuple],
    value=lambda k: 0.0,
    meta_header: str = META_HEADER,
) -> Path:
    """A TAU22 folder; each file is 1 s of the constant ``value(k)``; rows keep the given order."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "evaluation_setup").mkdir(exist_ok=True)
    meta, folds = [meta_header], {"train": [FOLD_HEADER], "eval": [FOLD_HEADER]}
    for split, rows in (("train", train), ("eval", evaluate)):
        for scene, city, location, segment, k, device in rows:
            name = file_name(scene, city, location, segment, k, device)
            sf.write(root / name, np.full(RATE, value(k), np.float32), RATE, subtype="PCM_16")
            meta.append(f"{name}\t{scene}\t{city}-{location}\t{device}")
            folds[split].append(f"{name}\t{scene}")
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "evaluation_setup" / "fold1_train.csv").write_text("\n".join(folds["train"]) + "\n")
    (root / "evaluation_setup" / "fold1_evaluate.csv").write_text("\n".join(folds["eval"]) + "\n")
    return root


TRAIN = [
    ("park", "lyon", 1, 10, 0, "a"),
    ("park", "lyon", 1, 10, 1, "a"),
    ("street_traffic", "milan", 2, 11, 0, "s1"),
    ("airport", "barcelona", 0, 12, 0, "c"),
]
EVAL = [
    ("park", "paris", 3, 20, 4, "s4"),
    ("airport", "paris", 4, 21, 7, "a"),
]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_tau22(tmp_path / "tau22", TRAIN, EVAL)


def test_reads_the_official_layout(small: Path):
    splits = Tau22(Tau22.Config(root=str(small))).load()
    assert splits.classes == ["airport", "park", "street_traffic"]
    assert splits.devices == ["a", "c", "s1", "s4"]
    assert splits.clip_seconds == 1.0
    assert splits.train_clip_seconds is None
    assert [c.path for c in splits.train] == [small / file_name(*row) for row in TRAIN]
    assert [c.label for c in splits.train] == [1, 1, 2, 0]
    assert [c.device for c in splits.eval] == ["s4", "a"]
    assert dict(splits.train[2].meta) == {
        "city": "milan",
        "location": "2",
        "identifier": "milan-2",
        "segment": "11",
        "k": "0",
    }
    assert not splits.train[0].segments


def test_registered_through_the_plugin_registry():
    registry = load_plugins()["dataset"]
    assert registry.get("tau22").cls is Tau22
    assert registry.get("tau22").cls.Config().root == ""


def test_scene_names_with_dashes_parse():
    name = parse_file_name("audio/metro-station-x-helsinki-7-99-3-s2.wav", Path("meta.csv"))
    assert name == ("metro-station-x", "helsinki", "7", "99", 3, "s2")


def test_merge_segments_concatenates_seconds_in_k_order(tmp_path: Path):
    ks = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]  # fold rows out of order on purpose
    train = [("bus", "lyon", 5, 40, k, "a") for k in ks]
    train += [("bus", "lyon", 5, 40, k, "b") for k in reversed(ks)]
    train += [("tram", "vienna", 6, 41, k, "a") for k in ks[:4]]
    root = write_tau22(tmp_path / "t", train, EVAL, value=lambda k: (k + 1) / 16)
    splits = Tau22(Tau22.Config(root=str(root), merge_segments=True)).load()
    assert splits.train_clip_seconds == 10.0
    assert len(splits.train) == 3
    for clip in splits.train:
        ks_in_order = [parse_file_name(p.name, p).k for p in clip.segments]
        assert ks_in_order == sorted(ks_in_order)
        assert clip.path == clip.segments[0]
    assert [len(c.segments) for c in splits.train] == [10, 10, 4]
    assert [c.device for c in splits.train] == ["a", "b", "a"]
    assert splits.train[2].meta["k"] == "0,2,7,9"
    assert all(not c.segments for c in splits.eval)

    audio = load_clips(splits.train, RATE, splits.train_clip_seconds, splits.devices)
    seconds = audio.wave.reshape(3, 10, RATE)
    expected = np.zeros((3, 10))
    expected[0] = expected[1] = (np.arange(10) + 1) / 16
    expected[2, :4] = (np.array([0, 2, 7, 9]) + 1) / 16  # zero-padded after the last second
    np.testing.assert_allclose(seconds.numpy(), np.repeat(expected[..., None], RATE, -1))


def test_subsets_are_fixed_and_keep_order(tmp_path: Path):
    train = [("park", "lyon", 1, s, k, "a") for s in range(3) for k in range(10)]
    root = write_tau22(tmp_path / "t", train, EVAL)
    full = load_tau22(root)
    first = load_tau22(root, max_train_clips=7)
    again = load_tau22(root, max_train_clips=7, max_eval_clips=1)
    assert len(first.train) == 7 and len(again.eval) == 1
    assert [c.path for c in first.train] == [c.path for c in again.train]
    positions = [full.train.index(c) for c in first.train]
    assert positions == sorted(positions)


# -- bad input ----------------------------------------------------------------


def test_missing_root_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^dataset\.root is required"):
        Tau22(Tau22.Config()).load()


def test_nonexistent_root_names_the_path(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist: .*nowhere"):
        Tau22(Tau22.Config(root=str(tmp_path / "nowhere"))).load()


def test_meta_without_a_column_names_file_and_column(tmp_path: Path):
    header = "filename\tscene_label\tidentifier"
    root = write_tau22(tmp_path / "t", TRAIN, EVAL, meta_header=header)
    with pytest.raises(DataError, match=r"meta\.csv: missing column 'source_label'"):
        load_tau22(root)


def test_missing_fold_file_is_named(small: Path):
    (small / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    with pytest.raises(DataError, match=r"not found: .*fold1_evaluate\.csv"):
        load_tau22(small)


def test_missing_meta_file_is_named(small: Path):
    (small / "meta.csv").unlink()
    with pytest.raises(DataError, match=r"not found: .*meta\.csv"):
        load_tau22(small)


def test_fold_row_for_a_file_not_in_meta(small: Path):
    fold = small / "evaluation_setup" / "fold1_train.csv"
    fold.write_text(fold.read_text() + "audio/park-oslo-9-9-0-a.wav\tpark\n")
    with pytest.raises(DataError, match=r"fold1_train\.csv: line 6: .*park-oslo.* not listed in"):
        load_tau22(small)


def test_unknown_scene_label_in_a_fold(small: Path):
    fold = small / "evaluation_setup" / "fold1_evaluate.csv"
    fold.write_text(fold.read_text().replace("\tpark", "\tbeach"))
    with pytest.raises(
        DataError, match=r"fold1_evaluate\.csv: line 2: unknown scene label 'beach'"
    ):
        load_tau22(small)


def test_scene_label_disagreeing_with_meta(small: Path):
    fold = small / "evaluation_setup" / "fold1_evaluate.csv"
    fold.write_text(fold.read_text().replace("\tpark", "\tairport"))
    with pytest.raises(DataError, match=r"is 'airport' here but 'park' in .*meta\.csv"):
        load_tau22(small)


def test_missing_audio_file_is_named(small: Path):
    (small / file_name(*TRAIN[1])).unlink()
    with pytest.raises(DataError, match=r"audio file not found: .*park-lyon-1-10-1-a\.wav"):
        load_tau22(small)


def test_badly_named_file_is_reported(small: Path):
    for table in ("meta.csv", "evaluation_setup/fold1_train.csv"):
        path = small / table
        path.write_text(path.read_text().replace("park-lyon-1-10-1-a", "park-lyon-a"))
    (small / "audio" / "park-lyon-1-10-1-a.wav").rename(small / "audio" / "park-lyon-a.wav")
    with pytest.raises(DataError, match=r"'audio/park-lyon-a\.wav' does not follow"):
        load_tau22(small)


def test_short_row_names_file_and_line(small: Path):
    meta = small / "meta.csv"
    meta.write_text(meta.read_text() + "audio/x.wav\tpark\n")
    with pytest.raises(DataError, match=r"meta\.csv: line 8: expected 4 tab-separated fields"):
        load_tau22(small)


def truncate(path: Path) -> None:
    """Cut the data chunk short while the header still announces every frame."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_wav_names_the_file_when_read(small: Path):
    splits = load_tau22(small)
    truncate(splits.train[1].path)
    with pytest.raises(DataError, match=r"truncated audio file .*park-lyon-1-10-1-a\.wav"):
        load_clips(splits.train, 32000, 1.0, splits.devices)


def test_truncated_segment_of_a_merged_clip_names_the_file(small: Path):
    splits = load_tau22(small, merge_segments=True)
    truncate(small / file_name(*TRAIN[1]))
    with pytest.raises(DataError, match=r"truncated audio file .*park-lyon-1-10-1-a\.wav"):
        load_clips(splits.train, 32000, 10.0, splits.devices)


def stored_runs(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'runs'").fetchall()
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if tables else 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-root", "dataset.root is required"),
        ("missing-column", "missing column 'source_label'"),
        ("truncated", "truncated audio file"),
    ],
)
def test_cli_reports_bad_data_in_one_line_and_stores_nothing(tmp_path: Path, case, expected):
    root = write_tau22(
        tmp_path / "tau22",
        TRAIN,
        EVAL,
        meta_header="filename\tscene_label\tidentifier"
        if case == "missing-column"
        else META_HEADER,
    )
    if case == "truncated":
        truncate(root / file_name(*TRAIN[0]))
    store = tmp_path / "store.sqlite"
    args = ["run", "--dataset", "tau22", "--method", "ce", "--aug", "none", "--epochs", "1"]
    if case != "no-root":
        args += ["--set", f"dataset.root={root}"]
    result = run_cli(*args, "--out", str(tmp_path / "runs"), env={"HARNESS_STORE": str(store)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert stored_runs(store) == 0
    assert not any((tmp_path / "runs").glob("*/metrics.json"))
