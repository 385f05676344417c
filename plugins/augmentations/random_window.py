"""Random windows: train on a random excerpt of each (longer) training recording.

PaSST's TAU22 recipe (seed paper, Section 5.1) trains on random 1 s windows of the 10 s
recordings merged from consecutive 1 s files; use it as
``--set dataset.merge_segments=true --aug random-window`` and list it before other waveform
augmentations so they only process the window. Every example gets its own offset, drawn
uniformly from all whole-sample positions; the crop is one batched ``gather``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness import hookimpl
from harness.api import Augmentation, Batch, Domain, Task, domain_map


class RandomWindow(Augmentation):
    """Crop a random window of ``seconds`` from every training waveform.

    Waveforms no longer than the window pass through unchanged.
    """

    name = "random-window"
    description = "Random crop of each training waveform (PaSST: 1 s windows of 10 s recordings)"
    stage = "waveform"

    @dataclass
    class Config:
        seconds: float = 1.0
        """Window length in seconds."""

        domains = domain_map(
            seconds=Domain(gt=0, le=3600, help="Length of the random window in seconds."),
        )

        def __post_init__(self) -> None:
            if self.seconds <= 0:
                raise ValueError(f"seconds must be positive, got {self.seconds}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.window = 0

    def setup(self, task: Task) -> None:
        self.window = max(1, round(self.config.seconds * task.sample_rate))

    def sample_offsets(self, batch_size: int, length: int, device: torch.device) -> Tensor:
        """Start samples ``[B]``, uniform over ``0 .. length - window``."""
        return torch.randint(0, length - self.window + 1, (batch_size,), device=device)

    def crop(self, wave: Tensor, offsets: Tensor) -> Tensor:
        """``wave[b, offsets[b] : offsets[b] + window]`` for every row, as one gather."""
        positions = offsets[:, None] + torch.arange(self.window, device=wave.device)
        return torch.gather(wave, 1, positions)

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        if not self.window:
            raise RuntimeError("random-window: setup(task) was not called")
        if x.shape[-1] <= self.window:
            return x
        return self.crop(x, self.sample_offsets(x.shape[0], x.shape[-1], x.device))


@hookimpl
def register_augmentations(register) -> None:
    register(RandomWindow)
