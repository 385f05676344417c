"""Minimum-phase analog filter prototypes and spectra to impulse responses, for building
deterministic synthetic banks."""

from __future__ import annotations

import numpy as np

# -- building synthetic banks -------------------------------------------------
#
# Analog (s-domain) prototypes evaluated at s = j 2 pi f: every factor is
# minimum-phase, so products of them give causal, realistic responses.


def _s(freqs: np.ndarray, f0: float | np.ndarray) -> np.ndarray:
    return 1j * np.asarray(freqs, dtype=np.float64) / f0


def _butterworth_denominator(x: np.ndarray, order: int) -> np.ndarray:
    k = np.arange(1, order + 1)
    poles = np.exp(1j * np.pi * (2 * k + order - 1) / (2 * order))
    out = np.ones_like(x)
    for pole in poles:
        out = out * (x - pole)
    return out


def analog_lowpass(freqs: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    """Butterworth low-pass of ``order`` (-3 dB at ``cutoff``)."""
    return 1.0 / _butterworth_denominator(_s(freqs, cutoff), order)


def analog_highpass(freqs: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    """Butterworth high-pass of ``order`` (-3 dB at ``cutoff``)."""
    x = _s(freqs, cutoff)
    return x**order / _butterworth_denominator(x, order)


def analog_peaking(freqs: np.ndarray, center: float, gain_db: float, q: float) -> np.ndarray:
    """A peaking (bell) filter: ``gain_db`` at ``center``, bandwidth set by ``q``."""
    x = _s(freqs, center)
    a = 10.0 ** (gain_db / 40.0)
    return (x**2 + x * a / q + 1) / (x**2 + x / (a * q) + 1)


def analog_low_shelf(
    freqs: np.ndarray, corner: float, gain_db: float, q: float = 0.7071
) -> np.ndarray:
    """A low shelf: ``gain_db`` well below ``corner``, 0 dB well above."""
    x = _s(freqs, corner)
    a = 10.0 ** (gain_db / 40.0)
    return a * (x**2 + np.sqrt(a) / q * x + a) / (a * x**2 + np.sqrt(a) / q * x + 1)


def delay(freqs: np.ndarray, seconds: float | np.ndarray) -> np.ndarray:
    """A pure delay ``exp(-j 2 pi f tau)``."""
    return np.exp(-2j * np.pi * np.asarray(freqs) * seconds)


def spectrum_to_ir(spectrum: np.ndarray, n_fft: int) -> np.ndarray:
    """Real impulse responses (``n_fft`` samples) from one-sided spectra ``[..., n_fft//2 + 1]``."""
    return np.fft.irfft(spectrum, n_fft, axis=-1)
