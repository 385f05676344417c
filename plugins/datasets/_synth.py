"""Signal building blocks of the embedded generators: variation, envelopes, harmonic and
band-noise sources, YouTube-style ids and a small formant synthesiser of speech.

Not a plugin. Shared by ``fewshot_embedded.py``, ``audioset_embedded.py``,
``speech_commands_embedded.py`` and ``voxceleb1_embedded.py``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

YTID_ALPHABET = string.ascii_letters + string.digits + "-_"

# -- per-clip variation -------------------------------------------------------


def jitter(rng: np.random.Generator, value: float, sigma: float) -> float:
    """``value`` times a log-normal factor (``sigma`` in natural-log units)."""
    return float(value * np.exp(rng.normal(0.0, sigma)))


def semitones(rng: np.random.Generator, freq: float, spread: float) -> float:
    """``freq`` shifted by a normal number of semitones with std ``spread``."""
    return float(freq * 2.0 ** (rng.normal(0.0, spread) / 12.0))


def log_uniform(rng: np.random.Generator, low: float, high: float, u: float | None = None) -> float:
    """A log-uniform draw; ``u`` in [0, 1) fixes the position instead of a random one."""
    u = rng.uniform() if u is None else u
    return float(low * (high / low) ** u)


def ytid(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (may start with ``-`` and hold ``_``)."""
    return "".join(YTID_ALPHABET[i] for i in rng.integers(0, len(YTID_ALPHABET), 11))


# -- sources and filters ------------------------------------------------------


def envelope(n: int, sr: int, attack: float, decay: float, sustain: float) -> np.ndarray:
    """Linear attack to 1, exponential decay toward ``sustain``, 20 ms release at the end."""
    t = np.arange(n) / sr
    rise = np.clip(t / max(attack, 1e-4), 0.0, 1.0)
    fall = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / max(decay, 1e-3))
    release = np.clip((n - np.arange(n)) / (0.02 * sr), 0.0, 1.0)
    return rise * fall * release


def harmonic_stack(
    freq: np.ndarray, weights: np.ndarray, sr: int, phase0: float = 0.0
) -> np.ndarray:
    """Sum of harmonics ``k * freq(t)`` with ``weights[k-1]``, skipping those above 0.45 sr."""
    phase = 2 * np.pi * np.cumsum(freq) / sr + phase0
    out = np.zeros_like(freq)
    top = float(freq.max())
    for k, weight in enumerate(weights, start=1):
        if k * top >= 0.45 * sr:
            break
        out += weight * np.sin(k * phase)
    return out


def bandpass(x: np.ndarray, low: float, high: float, sr: int, order: int = 2) -> np.ndarray:
    nyquist = sr / 2
    low = float(np.clip(low, 20.0, 0.95 * nyquist))
    high = float(np.clip(high, low * 1.05, 0.98 * nyquist))
    from scipy import signal  # heavy import, only when generating

    sos = signal.butter(order, [low, high], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def add_noise(clip: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """``clip`` plus white noise at ``snr_db`` below its power."""
    noise = rng.normal(size=len(clip))
    power = np.mean(clip**2) + 1e-12
    return clip + noise * np.sqrt(power / 10 ** (snr_db / 10))


def normalized(clip: np.ndarray, gain: float) -> np.ndarray:
    """``clip`` scaled to peak ``gain``, as float32 for writing."""
    return (clip / (np.max(np.abs(clip)) + 1e-9) * gain).astype(np.float32)


# -- speech: syllables of a voice ---------------------------------------------

VOWELS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
    (520, 1190, 2390),
    (490, 1350, 1690),
)
"""F1, F2, F3 (Hz) of eight vowels of an adult male voice (Peterson and Barney, 1952)."""
CONSONANTS = ((3500, 7500), (2000, 4000), (1200, 2500), (400, 1200), (4500, 7800))
"""Noise bands (Hz) of the consonant bursts that open syllables (s, sh, k, b, f-like)."""


@dataclass(frozen=True)
class Syllable:
    """An optional consonant burst (index into CONSONANTS, -1 for none) and a vowel."""

    consonant: int
    vowel: int
    glide: float
    """Pitch movement over the syllable, in semitones."""
    length: float
    """Relative duration among the syllables of a word."""


@dataclass(frozen=True)
class Voice:
    """A speaker: pitch, vocal-tract length (formant scale), spectral tilt, breathiness."""

    f0: float
    formant_scale: float
    tilt: float
    breath: float

    def varied(self, rng: np.random.Generator, pitch_spread: float) -> Voice:
        """The same voice on another day: pitch moved by ``pitch_spread`` semitones (std),
        the vocal tract a little."""
        return Voice(
            semitones(rng, self.f0, pitch_spread),
            jitter(rng, self.formant_scale, 0.02),
            self.tilt,
            self.breath,
        )


def draw_voice(rng: np.random.Generator) -> Voice:
    return Voice(
        f0=log_uniform(rng, 85, 260),
        formant_scale=rng.uniform(0.85, 1.2),
        tilt=rng.uniform(0.4, 1.4),
        breath=rng.uniform(0.0, 0.25),
    )


def draw_syllables(rng: np.random.Generator, count: int) -> list[Syllable]:
    return [
        Syllable(
            consonant=int(rng.integers(-1, len(CONSONANTS))),
            vowel=int(rng.integers(0, len(VOWELS))),
            glide=float(rng.uniform(-4, 4)),
            length=float(rng.uniform(0.6, 1.4)),
        )
        for _ in range(count)
    ]


def render_syllable(
    syllable: Syllable, voice: Voice, rng: np.random.Generator, n: int, sr: int
) -> np.ndarray:
    """``n`` samples: a consonant burst (up to 60 ms) then the voiced vowel."""
    burst = min(n // 3, int(0.06 * sr)) if syllable.consonant >= 0 else 0
    out = np.zeros(n)
    if burst:
        low, high = CONSONANTS[syllable.consonant]
        noise = bandpass(rng.normal(size=burst), low, high, sr)
        out[:burst] = 0.4 * noise / (np.abs(noise).max() + 1e-9) * envelope(burst, sr, 0.005, 1, 1)
    m = n - burst
    t = np.arange(m) / max(m, 1)
    freq = voice.f0 * 2 ** (syllable.glide * t / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    harmonics = voice.f0 * np.arange(1, int(0.45 * sr / voice.f0))
    formants = np.array(VOWELS[syllable.vowel]) * voice.formant_scale
    weights = sum(1 / (1 + ((harmonics - f) / 90.0) ** 2) for f in formants)
    weights = weights * np.arange(1, len(harmonics) + 1) ** -voice.tilt
    vowel = harmonic_stack(freq, weights, sr, rng.uniform(0, 2 * np.pi))
    vowel = vowel / (np.abs(vowel).max() + 1e-9) + voice.breath * rng.normal(size=m)
    out[burst:] = vowel * envelope(m, sr, 0.02, 10.0, 1.0)
    return out


def render_speech(
    syllables: list[Syllable], voice: Voice, rng: np.random.Generator, n: int, sr: int
) -> np.ndarray:
    """``n`` samples of the syllables in turn, each its share of ``n`` (varied by 10 %)."""
    shares = np.array([jitter(rng, s.length, 0.1) for s in syllables])
    bounds = np.round(np.cumsum(np.concatenate([[0.0], shares])) / shares.sum() * n).astype(int)
    out = np.zeros(n)
    for syllable, start, stop in zip(syllables, bounds[:-1], bounds[1:], strict=True):
        if stop > start:
            out[start:stop] = render_syllable(syllable, voice, rng, stop - start, sr)
    return out
