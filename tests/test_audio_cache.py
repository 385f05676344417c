"""The decoded-audio cache's files, keys and folder names, built from WAV files on disk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from harness.api import Clip
from harness.data import audio_cache
from harness.data.audio_cache import (
    FORMAT,
    CachedWaves,
    cache_folder,
    cached_audio,
    check_writable,
    fingerprint,
)
from harness.data.loader import split_audio
from harness.util.cache import CacheDamaged, cache_root
from harness.util.errors import UsageError

RATE = 8000


def tones(folder, count=3, seconds=0.5, peak=0.5):
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        path = folder / f"c{i}.wav"
        t = np.arange(int(RATE * seconds)) / RATE
        sf.write(path, (peak * (i + 1) / count * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                 RATE, subtype="FLOAT")  # fmt: skip
        clips.append(Clip(path, i % 2, "a"))
    return clips


def test_fingerprint_follows_files_rate_and_length(tmp_path):
    clips = tones(tmp_path)
    key = fingerprint(clips, RATE, 0.5)
    assert len(key) == 24 and int(key, 16) >= 0
    assert fingerprint(clips, RATE, 0.5) == key
    assert len({key, fingerprint(clips, 16000, 0.5), fingerprint(clips, RATE, 1.0)}) == 3
    os.utime(clips[1].path, ns=(1, 1))
    assert fingerprint(clips, RATE, 0.5) != key
    missing = [Clip(tmp_path / "gone.wav", 0)]
    assert fingerprint(missing, RATE, 0.5) != fingerprint([], RATE, 0.5)


def test_cache_folder_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_folder("off") is None
    assert cache_folder("auto") == cache_root() / "audio"
    assert cache_folder("~/decoded") == tmp_path / "decoded"


def test_check_writable_creates_the_folder_or_names_it(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"folder .*file/sub is not writable \("):
        check_writable(tmp_path / "file" / "sub")


def test_a_built_cache_holds_int16_rows_their_peaks_and_an_index(tmp_path, monkeypatch):
    notes: list[str] = []
    monkeypatch.setattr(audio_cache, "note", notes.append)
    monkeypatch.setenv("HARNESS_PROGRESS", "1")
    clips = tones(tmp_path / "wav", peak=1.5)  # the loudest clip goes over full scale
    split = split_audio(clips, RATE, 0.5, ["a"])
    cached = cached_audio(split, str(tmp_path / "cache"))
    key = fingerprint(clips, RATE, 0.5)
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name == f"8000hz-0.5s-3-{key}"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".done", "index.json", "scales.npy", "waves.npy",
    ]  # fmt: skip
    waves = np.load(folder / "waves.npy")
    assert waves.dtype == np.int16 and waves.shape == (3, 4000) and waves.flags.c_contiguous
    scales = np.load(folder / "scales.npy")
    assert scales.dtype == np.float32 and scales.tolist() == pytest.approx([1.0, 1.0, 1.5], 1e-4)
    assert np.abs(waves[2]).max() == 32767  # scaled to its own peak
    info = json.loads((folder / "index.json").read_text())
    assert info == {
        "format": FORMAT, "shape": [3, 4000], "sample_rate": RATE, "clip_seconds": 0.5,
        "clips": [[str(c.path)] for c in clips],
    }  # fmt: skip
    assert isinstance(cached.wave, CachedWaves) and cached.labels.tolist() == [0, 1, 0]
    direct = split.wave.read(2)
    assert np.abs(cached.wave.read(2) - direct).max() <= 1.5 / 32767
    assert notes[0] == (
        f"decoding audio: decoding 3 clips into {folder} (0.00 GB int16)"
    ) and notes[1].startswith("decoding audio: decoded-audio cache ready, 0.00 GB in ")
    notes.clear()
    again = cached_audio(split_audio(clips, RATE, 0.5, ["a"]), str(tmp_path / "cache"))
    assert notes == [] and len(again.wave) == 3  # found, not rebuilt


def test_the_cache_is_skipped_when_off_or_for_in_memory_audio(tmp_path):
    split = split_audio(tones(tmp_path / "wav"), RATE, 0.5, ["a"])
    assert cached_audio(split, "off") is split
    in_memory = type(split)(split.clips, split.wave.read(0)[None], split.labels[:1],
                            split.devices[:1], RATE)  # fmt: skip
    assert cached_audio(in_memory, str(tmp_path / "c")) is in_memory
    assert not (tmp_path / "c").exists()


def test_a_cache_whose_header_is_not_int16_rows_is_refused(tmp_path):
    split = split_audio(tones(tmp_path / "wav"), RATE, 0.5, ["a"])
    cached_audio(split, str(tmp_path / "cache"))
    (folder,) = (tmp_path / "cache").iterdir()
    np.save(folder / "waves.npy", np.zeros((3, 4000), np.float32))  # right shape, wrong type
    with pytest.raises(CacheDamaged, match="waves.npy header does not match"):
        CachedWaves(folder)
    np.save(folder / "waves.npy", np.zeros((3, 3999), np.int16))
    with pytest.raises(CacheDamaged, match="waves.npy header does not match"):
        CachedWaves(folder)


def test_wave_sources_declare_their_clip_seconds(tmp_path):
    import torch

    from harness.data.loader import DecodedWaves, TensorWaves

    decoded = DecodedWaves([Clip(path=tmp_path / "a.wav", label=0)], 16000, 0.5)
    assert decoded.clip_seconds == 0.5 and decoded.length == 8000
    assert TensorWaves(torch.zeros(2, 10)).clip_seconds is None
    assert decoded.subset(np.array([0])).clip_seconds is None
