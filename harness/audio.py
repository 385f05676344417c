"""Reading audio files and resampling them (soundfile + torchaudio.functional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from harness.errors import DataError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the file's sample rate; a bad file is a :class:`DataError`."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DataError(f"audio file not found: {path}") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise DataError(f"unreadable audio file {path}: {err}") from None
    if info.frames > 0 and data.shape[0] < info.frames:
        raise DataError(
            f"truncated audio file {path}: header says {info.frames} frames, found {data.shape[0]}"
        )
    if data.shape[0] == 0:
        raise DataError(f"empty audio file {path}")
    return data.mean(axis=1), rate


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample along the last axis (a no-op when the rates agree)."""
    if orig_rate == new_rate:
        return wave
    return AF.resample(wave, orig_rate, new_rate)


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad a 1-D signal to ``length`` samples."""
    if wave.shape[0] >= length:
        return wave[:length]
    return np.pad(wave, (0, length - wave.shape[0]))
