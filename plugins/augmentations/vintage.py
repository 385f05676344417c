"""``vintage``: convolve training clips with vintage-microphone impulse responses.

The "Vintage DIRs" of the seed paper (Section 4): 66 impulse responses of
vintage microphones from the Microphone Impulse Response Project (MicIRP),
measured with swept sines in a booth at 20-30 cm. Point ``aug.vintage.path``
at a folder laid out as MicIRP distributes it: mono WAV files (24-bit,
44.1 and 48 kHz mixed), one per microphone, the microphone named by the file
stem (``B&O_BM2.wav`` -> ``B&O_BM2``). Files are resampled once to the
backbone's rate and used at full length, as the CPJKU DCASE23 baseline does
(``--set aug.vintage.length=N`` truncates with a Kaiser window).

Without a path, an embedded synthetic bank is used: 66 deterministic
minimum-phase responses built to match the real collection's statistics
(see :func:`synthetic_vintage`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from harness import hookimpl
from harness.nn.impulse import (
    ImpulseResponseAugmentation,
    IRBank,
    analog_highpass,
    analog_low_shelf,
    analog_lowpass,
    analog_peaking,
    delay,
    spectrum_to_ir,
)

__all__ = ["Vintage", "synthetic_vintage"]

MICROPHONES = 66
SEED = 1931
FFT_SIZE = 8192
IR_SECONDS = 0.128
"""Length of a synthetic response (the real ones hold 99.9% of their energy within 30 ms)."""
ONSET_SECONDS = 0.0016
"""Delay before the synthetic peak, as in the real files (about 70 samples at 44.1 kHz)."""


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value drawn uniformly on a log scale between ``low`` and ``high``."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def vintage_response(rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    """One microphone's complex response: the stages of :func:`synthetic_vintage`, in order."""
    order = int(rng.choice([1, 2, 3], p=[0.3, 0.5, 0.2]))
    response = analog_highpass(freqs, float(np.exp(rng.normal(np.log(80.0), 0.8))), order)
    response *= analog_low_shelf(freqs, rng.uniform(500, 900), rng.normal(-2.8, 1.0))
    presence_gain = float(np.clip(rng.normal(5.5, 2.5), 0.0, 12.0))
    response *= analog_peaking(
        freqs, log_uniform(rng, 2800, 6000), presence_gain, rng.uniform(0.7, 1.6)
    )
    cutoff = float(np.exp(rng.normal(np.log(7700.0), 0.1)))
    response *= analog_lowpass(freqs, cutoff, int(rng.integers(6, 8)))
    if rng.random() < 0.25:
        response *= analog_low_shelf(freqs, rng.uniform(100, 250), rng.uniform(3, 9))
    wide = rng.random() < 0.2
    for _ in range(int(rng.integers(1, 4)) if wide else 2):
        if wide:
            gain, low = rng.uniform(6, 12) * rng.choice([-1, 1]), 1200.0
        else:
            gain, low = rng.normal(0.0, 1.2), 2000.0
        response *= analog_peaking(freqs, log_uniform(rng, low, 10000), gain, rng.uniform(1, 4))
    reflections = np.ones_like(response)
    for _ in range(int(rng.integers(2, 5))):
        gain = rng.uniform(0.04, 0.18) * rng.choice([-1, 1])
        reflections += gain * delay(freqs, rng.uniform(0.3e-3, 4e-3))
    return response * reflections


@functools.lru_cache(maxsize=4)
def synthetic_vintage(sample_rate: int) -> IRBank:
    """66 deterministic vintage-microphone responses at ``sample_rate`` (128 ms, peak 1).

    Each microphone (seeded generator, fixed draw order) is a product of
    minimum-phase analog stages, evaluated at the FFT frequencies:

    1. low-frequency roll-off: Butterworth high-pass of order 1-3 at a
       log-normal corner (median 80 Hz);
    2. a -2.8 dB (sd 1) low-mid shelf at 500-900 Hz;
    3. a presence peak of +5.5 dB (sd 2.5) at 2.8-6 kHz;
    4. the pronounced low-pass above 10 kHz: Butterworth order 6-7 at a
       log-normal corner (median 7.7 kHz, sd 10%);
    5. for a quarter of the microphones, a +3-9 dB low shelf below 100-250 Hz
       (ribbon-style bass);
    6. two +-1.2 dB resonances at 2-10 kHz, or, for one microphone in five,
       1-3 resonances of +-6-12 dB at 1.2-10 kHz (the 20% of the collection
       with a wider, 20 dB variation);
    7. 2-4 booth reflections 0.3-4 ms late at 4-18% amplitude.

    The response is delayed by 1.6 ms, turned into 128 ms of impulse response
    and scaled to a peak of 1, like the real files. Calibration against the
    real MicIRP set (1/6-octave responses relative to 500 Hz-2 kHz, medians
    real / synthetic): 5 kHz +5.2 / +3.9 dB, 10 kHz -13.7 / -13.2 dB,
    14 kHz -33.1 / -32.3 dB.
    """
    rng = np.random.default_rng(SEED)
    freqs = np.fft.rfftfreq(FFT_SIZE, 1.0 / sample_rate)
    length = round(IR_SECONDS * sample_rate)
    onset = delay(freqs, ONSET_SECONDS)
    irs = np.empty((MICROPHONES, length))
    for i in range(MICROPHONES):
        ir = spectrum_to_ir(vintage_response(rng, freqs) * onset, FFT_SIZE)[:length]
        irs[i] = ir / np.abs(ir).max()
    meta = [
        {
            "microphone": f"SynVintage_{i + 1:02d}",
            "angle": None,
            "distance": None,
            "source": "embedded",
        }
        for i in range(MICROPHONES)
    ]
    return IRBank(torch.from_numpy(irs).float(), sample_rate, meta)


class Vintage(ImpulseResponseAugmentation):
    """Vintage-microphone DIRs (MicIRP, 66 microphones), real or embedded."""

    name = "vintage"
    description = (
        "Convolve training clips with vintage-microphone impulse responses "
        "(MicIRP folder, or an embedded synthetic bank of 66)."
    )

    def embedded_bank(self, sample_rate: int) -> IRBank:
        bank = synthetic_vintage(sample_rate)
        return bank.map(lambda irs: self.truncate(irs, sample_rate))

    @classmethod
    def describe_extra(cls) -> list[str]:
        return [
            "path: a folder of mono WAV files as MicIRP distributes them (microphone = file stem)",
            "embedded bank (path empty): 66 synthetic vintage microphones, low-pass above 10 kHz",
        ]


@hookimpl
def register_augmentations(register):
    register(Vintage)
