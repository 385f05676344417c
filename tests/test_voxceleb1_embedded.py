"""The embedded VoxCeleb1 set: generated in the published identification layout,
deterministic, split by video, read by the real ``voxceleb1`` reader, and learnable."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from harness_plugins.datasets import voxceleb1_embedded
from harness_plugins.datasets.voxceleb1 import VoxCeleb1
from harness_plugins.datasets.voxceleb1_embedded import VoxCeleb1Embedded
from tests.test_speech_commands_embedded import digests, finetuned_accuracy

TINY = {"classes": 4, "videos": 6, "clips_per_video": 6, "seconds": 0.5}
LINE = re.compile(r"^[123] id1\d{4}/[A-Za-z0-9_-]{11}/\d{5}\.wav$")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_generated_in_the_published_layout_split_by_video(cache):
    splits = VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY)).load()
    root = splits.root
    assert root.parent == cache / "voxceleb1-embedded" and (root / ".done").is_file()
    lines = (root / "iden_split.txt").read_text().splitlines()
    assert len(lines) == 4 * 6 * 6 and all(LINE.match(line) for line in lines), lines[:3]
    assert lines == sorted(lines, key=lambda line: line.split()[1])
    listed = {line.split()[1] for line in lines}
    on_disk = {str(p.relative_to(root / "wav")) for p in (root / "wav").rglob("*.wav")}
    assert listed == on_disk
    sets_of_video: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        set_id, relative = line.split()
        sets_of_video[relative.rsplit("/", 1)[0]].add(set_id)
    assert all(len(ids) == 1 for ids in sets_of_video.values())  # a video is in one split
    for speaker in ("id10001", "id10002", "id10003", "id10004"):
        ids = sorted(next(iter(v)) for k, v in sets_of_video.items() if k.startswith(speaker))
        assert ids == ["1", "1", "1", "1", "2", "3"], (speaker, ids)
    assert splits.classes == ["id10001", "id10002", "id10003", "id10004"]
    assert (len(splits.train), len(splits.valid), len(splits.eval)) == (96, 24, 24)
    assert not {c.meta["video"] for c in splits.train} & {c.meta["video"] for c in splits.eval}
    info = sf.info(str(splits.eval[0].path))
    assert (info.samplerate, info.frames) == (16000, 8000)


def test_the_real_reader_reads_the_generated_folder(cache):
    splits = VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY)).load()
    real = VoxCeleb1(VoxCeleb1.Config(root=splits.root, clip_seconds=0.5)).load()
    assert real.classes == splits.classes
    for split in ("train", "eval", "valid"):
        assert [c.path for c in getattr(real, split)] == [c.path for c in getattr(splits, split)]
    on_val = VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY, eval_split="val")).load()
    assert on_val.root == splits.root and on_val.valid == []
    assert [c.path for c in on_val.eval] == [c.path for c in splits.valid]


def test_generation_is_deterministic_and_done_once(tmp_path, monkeypatch):
    roots = []
    for name in ("one", "two"):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / name))
        roots.append(VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY)).root())
    assert digests(roots[0]) == digests(roots[1])

    def must_not_run(*args):
        raise AssertionError("regenerated a finished data set")

    monkeypatch.setattr(voxceleb1_embedded, "generate", must_not_run)
    assert VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY)).root() == roots[1]
    with pytest.raises(AssertionError, match="regenerated"):
        VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY, seed=1)).root()


def test_finetuning_on_unseen_videos_beats_chance(cache):
    splits = VoxCeleb1Embedded(VoxCeleb1Embedded.Config(**TINY)).load()
    # six test utterances per speaker: the majority (prior) baseline is chance, 25 %
    assert sorted(c.label for c in splits.eval) == sorted(list(range(4)) * 6)
    assert finetuned_accuracy(splits, epochs=10) >= 50.0
