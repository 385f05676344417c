"""Turning a data set's clips into waveform tensors and batches on the training device."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from harness.api import Batch, Clip
from harness.audio import fit_length, read_audio, resample
from harness.errors import DataError
from harness.progress import progress

RESAMPLE_CHUNK = 256


@dataclass
class ClipAudio:
    """The waveforms of one split, all of one length, at one sample rate."""

    clips: list[Clip]
    wave: Tensor
    """``[N, T]`` float32 on the CPU."""
    labels: Tensor
    devices: Tensor
    """Device indices into the task's device list (-1 when unknown)."""
    sample_rate: int

    def __len__(self) -> int:
        return len(self.clips)


def load_clips(
    clips: list[Clip],
    sample_rate: int,
    clip_seconds: float,
    devices: list[str],
    desc: str = "loading audio",
) -> ClipAudio:
    """Read every clip, resample it once to ``sample_rate`` and crop or pad it."""
    if not clips:
        raise DataError(f"{desc}: the split has no clips")
    by_rate: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for i, clip in enumerate(progress(clips, desc=desc, unit="clip")):
        samples, rate = read_clip(clip)
        by_rate[rate].append((i, fit_length(samples, round(clip_seconds * rate))))
    length = round(clip_seconds * sample_rate)
    wave = torch.zeros(len(clips), length)
    for rate, items in by_rate.items():
        for start in range(0, len(items), RESAMPLE_CHUNK):
            chunk = items[start : start + RESAMPLE_CHUNK]
            stacked = torch.from_numpy(np.stack([samples for _, samples in chunk]))
            resampled = resample(stacked, rate, sample_rate)
            n = min(length, resampled.shape[1])
            wave[[i for i, _ in chunk], :n] = resampled[:, :n]
    device_index = {d: k for k, d in enumerate(devices)}
    return ClipAudio(
        clips=clips,
        wave=wave,
        labels=torch.tensor([c.label for c in clips], dtype=torch.long),
        devices=torch.tensor([device_index.get(c.device, -1) for c in clips], dtype=torch.long),
        sample_rate=sample_rate,
    )


def read_clip(clip: Clip) -> tuple[np.ndarray, int]:
    """A clip's samples; segmented clips are their files concatenated (one sample rate)."""
    if not clip.segments:
        return read_audio(clip.path)
    parts = [read_audio(path) for path in clip.segments]
    rates = {rate for _, rate in parts}
    if len(rates) != 1:
        raise DataError(f"segments of {clip.path} have different sample rates: {sorted(rates)}")
    return np.concatenate([samples for samples, _ in parts]), rates.pop()


def batches(
    audio: ClipAudio,
    batch_size: int,
    torch_device: torch.device,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Batches in order, or shuffled by ``generator``."""
    n = len(audio)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield Batch(
            wave=audio.wave[idx].to(torch_device, non_blocking=True),
            label=audio.labels[idx].to(torch_device),
            device=audio.devices[idx].to(torch_device),
            index=idx.to(torch_device),
        )


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    if drop_last and n >= batch_size:
        return n // batch_size
    return -(-n // batch_size)
