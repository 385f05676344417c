"""Freq-MixStyle: mixing per-frequency-bin statistics within a batch.

MixStyle (Zhou et al., ICLR 2021) mixes instance statistics of CNN feature maps;
Kim et al. (DCASE 2022) and Schmid et al. (CP-JKU, DCASE 2022/2023) compute them
per frequency bin of the spectrogram instead, so that mixing swaps the spectral
colouring of recording devices between examples. For each example ``i`` and
frequency bin ``f``, the mean ``mu`` and standard deviation ``sigma`` over time
(and channels) are computed, the example is normalised with them and
de-normalised with ``lam_i * mu_i + (1 - lam_i) * mu_perm(i)`` and
``lam_i * sigma_i + (1 - lam_i) * sigma_perm(i)``, where ``perm`` is a random
permutation of the batch and ``lam_i ~ Beta(alpha, alpha)`` per example.

As in the CP-JKU DCASE23 code, the whole batch is mixed with probability ``p`` (or
left untouched), the variance is the unbiased one, ``sigma = sqrt(var + eps)`` and
the statistics are detached from the graph. Defaults ``p = 0.4`` and
``alpha = 0.4`` are those of that repository's PaSST training script
(its CP-Mobile student uses ``alpha = 0.3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Beta

from harness import hookimpl
from harness.api import Augmentation, Batch, Task, domain_map, positive, unit

__all__ = ["FreqMixStyle", "frequency_statistics", "mix_frequency_statistics"]


def frequency_statistics(x: Tensor, freq_axis: int, eps: float) -> tuple[Tensor, Tensor]:
    """Per-example, per-frequency-bin mean and ``sqrt(var + eps)`` over all other axes.

    Both are returned with ``x``'s rank (reduced axes kept as size 1) and detached.
    """
    freq_axis = freq_axis % x.dim()
    reduce = [d for d in range(1, x.dim()) if d != freq_axis]
    mean = x.mean(dim=reduce, keepdim=True)
    var = x.var(dim=reduce, keepdim=True)
    return mean.detach(), (var + eps).sqrt().detach()


def mix_frequency_statistics(
    x: Tensor, lam: Tensor, perm: Tensor, freq_axis: int, eps: float = 1e-6
) -> Tensor:
    """Re-colour each example with its statistics mixed with those of ``perm``'s example.

    :param x: features ``[B, ...]`` with a frequency axis ``freq_axis``.
    :param lam: mixing weights ``[B]``; 1 keeps an example's own statistics.
    :param perm: a permutation of ``range(B)``.
    """
    mean, std = frequency_statistics(x, freq_axis, eps)
    weight = lam.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    mixed_mean = weight * mean + (1 - weight) * mean[perm]
    mixed_std = weight * std + (1 - weight) * std[perm]
    return (x - mean) / std * mixed_std + mixed_mean


class FreqMixStyle(Augmentation):
    """Freq-MixStyle on the front-end features, applied to a whole batch with probability p."""

    name = "freq-mixstyle"
    description = "Mix per-frequency-bin mean/std across the batch (Freq-MixStyle, CP-JKU DCASE23)."
    stage = "features"

    @dataclass
    class Config:
        p: float = 0.4
        """Probability that a batch is mixed (otherwise it passes unchanged)."""
        alpha: float = 0.4
        """Both parameters of the Beta distribution of the mixing weight."""
        eps: float = 1e-6
        """Added to the variance before the square root."""

        domains = domain_map(
            p=unit("Probability that a batch is mixed."),
            alpha=positive("Beta(alpha, alpha) of the mixing weights."),
            eps=positive("Added to the variance before the square root."),
        )

        def __post_init__(self) -> None:
            if not 0.0 <= self.p <= 1.0:
                raise ValueError(f"p must be in [0, 1], got {self.p}")
            if self.alpha <= 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}")
            if self.eps <= 0:
                raise ValueError(f"eps must be positive, got {self.eps}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.time_axis = -1

    def setup(self, task: Task) -> None:
        if task.time_axis not in (-1, -2):
            raise ValueError(f"freq-mixstyle: time_axis must be -1 or -2, got {task.time_axis}")
        self.time_axis = task.time_axis

    @property
    def freq_axis(self) -> int:
        return -2 if self.time_axis == -1 else -1

    def draw(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Mixing weights ``lam [B] ~ Beta(alpha, alpha)`` and a permutation of the batch."""
        alpha = torch.tensor(float(self.config.alpha))
        lam = Beta(alpha, alpha).sample((batch_size,)).to(device)
        perm = torch.randperm(batch_size).to(device)
        return lam, perm

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        if not torch.rand(()) < self.config.p:
            return x
        lam, perm = self.draw(x.shape[0], x.device)
        return mix_frequency_statistics(x, lam, perm, self.freq_axis, self.config.eps)


@hookimpl
def register_augmentations(register) -> None:
    register(FreqMixStyle)
