"""Random windows: contiguous crops of each waveform at independently drawn offsets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api import Batch, Task
from harness.data.loader import load_clips
from harness.registry.plugins import load_plugins
from harness_plugins.augmentations.random_window import RandomWindow
from harness_plugins.datasets._tau22_layout import load_tau22
from tests.test_tau22 import write_tau22


def window_aug(seconds: float = 1.0, sample_rate: int = 100) -> RandomWindow:
    aug = RandomWindow(RandomWindow.Config(seconds=seconds))
    aug.setup(Task(classes=["x"], devices=[], sample_rate=sample_rate))
    return aug


def batch_of(wave: torch.Tensor) -> Batch:
    n = wave.shape[0]
    return Batch(
        wave=wave,
        label=torch.zeros(n, dtype=torch.long),
        device=torch.zeros(n),
        index=torch.arange(n),
    )


def numbered(rows: int, length: int) -> torch.Tensor:
    """``x[b, t] = b * length + t``: every sample says where it came from (exact in float64)."""
    return torch.arange(rows * length, dtype=torch.float64).reshape(rows, length)


def test_each_output_is_the_slice_at_its_sampled_offset():
    aug = window_aug(seconds=1.0, sample_rate=100)
    wave = numbered(16, 1000)
    torch.manual_seed(3)
    out = aug(wave, batch_of(wave))
    torch.manual_seed(3)
    offsets = aug.sample_offsets(16, 1000, wave.device)
    assert out.shape == (16, 100)
    for b, offset in enumerate(offsets.tolist()):
        assert 0 <= offset <= 900
        assert torch.equal(out[b], wave[b, offset : offset + 100])
    assert len(set(offsets.tolist())) > 1  # independent per example


def test_offsets_cover_every_position_and_no_more():
    aug = window_aug(seconds=0.97, sample_rate=100)  # 97 of 100 samples: offsets 0..3
    wave = numbered(4000, 100)
    out = aug(wave, batch_of(wave))
    offsets = out[:, 0] - torch.arange(4000, dtype=torch.float64) * 100
    assert set(offsets.long().tolist()) == {0, 1, 2, 3}
    assert torch.equal(out[:, 1:] - out[:, :-1], torch.ones(4000, 96, dtype=torch.float64))


def test_waveform_of_the_window_length_is_left_alone():
    aug = window_aug(seconds=1.0, sample_rate=100)
    wave = torch.randn(4, 100)
    assert aug(wave, batch_of(wave)) is wave


def test_window_length_follows_the_backbone_rate():
    assert window_aug(seconds=1.0, sample_rate=32000).window == 32000
    assert window_aug(seconds=0.5, sample_rate=16000).window == 8000


def test_crops_a_second_of_merged_ten_second_recordings(tmp_path: Path):
    train = [("bus", "lyon", 1, 7, k, "a") for k in range(10)]
    evaluate = [("bus", "lyon", 2, 8, 0, "a")]
    root = write_tau22(tmp_path / "tau22", train, evaluate, value=lambda k: (k + 1) / 16)
    splits = load_tau22(root, merge_segments=True)
    audio = load_clips(splits.train, 32000, splits.train_clip_seconds, splits.devices)
    assert audio.wave.shape == (1, 320000)
    aug = window_aug(seconds=1.0, sample_rate=32000)
    wave = audio.wave.repeat(8, 1)
    torch.manual_seed(0)
    out = aug(wave, batch_of(wave))
    torch.manual_seed(0)
    offsets = aug.sample_offsets(8, 320000, wave.device)
    assert out.shape == (8, 32000)
    for b, offset in enumerate(offsets.tolist()):
        assert torch.equal(out[b], audio.wave[0, offset : offset + 32000])


def test_registered_as_a_waveform_augmentation():
    entry = load_plugins()["augmentation"].get("random-window")
    assert entry.cls is RandomWindow
    assert entry.cls.stage == "waveform"


def test_bad_window_length_is_rejected():
    with pytest.raises(ValueError, match="seconds must be positive"):
        RandomWindow.Config(seconds=0)
