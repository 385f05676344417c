"""``dirgen``: convolve training clips with responses of the trained DIR generator.

The augmentation of seed 000, Section 5.3: each chosen clip is convolved (first ``T`` samples of
the linear convolution, :func:`harness.nn.impulse.convolve`) with the response the generator of
``harness dirgen train`` produces for a microphone's traits. Traits are chosen
(``pattern``, ``transducer``, ``diaphragm``, ``angle``, ``distance``) or, where left empty or
negative, sampled per clip: categories uniformly, the angle uniformly in [0, 360) degrees and the
distance uniformly among ``distances``. Responses are generated at the generator's rate and
resampled to the task's, then scaled to unit energy like the measured banks.

    harness dirgen train --out runs/dirgen
    harness run --backbone passt --method ce --aug dirgen \
        --set aug.dirgen.model=runs/dirgen/dirgen.pt
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torchaudio.functional as AF
from torch import Tensor

from harness import hookimpl
from harness.api import (
    Augmentation,
    Batch,
    Domain,
    Task,
    UsageError,
    between,
    domain_map,
    non_negative,
    positive,
)
from harness.nn.dirgen import DIAPHRAGMS, PATTERNS, TRANSDUCERS, condition_vector, load_generator
from harness.nn.impulse import convolve


class DirGenAugmentation(Augmentation):
    """Convolve clips with generated microphone impulse responses."""

    name = "dirgen"
    description = (
        "Convolve training clips with DIRs generated from microphone traits "
        "(seed 000 Sec. 5.3; model from 'harness dirgen train')"
    )
    stage = "waveform"

    @dataclass
    class Config:
        model: str = ""
        """The generator file written by ``harness dirgen train`` (required)."""
        p: float = 1.0
        """Probability that a clip is convolved."""
        pattern: str = ""
        """Directivity (empty: sampled per clip)."""
        transducer: str = ""
        diaphragm: str = ""
        angle: float = -1.0
        """Incidence angle in degrees (negative: uniform in [0, 360))."""
        distance: float = 0.0
        """Source distance in cm (0: one of ``distances`` per clip)."""
        distances: list[float] = field(default_factory=lambda: [5.0, 20.0, 50.0])
        device_class: Literal["microphone", "keep"] = "microphone"
        """``microphone``: a convolved clip gets the device class (recording device, generated
        microphone = directivity x transducer x diaphragm), as the DIR augmentations do
        (Section 3: augmentation "leads to more device classes"); ``keep``: no new classes."""

        domains = domain_map(
            p=between(0, 1, "Probability that a clip is convolved."),
            angle=Domain(lt=360, help="Incidence angle in degrees (negative: uniform)."),
            distance=non_negative("Source distance in cm (0: one of distances per clip)."),
            distances=positive("Source distances in cm to sample from."),
        )

        def __post_init__(self) -> None:
            if not 0.0 <= self.p <= 1.0:
                raise ValueError(f"p must be in [0, 1], got {self.p}")
            for value, options, what in (
                (self.pattern, PATTERNS, "pattern"),
                (self.transducer, TRANSDUCERS, "transducer"),
                (self.diaphragm, DIAPHRAGMS, "diaphragm"),
            ):
                if value and value not in options:
                    raise ValueError(f"{what} must be empty or one of {', '.join(options)}")
            if self.distance < 0 or not self.distances or min(self.distances) <= 0:
                raise ValueError("distance must be >= 0 and distances positive")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.generator = None
        self.model_info: dict[str, Any] = {}
        self.model_rate = 0
        self.sample_rate = 0
        self.last_conditions: Tensor | None = None
        self.last_irs: Tensor | None = None
        self.last_chosen: Tensor | None = None

    def load_files(self) -> None:
        """Read the generator at start-up (a file that is not one stops the run there)."""
        if not self.config.model:
            raise UsageError("aug.dirgen needs --set aug.dirgen.model=PATH (harness dirgen train)")
        self.generator, self.model_info = load_generator(self.config.model)

    def setup(self, task: Task) -> None:
        if self.generator is None:
            self.load_files()
        info = self.model_info
        self.generator.requires_grad_(False)
        self.model_rate = int(info["sample_rate"])
        self.sample_rate = task.sample_rate
        self.microphones = list(itertools.product(PATTERNS, TRANSDUCERS, DIAPHRAGMS))
        self.first_class = -1
        if self.config.device_class == "microphone" and task.devices:
            self.first_class = task.add_device_classes(
                [f"{d}*dirgen:{'/'.join(m)}" for d in task.devices for m in self.microphones]
            )

    def draw_conditions(self, count: int) -> tuple[Tensor, Tensor]:
        """Conditions ``[count, 12]`` for the configured or sampled traits, and the index of
        each row's microphone (its directivity, transducer and diaphragm) in ``microphones``."""
        cfg = self.config
        rows, microphones = [], []
        for _ in range(count):

            def pick(value: str, options: tuple[str, ...]) -> str:
                return value or options[int(torch.randint(len(options), (1,)))]

            angle = cfg.angle if cfg.angle >= 0 else float(torch.rand(()) * 360.0)
            distance = cfg.distance or cfg.distances[int(torch.randint(len(cfg.distances), (1,)))]
            traits = (
                pick(cfg.pattern, PATTERNS),
                pick(cfg.transducer, TRANSDUCERS),
                pick(cfg.diaphragm, DIAPHRAGMS),
            )
            rows.append(condition_vector(*traits, angle, distance))
            microphones.append(self.microphones.index(traits))
        return torch.stack(rows), torch.tensor(microphones, dtype=torch.long)

    def responses(self, conditions: Tensor) -> Tensor:
        """Unit-energy responses ``[N, L]`` at the task's rate for ``conditions``."""
        self.generator.eval()
        with torch.no_grad():
            irs = self.generator(conditions.to(next(self.generator.parameters()).device))
        if self.model_rate != self.sample_rate:
            irs = AF.resample(irs, self.model_rate, self.sample_rate)
        return irs / irs.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        chosen = torch.rand(x.shape[0], device=x.device) < self.config.p
        self.last_chosen = chosen
        if not chosen.any():
            return x
        conditions, microphones = self.draw_conditions(int(chosen.sum()))
        irs = self.responses(conditions).to(x.device)
        self.last_conditions, self.last_irs = conditions, irs
        out = x.clone()
        out[chosen] = convolve(x[chosen], irs)
        if self.first_class >= 0:
            rows = torch.nonzero(chosen).flatten()
            device = batch.device.to(x.device)[rows]
            classes = self.first_class + device * len(self.microphones) + microphones.to(x.device)
            batch.relabel_devices(rows, torch.where(device >= 0, classes, -1))
        return out


@hookimpl
def register_augmentations(register) -> None:
    register(DirGenAugmentation)
