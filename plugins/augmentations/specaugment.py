"""SpecAugment-style frequency and time masking as in PaSST's training recipe.

Section 5.1 of Schmidt & Peters follows PaSST (Koutini et al., 2022): independent
frequency masking of up to 48 mel bins and time masking of up to 24 frames. Masks
are drawn per example with ``torchaudio.transforms.FrequencyMasking`` /
``TimeMasking(iid_masks=True)`` semantics: width ``floor(u * max_width)`` and start
``floor(u' * (size - width))`` for uniform ``u, u'``, so a mask is at most
``max_width - 1`` wide and always lies inside the spectrogram. With one mask per
axis and float32 features the result equals torchaudio's for the same random
state. Frequency masks are drawn before time masks, as in PaSST.

Masked value: the augmentation runs on the backbone's front-end output, which is
already normalised, and fills masks with ``mask_value`` (default 0, the centre of
the normalised features). The reference pipelines mask *before* normalising, with
0 in the raw log domain: PaSST's ``(x + 4.5) / 5`` maps that to 0.9, and the
AST/AudioMAE fbank normalisation ``(x + 4.2677) / (2 * 4.5690)`` to about 0.467.
Set ``mask_value`` to those values to reproduce a reference recipe exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness import hookimpl
from harness.api import Augmentation, Batch, Domain, Task, domain_map, non_negative

__all__ = ["SpecAugment", "mask_along_axis"]


def mask_along_axis(x: Tensor, axis: int, max_width: int, count: int, value: float) -> Tensor:
    """Fill ``count`` random bands along ``axis`` (one of the last two) per leading index.

    Each band is ``floor(u * max_width)`` wide (``max_width`` capped at the axis
    length) and starts at ``floor(u' * (size - width))``, drawn independently for
    every index of ``x.shape[:-2]`` (every example and channel).
    """
    if x.dim() < 3:
        raise ValueError(f"features must have at least 3 dimensions, got shape {tuple(x.shape)}")
    if axis not in (-1, -2):
        raise ValueError(f"axis must be -1 or -2, got {axis}")
    size = x.shape[axis]
    max_width = min(max_width, size)
    if max_width < 1 or count < 1:
        return x
    lead = x.shape[:-2]
    positions = torch.arange(size, device=x.device)
    masked = torch.zeros(*lead, size, dtype=torch.bool, device=x.device)
    for _ in range(count):
        width = torch.rand(lead, device=x.device) * max_width
        start = torch.rand(lead, device=x.device) * (size - width)
        first = start.long()[..., None]
        stop = first + width.long()[..., None]
        masked |= (positions >= first) & (positions < stop)
    band = masked.unsqueeze(-2) if axis == -1 else masked.unsqueeze(-1)
    return x.masked_fill(band, value)


class SpecAugment(Augmentation):
    """Per-example frequency and time masking of the front-end features."""

    name = "specaugment"
    description = (
        "Frequency (up to 48 bins) and time (up to 24 frames) masking, per example (PaSST)."
    )
    stage = "features"

    @dataclass
    class Config:
        freq_mask: int = 48
        """Widest frequency mask in bins (widths are drawn from 0 to ``freq_mask - 1``)."""
        time_mask: int = 24
        """Widest time mask in frames."""
        freq_masks: int = 1
        """Frequency masks per example."""
        time_masks: int = 1
        """Time masks per example."""
        mask_value: float = 0.0
        """Value written into masked cells (normalised feature units)."""

        domains = domain_map(
            freq_mask=non_negative("Widest frequency mask in bins."),
            time_mask=non_negative("Widest time mask in frames."),
            freq_masks=non_negative("Frequency masks per example."),
            time_masks=non_negative("Time masks per example."),
            mask_value=Domain(help="Value written into masked cells (normalised feature units)."),
        )

        def __post_init__(self) -> None:
            for name in ("freq_mask", "time_mask", "freq_masks", "time_masks"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.time_axis = -1

    def setup(self, task: Task) -> None:
        if task.time_axis not in (-1, -2):
            raise ValueError(f"specaugment: time_axis must be -1 or -2, got {task.time_axis}")
        self.time_axis = task.time_axis

    @property
    def freq_axis(self) -> int:
        return -2 if self.time_axis == -1 else -1

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        cfg = self.config
        x = mask_along_axis(x, self.freq_axis, cfg.freq_mask, cfg.freq_masks, cfg.mask_value)
        return mask_along_axis(x, self.time_axis, cfg.time_mask, cfg.time_masks, cfg.mask_value)


@hookimpl
def register_augmentations(register) -> None:
    register(SpecAugment)
