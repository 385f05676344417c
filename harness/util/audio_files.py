"""Checks of decoded audio files that need no torch: truncated WAV data and unusable samples
(shared by :mod:`harness.data.audio` and the impulse-response readers of :mod:`harness.nn`)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from harness.util.errors import DataError

MAX_ABS_SAMPLE = 1e3
"""Largest sample magnitude accepted (60 dB above full scale): beyond it a file is corrupt."""

MAX_SAMPLE_RATE = 768_000
"""Highest sample rate accepted (the highest any audio interface records at): a header
claiming more is corrupt, and resampling from it would need memory in proportion."""


def check_sample_rate(rate: int, path: Path, what: str = "audio file") -> None:
    """A sample rate that is not in (0, :data:`MAX_SAMPLE_RATE`] is a DataError naming the file."""
    if rate <= 0:
        raise DataError(f"{what} {path} has an invalid sample rate {rate}")
    if rate > MAX_SAMPLE_RATE:
        raise DataError(
            f"{what} {path} claims a sample rate of {rate} Hz (more than {MAX_SAMPLE_RATE}): "
            "corrupt header"
        )


def wav_data_shortfall(path: Path) -> int:
    """Bytes the WAV header's data chunk promises beyond the end of the file (0 if complete).

    libsndfile silently shortens a truncated file, so the RIFF chunks are walked here.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(4) != b"RIFF":
            return 0
        fh.seek(12)
        while fh.tell() < size:
            header = fh.read(8)
            if len(header) < 8:
                return 0
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                return max(0, fh.tell() + length - size)
            fh.seek(length + (length & 1), 1)
    return 0


def check_samples(data: np.ndarray, path: Path, what: str = "audio file") -> None:
    """NaN, infinite or absurdly large samples make a file unusable (a DataError naming it)."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(np.flatnonzero(~finite.all(axis=-1) if data.ndim > 1 else ~finite)[0])
        raise DataError(f"{what} {path} contains NaN or infinite samples (first at frame {bad})")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise DataError(
            f"{what} {path} has a sample of magnitude {peak:.3g} (more than {MAX_ABS_SAMPLE:g}): "
            "corrupt or wrongly scaled"
        )
