"""Where the core builds and prepares batches, for training and inference alike.

:func:`batch_source` turns a training's or an inference's data into batches on the device
(this process's share under DDP); :func:`prepare_batch` is the one place a loaded batch
becomes a step's input: device classes, waveform augmentations, the front-end, feature
augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from harness.api import Augmentation, Batch, FeatureData, Sampling
from harness.data.loader import ClipAudio, FeatureLoader, Loader
from harness.engine.distributed import Ranks
from harness.util.errors import UsageError


class BatchSource(Protocol):
    """A split's batches: :class:`harness.data.loader.Loader`,
    :class:`harness.data.loader.FeatureLoader` or a training's own source."""

    def __len__(self) -> int: ...

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def batch_source(
    data: Any,
    batch_size: int,
    device: torch.device,
    ranks: Ranks,
    drop_last: bool = False,
    workers: int = 0,
    sampling: Sampling | None = None,
) -> BatchSource:
    """Batches of ``data`` on ``device`` (this rank's share): waveforms of a split's
    :class:`ClipAudio` (drawn per epoch as ``sampling`` says), rows of :class:`FeatureData`,
    or ``data`` itself when it already is a batch source."""
    if sampling is not None and sampling.kind != "uniform" and not isinstance(data, ClipAudio):
        raise UsageError(f"sampler {sampling.kind!r} draws only from a split's waveforms")
    if isinstance(data, FeatureData):
        return FeatureLoader(data, batch_size, device, drop_last, ranks.rank, ranks.world)
    if isinstance(data, ClipAudio):
        return Loader(
            data,
            batch_size,
            device,
            drop_last=drop_last,
            workers=workers,
            rank=ranks.rank,
            world=ranks.world,
            sampling=sampling,
        )
    return data


def data_rows(data: ClipAudio | FeatureData) -> int:
    """Clips (or feature rows) in ``data``."""
    return len(data.features) if isinstance(data, FeatureData) else len(data)


def prepare_batch(
    batch: Batch,
    frontend: nn.Module | None,
    augs: Sequence[Augmentation] = (),
    train: bool = False,
) -> Batch:
    """A loaded batch as a step's input: its device classes start as the recording devices;
    in training, waveform augmentations, then the front-end's features (without gradient;
    the front-end in training mode when training), then feature augmentations. Without a
    front-end the batch keeps its waveforms and features (precomputed rows)."""
    if batch.device_class is None:
        batch.device_class = batch.device.clone()
    if frontend is None:
        return batch
    wave = batch.wave
    if train:
        for aug in augs:
            if aug.stage == "waveform":
                wave = aug(wave, batch)
    frontend.train(train)
    with torch.no_grad():
        features = frontend(wave)
    if train:
        for aug in augs:
            if aug.stage == "features":
                features = aug(features, batch)
    batch.wave = wave  # augmentations saw the loaded waveforms in ``batch.wave``
    batch.features = features
    return batch
