"""A DIR generator conditioned on microphone traits (seed 000, Sec. 5.3): model, data, storage.

Used by the ``dirgen`` command (``harness dirgen train``) and the ``dirgen`` augmentation.

The device-generalisation paper trains "an IR generator, similar to the FAST-RIR diffuse room
impulse generator", conditioned on 12 microphone variables, "in the same GAN framework as the
original method". Here:

- Conditions (:func:`condition_vector`, 12 values): directivity one-hot over the 6 first-order
  patterns (:data:`PATTERNS`), transducer one-hot over condenser / dynamic / ribbon, diaphragm
  (1 for large, 0 for small: the two-class one-hot without its redundant column), and the source
  position in Cartesian coordinates ``(d cos a, d sin a)`` with the distance in metres.
- Generator (FAST-RIR's shape, scaled to 1024-sample responses): a linear layer from the 12
  conditions to a ``128 x 16`` sequence, six transposed 1-D convolutions (kernel 4, stride 2) with
  batch norm and PReLU up to 1024 samples, and a final convolution to one channel. No noise input:
  like FAST-RIR, one response per condition.
- Discriminator: four strided 1-D convolutions over the response, concatenated with the
  conditions, and a linear layer to one logit (conditional GAN).
- Objective (FAST-RIR's): the generator minimises the non-saturating GAN loss plus
  ``mse_weight`` times the mean squared error to the measured response; the discriminator the
  binary cross-entropy of real against generated responses. Adam (lr 2e-4, betas 0.5/0.999);
  the training runs through the core's trainer (:mod:`harness.run.dirgen`).

Data: the embedded synthetic Multi DIR bank of ``multidir`` (25 microphones x 72 angles x 3
distances, energy-normalised 1024-sample responses) by default, or a real collection by
``--path`` (the ``multidir`` folder layout or a SOFA file) with ``--traits`` naming a CSV of
``microphone,pattern,transducer,diaphragm``. A seeded ``--test-share`` of the responses is held
out; the command stores the generator and its test MSE::

    harness dirgen train --epochs 20 --out runs/dirgen
    harness run ... --aug dirgen --set aug.dirgen.model=runs/dirgen/dirgen.pt
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.nn.impulse import IRBank
from harness.nn.torch_files import load_torch_file
from harness.util.errors import DataError, UsageError

__all__ = [
    "DIAPHRAGMS",
    "PATTERNS",
    "TRANSDUCERS",
    "DirDiscriminator",
    "DirGenerator",
    "condition_vector",
    "load_generator",
]

PATTERNS = ("omni", "subcardioid", "cardioid", "supercardioid", "hypercardioid", "figure-8")
TRANSDUCERS = ("condenser", "dynamic", "ribbon")
DIAPHRAGMS = ("small", "large")
NUM_CONDITIONS = len(PATTERNS) + len(TRANSDUCERS) + 1 + 2
LENGTH = 1024
FORMAT = "harness-dirgen-1"


def condition_vector(
    pattern: str, transducer: str, diaphragm: str, angle_deg: float, distance_cm: float
) -> Tensor:
    """The 12 conditions of one response (see the module docstring)."""
    for value, options, what in (
        (pattern, PATTERNS, "pattern"),
        (transducer, TRANSDUCERS, "transducer"),
        (diaphragm, DIAPHRAGMS, "diaphragm"),
    ):
        if value not in options:
            raise UsageError(f"unknown {what} {value!r}; one of {', '.join(options)}")
    out = torch.zeros(NUM_CONDITIONS)
    out[PATTERNS.index(pattern)] = 1.0
    out[len(PATTERNS) + TRANSDUCERS.index(transducer)] = 1.0
    out[len(PATTERNS) + len(TRANSDUCERS)] = float(diaphragm == "large")
    radians = math.radians(angle_deg)
    metres = distance_cm / 100.0
    out[-2] = metres * math.cos(radians)
    out[-1] = metres * math.sin(radians)
    return out


class DirGenerator(nn.Module):
    """Conditions ``[B, 12]`` -> impulse responses ``[B, 1024]``."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(NUM_CONDITIONS, width * 16)
        channels = [width, 64, 32, 32, 16, 16, 16]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            layers += [nn.ConvTranspose1d(c_in, c_out, 4, 2, 1), nn.BatchNorm1d(c_out), nn.PReLU()]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv1d(channels[-1], 1, 7, padding=3)

    def forward(self, conditions: Tensor) -> Tensor:
        x = self.fc(conditions).view(conditions.shape[0], self.width, 16)
        return self.out(self.up(x)).squeeze(1)


