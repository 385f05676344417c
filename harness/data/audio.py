"""Reading audio files and resampling them (soundfile + torchaudio.functional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from harness.util.audio_files import check_sample_rate, check_samples, wav_data_shortfall
from harness.util.errors import DataError
from harness.util.faults import checkpoint


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the file's sample rate; a bad file is a :class:`DataError`."""
    path = Path(path)
    checkpoint("audio")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DataError(f"audio file not found: {path}") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise DataError(f"unreadable audio file {path}: {one_line(err)}") from None
    missing = wav_data_shortfall(path)
    if missing:
        raise DataError(f"truncated audio file {path}: {missing} bytes of audio data missing")
    if data.shape[0] == 0:
        raise DataError(f"empty audio file {path}")
    check_sample_rate(rate, path)
    check_samples(data, path)
    return data.mean(axis=1), rate


def check_header(path: str | Path) -> None:
    """Cheap preflight: the file opens, has frames, and its data chunk is complete."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except FileNotFoundError:
        raise DataError(f"audio file not found: {path}") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        raise DataError(f"unreadable audio file {path}: {one_line(err)}") from None
    if info.frames == 0:
        raise DataError(f"empty audio file {path}")
    check_sample_rate(info.samplerate, path)
    missing = wav_data_shortfall(path)
    if missing:
        raise DataError(f"truncated audio file {path}: {missing} bytes of audio data missing")


def one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


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
