"""logmel-stats: the no-encoder floor of every few-shot or probe leaderboard.

The clip embedding is the per-band mean and standard deviation over time of a log-mel
spectrogram, ``[mean_1 .. mean_F, std_1 .. std_F]`` (population standard deviation, divisor
``T``). Nothing is trained: a tuned encoder that scores below this row has learned less than
what trivial spectral statistics carry.

Front-end: kaldi fbank (:class:`harness.nn.fbank.KaldiFbank`) of the 16 kHz waveform, Hann window of
25 ms every 10 ms, ``n_mels`` bands (64 by default), time first ``[B, 1, T, n_mels]``.

The backbone has no parameters and no blocks (``num_layers == 0``): a method trains only its own
heads on it, and freezing or layer-wise decay leave nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, Encoded, UsageError, at_least, domain_map
from harness.nn.fbank import KaldiFbank

__all__ = ["LogMelStats", "band_statistics"]

SAMPLE_RATE = 16000


def band_statistics(features: Tensor) -> Tensor:
    """``[B, 1, T, F]`` -> ``[B, 2 F]``: per-band mean over time, then per-band population std."""
    x = features[:, 0].double()
    mean = x.mean(dim=1)
    std = x.var(dim=1, correction=0).sqrt()
    return torch.cat([mean, std], dim=1).to(features.dtype)


class LogMelFbank(nn.Module):
    """Waveforms ``[B, S]`` -> log-mel ``[B, 1, T, n_mels]``."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.kaldi = KaldiFbank(SAMPLE_RATE, n_mels, window="hanning", pad_short=True)

    def forward(self, wave: Tensor) -> Tensor:
        return self.kaldi(wave).unsqueeze(1)


class LogMelStats(Backbone):
    """Per-band log-mel mean and standard deviation; no trainable encoder."""

    name = "logmel-stats"
    description = (
        "floor baseline: per-band mean and std of the log-mel spectrogram (no trainable encoder)"
    )
    sample_rate = SAMPLE_RATE
    time_axis = -2

    @dataclass
    class Config:
        n_mels: int = 64
        """Mel bands; the embedding has twice as many dims."""

        domains = domain_map(n_mels=at_least(1, "Mel bands (the embedding has twice as many)."))

        def __post_init__(self) -> None:
            if not 1 <= self.n_mels <= 256:
                raise ValueError(f"n_mels must be in [1, 256], got {self.n_mels}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.n_mels = config.n_mels
        self.embed_dim = 2 * config.n_mels
        self.blocks = nn.ModuleList()

    @classmethod
    def describe_extra(cls) -> list[str]:
        return [
            "input: 16 kHz waveform -> kaldi log-mel [B, 1, T, n_mels] (64 by default); "
            "embedding [B, 2 n_mels] = per-band mean then std over time; 0 parameters"
        ]

    def frontend(self) -> nn.Module:
        return LogMelFbank(self.n_mels)

    def forward(self, features: Tensor) -> Encoded:
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[-1] != self.n_mels:
            raise UsageError(
                f"logmel-stats expects log-mel [B, 1, T, {self.n_mels}], got {list(features.shape)}"
            )
        embedding = band_statistics(features)
        return Encoded(embedding=embedding, tokens=embedding[:, None])


@hookimpl
def register_backbones(register) -> None:
    register(LogMelStats)