class DirDiscriminator(nn.Module):
    """Responses ``[B, 1024]`` and conditions ``[B, 12]`` -> real/fake logits ``[B]``."""

    def __init__(self) -> None:
        super().__init__()
        channels = [1, 16, 32, 64, 128]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            layers += [nn.Conv1d(c_in, c_out, 4, 4), nn.LeakyReLU(0.2)]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(128 * (LENGTH // 256) + NUM_CONDITIONS, 1)

    def forward(self, irs: Tensor, conditions: Tensor) -> Tensor:
        x = self.conv(irs.unsqueeze(1)).flatten(1)
        return self.fc(torch.cat([x, conditions], dim=1)).squeeze(1)


# -- data -------------------------------------------------------------------------------------


def read_traits(path: Path) -> dict[str, tuple[str, str, str]]:
    """``microphone,pattern,transducer,diaphragm`` rows of a CSV file (header required)."""
    if not path.is_file():
        raise DataError(f"traits file not found: {path}")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    need = {"microphone", "pattern", "transducer", "diaphragm"}
    if not rows or not need <= set(rows[0]):
        raise DataError(f"traits file {path} needs the columns {', '.join(sorted(need))}")
    return {r["microphone"]: (r["pattern"], r["transducer"], r["diaphragm"]) for r in rows}


def dataset(bank: IRBank, traits: Mapping[str, tuple[str, str, str]]) -> tuple[Tensor, Tensor]:
    """Conditions ``[N, 12]`` and energy-normalised responses ``[N, 1024]`` of the bank."""
    conditions, rows = [], []
    for index, meta in enumerate(bank.meta):
        mic = meta.get("microphone")
        if mic not in traits:
            raise DataError(f"no traits for microphone {mic!r}: add it to the --traits CSV")
        if meta.get("angle") is None or meta.get("distance") is None:
            raise DataError(f"response {index} ({mic}) has no angle or distance")
        conditions.append(condition_vector(*traits[mic], meta["angle"], meta["distance"]))
        rows.append(index)
    irs = bank.irs[rows].float()
    irs = F.pad(irs, (0, max(0, LENGTH - irs.shape[1])))[:, :LENGTH]
    irs = irs / irs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.stack(conditions), irs


def save_generator(path: Path, generator: DirGenerator, sample_rate: int, info: Mapping) -> None:
    payload = {
        "format": FORMAT,
        "state_dict": generator.state_dict(),
        "sample_rate": sample_rate,
        "length": LENGTH,
        "test_mse": float(info["test_mse"]),
        "patterns": list(PATTERNS),
        "transducers": list(TRANSDUCERS),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_generator(path: str | Path) -> tuple[DirGenerator, dict[str, Any]]:
    """A stored generator (``weights_only`` load) in evaluation mode, and its file's fields."""
    path = Path(path).expanduser()
    payload = load_torch_file(path, "DIR generator")
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise DataError(f"{path} is not a DIR generator written by 'harness dirgen train'")
    generator = DirGenerator()
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise DataError(f"DIR generator {path} holds no state_dict")
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or mis-shaped keys
        reason = " ".join(str(err).split())[:300]
        raise DataError(f"DIR generator {path} does not fit the generator: {reason}") from None
    if not isinstance(payload.get("sample_rate"), int) or payload["sample_rate"] <= 0:
        raise DataError(f"DIR generator {path} has no valid sample_rate")
    return generator.eval(), dict(payload)
