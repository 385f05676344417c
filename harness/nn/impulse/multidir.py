"""The Multi DIR collection (seed paper, Sections 4 and 5.3): its file layout, filters and
embedded synthetic bank, shared by the ``multidir`` augmentation and ``harness dirgen``.

Impulse responses of 25 microphones measured at incidence angles 0-355 degrees in 5 degree
steps and at 50, 125 and 500 cm (Franco Hernandez et al., JAES 2022): a folder of
``<Mic>_<distance>cm_<angle>Deg.wav`` files searched recursively, or a ``.sofa`` file.
Without a path, :func:`synthetic_multidir` builds an embedded bank of the same shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.domains import between, domain_map, positive
from harness.nn.impulse.augmentation import ImpulseResponseAugmentation, IRConfig
from harness.nn.impulse.bank import IRBank, default_meta
from harness.nn.impulse.dsp import PRE_ROLL_SECONDS, Align, Window, kaiser_truncate
from harness.nn.impulse.filters import (
    analog_highpass,
    analog_lowpass,
    analog_peaking,
    delay,
    spectrum_to_ir,
)

FILE_NAME = re.compile(
    r"^(?P<microphone>.+)_(?P<distance>\d+(?:\.\d+)?)cm_(?P<angle>-?\d+(?:\.\d+)?)deg$",
    re.IGNORECASE,
)
ANGLES = tuple(range(0, 360, 5))
DISTANCES_CM = (50.0, 125.0, 500.0)
SPEED_OF_SOUND = 343.0


def parse_multidir_name(path: Path) -> dict[str, Any]:
    """Metadata from ``<Mic>_<distance>cm_<angle>Deg.wav``; other names: the stem as microphone."""
    match = FILE_NAME.match(path.stem)
    if match is None:
        return default_meta(path)
    return {
        "microphone": match["microphone"],
        "angle": float(match["angle"]) % 360.0,
        "distance": float(match["distance"]),
        "source": str(path),
    }


@dataclass
class MultiDirConfig(IRConfig):
    """Options of ``multidir``: those of every IR augmentation plus angle and distance filters."""

    length: int = 1024
    """Truncate to this many samples with a Kaiser window (Section 5.3: 1024)."""
    window: Window = "full"
    """Section 5.3's "window ... to 1024 samples with a Kaiser window": the symmetric
    ``kaiser(length, beta)``; ``half`` (right half from the onset) is an option."""
    align: Align = "start"
    """The windowed segment starts at the file's first sample (Section 5.3 names no
    alignment); ``onset`` starts 0.5 ms before each response's onset."""
    angle_min: float = 0.0
    """Lowest incidence angle (degrees); with angle_max < angle_min the range wraps past 0."""
    angle_max: float = 360.0
    """Highest incidence angle (degrees) to use."""
    distances: list[float] = field(default_factory=list)
    """Use only these source distances in cm (empty: all)."""

    domains = domain_map(
        angle_min=between(0, 360, "Lowest incidence angle in degrees."),
        angle_max=between(0, 360, "Highest incidence angle in degrees."),
        distances=positive("Only these source distances in cm (empty: all)."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, angle in (("angle_min", self.angle_min), ("angle_max", self.angle_max)):
            if not 0.0 <= angle <= 360.0:
                raise ValueError(f"{name} must be in [0, 360], got {angle}")

    @property
    def angle_filtered(self) -> bool:
        return (self.angle_min, self.angle_max) != (0.0, 360.0)

    def angle_ok(self, angle: float) -> bool:
        if self.angle_min <= self.angle_max:
            return self.angle_min <= angle <= self.angle_max
        return angle >= self.angle_min or angle <= self.angle_max


class MultiDirCollection(ImpulseResponseAugmentation):
    """Multi-angle, multi-distance microphone DIRs (25 microphones), real or embedded: the
    collection's file names, its angle and distance filters and its embedded bank."""

    name = "multidir"
    Config = MultiDirConfig
    recursive = True

    def describe_file(self, path: Path, root: Path) -> dict[str, Any]:
        return parse_multidir_name(path)

    def keep(self, meta: Mapping[str, Any]) -> bool:
        cfg = self.config
        if not super().keep(meta):
            return False
        if cfg.distances and meta.get("distance") not in cfg.distances:
            return False
        if cfg.angle_filtered:
            return meta.get("angle") is not None and cfg.angle_ok(meta["angle"])
        return True

    def check_filters(self, metas: Sequence[Mapping[str, Any]], where: str) -> None:
        super().check_filters(metas, where)
        self.check_values("distances", self.config.distances, metas, "distance", where)

    def embedded_bank(self, sample_rate: int) -> IRBank:
        cfg = self.config
        return synthetic_multidir(sample_rate, cfg.length, cfg.beta, cfg.window, cfg.align)


# -- the embedded bank ----------------------------------------------------------

PATTERNS = {
    "omni": 1.0,
    "subcardioid": 0.7,
    "cardioid": 0.5,
    "supercardioid": 0.37,
    "hypercardioid": 0.25,
    "figure-8": 0.0,
}
"""First-order polar patterns ``a + (1 - a) cos(theta)`` by their pressure share ``a``."""

MICROPHONE_TYPES = (
    ("omni", "condenser", "small"),
    ("omni", "condenser", "small"),
    ("omni", "condenser", "large"),
    ("omni", "dynamic", "small"),
    ("omni", "condenser", "large"),
    ("subcardioid", "condenser", "large"),
    ("cardioid", "condenser", "small"),
    ("cardioid", "condenser", "small"),
    ("cardioid", "condenser", "large"),
    ("cardioid", "condenser", "large"),
    ("cardioid", "condenser", "large"),
    ("cardioid", "dynamic", "small"),
    ("cardioid", "dynamic", "small"),
    ("cardioid", "dynamic", "large"),
    ("cardioid", "ribbon", "large"),
    ("supercardioid", "condenser", "small"),
    ("supercardioid", "dynamic", "small"),
    ("supercardioid", "dynamic", "small"),
    ("supercardioid", "condenser", "small"),
    ("hypercardioid", "condenser", "small"),
    ("hypercardioid", "dynamic", "small"),
    ("figure-8", "ribbon", "large"),
    ("figure-8", "ribbon", "large"),
    ("figure-8", "condenser", "large"),
    ("figure-8", "ribbon", "small"),
)
"""(polar pattern, transducer, diaphragm) of the 25 synthetic microphones."""

SEED = 2022
FFT_SIZE = 4096
LOWEST_HZ = 1e-3
"""Stands in for 0 Hz, where the proximity term is infinite (every response is 0 there)."""
MIC_HEIGHT_M = 1.2
FLOOR_REFLECTION = 0.3


@dataclass(frozen=True)
class SyntheticMicrophone:
    """Drawn parameters of one synthetic microphone."""

    name: str
    pattern: str
    transducer: str
    diaphragm: str
    a_mid: float
    a_low: float
    low_hz: float
    directive_hz: float
    shading_hz: float
    body_delay_s: float
    body_gain: float


def draw_microphone(index: int, rng: np.random.Generator) -> SyntheticMicrophone:
    """The parameters of synthetic microphone ``index``, drawn from ``rng``."""
    pattern, transducer, diaphragm = MICROPHONE_TYPES[index]
    a_mid = PATTERNS[pattern] + (
        rng.uniform(0.02, 0.05) if pattern == "figure-8" else rng.normal(0, 0.03)
    )
    a_mid = float(np.clip(a_mid, 0.0, 1.0))
    directive = rng.uniform(8000, 12000) if diaphragm == "small" else rng.uniform(3500, 6000)
    return SyntheticMicrophone(
        name=f"Syn{index + 1:02d}-{pattern}-{transducer}",
        pattern=pattern,
        transducer=transducer,
        diaphragm=diaphragm,
        a_mid=a_mid,
        a_low=a_mid if pattern in ("omni", "figure-8") else min(1.0, a_mid + rng.uniform(0, 0.2)),
        low_hz=float(rng.uniform(100, 300)),
        directive_hz=float(directive),
        shading_hz=float(directive * rng.uniform(1.2, 2.0)),
        body_delay_s=float(rng.uniform(0.05e-3, 0.3e-3)),
        body_gain=float(rng.uniform(0.05, 0.25)),
    )


def on_axis_response(
    mic: SyntheticMicrophone, rng: np.random.Generator, freqs: np.ndarray
) -> np.ndarray:
    """Transducer response: roll-offs and presence peaks typical of its kind, plus small ripples."""
    if mic.transducer == "condenser":
        response = analog_highpass(freqs, rng.uniform(20, 40), 2)
        response *= analog_peaking(
            freqs, rng.uniform(8000, 12000), rng.uniform(1, 4), rng.uniform(1, 2)
        )
        response *= analog_lowpass(freqs, rng.uniform(18000, 22000), 2)
    elif mic.transducer == "dynamic":
        response = analog_highpass(freqs, rng.uniform(50, 110), 2)
        response *= analog_peaking(
            freqs, rng.uniform(3000, 6000), rng.uniform(3, 6), rng.uniform(0.8, 1.5)
        )
        response *= analog_lowpass(freqs, rng.uniform(11000, 15000), int(rng.integers(3, 5)))
    else:
        response = analog_highpass(freqs, rng.uniform(20, 40), int(rng.integers(1, 3)))
        response *= analog_peaking(freqs, rng.uniform(150, 400), rng.uniform(1, 3), 0.7)
        response *= analog_lowpass(freqs, rng.uniform(8000, 13000), 2)
    for _ in range(2):
        response *= analog_peaking(
            freqs, rng.uniform(1000, 12000), rng.normal(0, 1.5), rng.uniform(1, 4)
        )
    return response


def pressure_share(mic: SyntheticMicrophone, freqs: np.ndarray) -> np.ndarray:
    """``a(f)``: wider at low frequencies (cardioid family), narrower above ``directive_hz``."""
    low = (mic.a_low - mic.a_mid) / (1.0 + (freqs / mic.low_hz) ** 2)
    high = (freqs / mic.directive_hz) ** 2
    a = mic.a_mid + low
    return a - 0.5 * a * high / (1.0 + high)


def directivity(
    mic: SyntheticMicrophone, freqs: np.ndarray, cos_incidence: np.ndarray, distance_m: np.ndarray
) -> np.ndarray:
    """Complex response to a spherical wave from the given incidence and distance.

    ``a(f) + (1 - a(f)) cos(theta) (1 + 1 / (j k r))``: the pressure part, and
    the gradient part with its proximity effect, times first-order shading of
    the body for off-axis sound and a body reflection that grows off axis.
    Shapes broadcast: ``cos_incidence`` and ``distance_m`` ``[..., 1]``, ``freqs [F]``.
    """
    a = pressure_share(mic, freqs)
    kr = 2 * np.pi * freqs * distance_m / SPEED_OF_SOUND
    gradient = (1.0 - a) * cos_incidence * (1.0 + 1.0 / (1j * kr))
    off_axis = np.sqrt((1.0 - cos_incidence) / 2.0)
    shading = 1.0 / (1.0 + 1j * freqs * off_axis / mic.shading_hz)
    body = 1.0 + mic.body_gain * off_axis * delay(freqs, mic.body_delay_s)
    return (a + gradient) * shading * body


def microphone_irs(
    mic: SyntheticMicrophone, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Responses ``[distances, angles, FFT_SIZE]`` of one microphone in a lightly treated room.

    The direct sound, a floor reflection (mic and source 1.2 m high, 30%
    reflective; its elevation and delay follow from the distance) and a
    diffuse tail whose level grows with distance, all seen through the
    microphone's on-axis response and polar pattern.
    """
    freqs = np.fft.rfftfreq(FFT_SIZE, 1.0 / sample_rate)
    freqs[0] = LOWEST_HZ
    on_axis = on_axis_response(mic, rng, freqs).astype(np.complex64)
    # single precision for the [distances, angles, frequencies] arrays: 4x less time
    freqs = freqs.astype(np.float32)
    theta = np.radians(np.asarray(ANGLES, dtype=np.float32))[None, :, None]
    r = np.asarray(DISTANCES_CM, dtype=np.float32)[:, None, None] / 100.0

    direct = directivity(mic, freqs, np.cos(theta), r) * delay(freqs, r / SPEED_OF_SOUND)
    floor_path = np.sqrt(r**2 + (2 * MIC_HEIGHT_M) ** 2)
    cos_floor = np.cos(theta) * (r / floor_path)
    floor = FLOOR_REFLECTION * (r / floor_path) * directivity(mic, freqs, cos_floor, floor_path)
    floor = floor * delay(freqs, floor_path / SPEED_OF_SOUND)

    frames = np.arange(FFT_SIZE, dtype=np.float32) / sample_rate
    envelope = np.exp(-6.9 * frames / 0.15) * (frames > 0.004)
    shape = (len(DISTANCES_CM), len(ANGLES), FFT_SIZE)
    noise = rng.standard_normal(shape, dtype=np.float32) * envelope
    level = np.sqrt(0.002 * (r / 0.5) ** 1.5 / (envelope**2).sum())
    a = pressure_share(mic, freqs)
    diffuse_gain = np.sqrt(a**2 + (1.0 - a) ** 2 / 3.0)
    tail = np.fft.rfft(noise, axis=-1) * level * diffuse_gain * delay(freqs, r / SPEED_OF_SOUND)

    return spectrum_to_ir(on_axis * (direct + floor + tail), FFT_SIZE)


@functools.lru_cache(maxsize=2)
def synthetic_multidir(
    sample_rate: int,
    length: int = 1024,
    beta: float = 2.0,
    window: Window = "half",
    align: Align = "onset",
) -> IRBank:
    """The embedded Multi DIR bank: 25 microphones x 72 angles x 3 distances (5400 responses).

    Deterministic (seeded, fixed draw order) and generated at ``sample_rate``
    in about a second. Each of the 25 microphones (:data:`MICROPHONE_TYPES`:
    5 omni, 1 subcardioid, 9 cardioid, 4 supercardioid, 2 hypercardioid,
    4 figure-8; condensers, moving-coil and ribbons, small and large
    diaphragms) is modelled as

    - an on-axis response typical of its transducer (roll-offs, presence peak,
      small random ripples; minimum-phase analog prototypes);
    - a first-order polar pattern ``a(f) + (1 - a(f)) cos(theta)`` that is
      more omnidirectional at low frequencies and narrows above a
      diaphragm-size dependent frequency, with the gradient part's proximity
      effect ``1 + 1 / (j k r)`` (bass boost at 50 cm), high-frequency body
      shading and a body reflection off axis;
    - a room: a floor reflection whose delay, level and elevation follow from
      the distance, and a diffuse tail (150 ms decay) whose level grows with
      distance.

    Each 128 ms response is truncated to ``length`` samples with
    :func:`harness.nn.impulse.kaiser_truncate` exactly like the real collection,
    then kept in memory (5400 x 1024 float32: 22 MB) for the process.
    """
    rng = np.random.default_rng(SEED)
    microphones = [draw_microphone(i, rng) for i in range(len(MICROPHONE_TYPES))]
    pre = round(PRE_ROLL_SECONDS * sample_rate)
    parts, meta = [], []
    for mic in microphones:
        irs = torch.from_numpy(microphone_irs(mic, rng, sample_rate).reshape(-1, FFT_SIZE))
        if length:
            irs = kaiser_truncate(irs, length, beta, window, align, pre)
        parts.append(irs)
        meta.extend(
            {
                "microphone": mic.name,
                "pattern": mic.pattern,
                "transducer": mic.transducer,
                "angle": float(angle),
                "distance": distance,
                "source": "embedded",
            }
            for distance in DISTANCES_CM
            for angle in ANGLES
        )
    return IRBank(torch.cat(parts), sample_rate, meta)
