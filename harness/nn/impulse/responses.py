"""Statistics of a collection: smoothed frequency responses and their quantile bands
(behind ``harness plot dirs``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

# -- statistics of a collection -------------------------------------------------


def log_frequencies(sample_rate: int, points: int = 256, low: float = 20.0) -> np.ndarray:
    """Log-spaced analysis frequencies from ``low`` to just below Nyquist."""
    return np.geomspace(low, sample_rate / 2 * 2 ** (-1 / 12), points)


def frequency_responses_db(
    irs: Tensor | np.ndarray,
    sample_rate: int,
    freqs: np.ndarray | None = None,
    smoothing: float = 1 / 6,
    reference: tuple[float, float] = (500.0, 2000.0),
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed magnitude responses in dB, ``[N, F]`` at ``freqs`` (default: log-spaced).

    Each value is the mean power of the FFT bins within ``smoothing`` octaves
    around the frequency (fractional-octave smoothing; where that band holds
    fewer than two bins, the power interpolated at the frequency). Each
    response is expressed relative to its mean power between the
    ``reference`` frequencies (0 dB around 1 kHz, as microphone responses are
    usually shown). Computed ``chunk`` responses at a time to bound memory.
    """
    irs = np.asarray(irs, dtype=np.float64)
    freqs = log_frequencies(sample_rate) if freqs is None else np.asarray(freqs, dtype=np.float64)
    n_fft = max(8192, 1 << int(np.ceil(np.log2(irs.shape[-1]))))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    half_band = 2.0 ** (smoothing / 2)
    rows = [
        smoothed_power(irs[i : i + chunk], n_fft, bins, freqs, half_band, reference)
        for i in range(0, len(irs), chunk)
    ]
    tiny = np.finfo(np.float64).tiny
    return freqs, 10.0 * np.log10(np.maximum(np.concatenate(rows), tiny))


def smoothed_power(
    irs: np.ndarray,
    n_fft: int,
    bins: np.ndarray,
    freqs: np.ndarray,
    half_band: float,
    reference: tuple[float, float],
) -> np.ndarray:
    """Band-averaged power at ``freqs`` relative to the reference band, ``[N, F]``."""
    power = np.abs(np.fft.rfft(irs, n_fft)) ** 2
    cumulative = np.concatenate([np.zeros((len(power), 1)), np.cumsum(power, axis=1)], axis=1)

    def band_mean(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.searchsorted(bins, low, side="left")
        hi = np.searchsorted(bins, high, side="right")
        count = hi - lo
        return (cumulative[:, hi] - cumulative[:, lo]) / np.maximum(count, 1), count

    smoothed, count = band_mean(freqs / half_band, freqs * half_band)
    position = np.clip(freqs / bins[1], 0, len(bins) - 1.000001)
    below, weight = np.floor(position).astype(int), position % 1.0
    interpolated = power[:, below] * (1 - weight) + power[:, below + 1] * weight
    smoothed = np.where(count >= 2, smoothed, interpolated)
    ref, _ = band_mean(np.array([reference[0]]), np.array([reference[1]]))
    return smoothed / np.maximum(ref, np.finfo(np.float64).tiny)


@dataclass
class ResponseBands:
    """Quantile bands of responses ``[N, F]`` per frequency, as in the seed's Figure 1."""

    coverage: list[float]
    """Fractions of responses inside each band, widest first (1.0: min to max)."""
    lower: np.ndarray
    """``[len(coverage), F]``: the ``(1 - c) / 2`` quantile of each band."""
    upper: np.ndarray
    """``[len(coverage), F]``: the ``(1 + c) / 2`` quantile of each band."""
    mean: np.ndarray
    median: np.ndarray


def quantile_bands(
    values: np.ndarray, coverage: Iterable[float] = (1.0, 0.8, 0.5)
) -> ResponseBands:
    """Per-column central bands holding ``coverage`` of the rows (linear-interpolated quantiles)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"values must be [N, F] with N >= 1, got shape {values.shape}")
    cover = sorted((float(c) for c in coverage), reverse=True)
    if any(not 0.0 < c <= 1.0 for c in cover):
        raise ValueError(f"coverage values must be in (0, 1], got {cover}")
    lower = np.stack([np.quantile(values, (1 - c) / 2, axis=0) for c in cover])
    upper = np.stack([np.quantile(values, (1 + c) / 2, axis=0) for c in cover])
    return ResponseBands(cover, lower, upper, values.mean(axis=0), np.median(values, axis=0))
