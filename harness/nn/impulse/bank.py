"""Impulse-response banks and reading them: folders of audio files and SOFA files."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from harness.util.audio_files import check_sample_rate, check_samples, wav_data_shortfall
from harness.util.errors import DataError, UsageError
from harness.util.progress import progress

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")
"""File suffixes read as impulse responses (case-insensitive)."""
# -- the bank -----------------------------------------------------------------


@dataclass
class IRBank:
    """Impulse responses ``irs [N, L]`` at ``sample_rate`` with one metadata dict each."""

    irs: Tensor
    sample_rate: int
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.irs.ndim != 2:
            raise ValueError(f"irs must be [N, L], got shape {tuple(self.irs.shape)}")
        if not self.meta:
            self.meta = [{} for _ in range(len(self.irs))]
        if len(self.meta) != len(self.irs):
            raise ValueError(
                f"{len(self.irs)} impulse responses but {len(self.meta)} metadata dicts"
            )

    def __len__(self) -> int:
        return self.irs.shape[0]

    @property
    def length(self) -> int:
        return self.irs.shape[1]

    def select(self, indices: Sequence[int]) -> IRBank:
        """The responses at ``indices``, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return IRBank(self.irs[index], self.sample_rate, [self.meta[i] for i in index.tolist()])

    def where(self, keep: Callable[[Mapping[str, Any]], bool]) -> IRBank:
        """The responses whose metadata satisfies ``keep`` (``self`` when all do)."""
        indices = [i for i, meta in enumerate(self.meta) if keep(meta)]
        return self if len(indices) == len(self) else self.select(indices)

    def values(self, key: str) -> list[Any]:
        """Distinct values of a metadata key, sorted (``None`` left out)."""
        return sorted({m[key] for m in self.meta if m.get(key) is not None})

    def map(self, fn: Callable[[Tensor], Tensor]) -> IRBank:
        """A bank with ``fn`` applied to the responses (metadata kept)."""
        return IRBank(fn(self.irs), self.sample_rate, self.meta)


# -- reading files ------------------------------------------------------------


def one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split())


def list_ir_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Audio files in ``folder`` (hidden files skipped), sorted; none is a :class:`DataError`."""
    if not folder.exists():
        raise DataError(f"impulse-response path not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"impulse-response path is not a folder: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(
        p
        for p in candidates
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        where = "or its sub-folders " if recursive else ""
        raise DataError(
            f"no impulse-response files ({', '.join(AUDIO_SUFFIXES)}) in folder {where}{folder}"
        )
    return files


def read_ir(path: Path) -> tuple[np.ndarray, int]:
    """A mono impulse response (float64) and its sample rate; a bad file is a :class:`DataError`."""
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        raise DataError(f"unreadable impulse-response file {path}: {one_line(err)}") from None
    check_sample_rate(info.samplerate, path, "impulse-response file")
    if info.channels != 1:
        raise DataError(
            f"impulse-response file {path} has {info.channels} channels; DIRs must be mono files"
        )
    if data.shape[0] == 0:
        raise DataError(f"empty impulse-response file {path}")
    if info.frames > 0 and data.shape[0] < info.frames:
        raise DataError(
            f"truncated impulse-response file {path}: header says {info.frames} frames, "
            f"found {data.shape[0]}"
        )
    missing = wav_data_shortfall(path)
    if missing:
        raise DataError(
            f"truncated impulse-response file {path}: {missing} bytes of audio data missing"
        )
    check_samples(data, path, "impulse-response file")
    return data[:, 0], rate


def stack_padded(rows: Sequence[np.ndarray | Tensor]) -> Tensor:
    """Zero-pad 1-D signals to the longest and stack them as float64 ``[N, L]``."""
    length = max(r.shape[-1] for r in rows)
    out = torch.zeros(len(rows), length, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, : row.shape[-1]] = torch.as_tensor(row, dtype=torch.float64)
    return out


def resample_rows(irs: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample ``[N, L]`` responses (torchaudio's windowed sinc); a no-op at equal rates."""
    if orig_rate == new_rate:
        return irs
    return AF.resample(irs, orig_rate, new_rate)


def load_ir_files(
    files: Sequence[Path],
    sample_rate: int,
    meta: Sequence[dict[str, Any]] | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 64,
) -> IRBank:
    """Read, resample once to ``sample_rate``, optionally ``transform`` (e.g. truncate).

    Files are processed in chunks so that large collections with long
    responses never sit in memory at full length. Responses of different
    lengths are zero-padded to the longest. ``meta`` defaults to
    ``{"microphone": stem, "source": path}`` per file.
    """
    if not files:
        raise DataError("no impulse-response files to load")
    metas = [dict(m) for m in meta] if meta is not None else [default_meta(f) for f in files]
    parts: list[Tensor] = []
    starts = range(0, len(files), chunk)
    for start in progress(starts, desc="loading impulse responses", total=len(starts)):
        parts.append(load_chunk(files[start : start + chunk], sample_rate, transform))
    irs = stack_padded([row for part in parts for row in part]) if len(parts) > 1 else parts[0]
    return IRBank(irs.float(), sample_rate, metas)


def load_chunk(
    files: Sequence[Path], sample_rate: int, transform: Callable[[Tensor], Tensor] | None
) -> Tensor:
    """Read files, resample them (grouped by rate) and ``transform`` the stack."""
    by_rate: dict[int, list[int]] = {}
    signals: list[np.ndarray] = []
    for i, path in enumerate(files):
        data, rate = read_ir(path)
        signals.append(data)
        by_rate.setdefault(rate, []).append(i)
    rows: list[Tensor] = [torch.empty(0)] * len(files)
    for rate, members in by_rate.items():
        resampled = resample_rows(stack_padded([signals[i] for i in members]), rate, sample_rate)
        for i, row in zip(members, resampled, strict=True):
            rows[i] = row
    out = stack_padded(rows)
    return transform(out) if transform is not None else out


def default_meta(path: Path) -> dict[str, Any]:
    """Metadata of a file whose name says nothing more: the stem as microphone."""
    return {"microphone": path.stem, "angle": None, "distance": None, "source": str(path)}


def load_sofa(path: Path, sample_rate: int) -> IRBank:
    """Every receiver of every measurement in a SOFA file's ``Data.IR [M, R, N]``.

    Metadata: ``microphone`` (the file stem, plus ``#r`` when there are several
    receivers), ``angle`` (source azimuth in degrees, 0-360) and ``distance``
    (source distance in cm) from ``SourcePosition`` when given, ``measurement``
    and ``receiver`` indices. ``Data.Delay`` is ignored.
    """
    try:
        import sofar
    except ModuleNotFoundError:
        raise UsageError(f"reading {path} needs the 'sofar' package: pip install sofar") from None
    if not path.is_file():
        raise DataError(f"SOFA file not found: {path}")
    try:
        sofa = sofar.read_sofa(str(path), verify=False, verbose=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
        raise DataError(f"unreadable SOFA file {path}: {one_line(err)}") from None
    data = getattr(sofa, "Data_IR", None)
    if data is None:
        convention = getattr(sofa, "GLOBAL_SOFAConventions", "unknown convention")
        raise DataError(f"SOFA file {path} has no impulse responses (no Data.IR; {convention})")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 3 or data.size == 0:
        raise DataError(f"SOFA file {path}: Data.IR must be [M, R, N], got shape {data.shape}")
    if not np.isfinite(data).all():
        raise DataError(f"SOFA file {path}: Data.IR contains NaN or infinite samples")
    rate = sofa_sample_rate(sofa, path)
    measurements, receivers, _ = data.shape
    angles, distances = sofa_source_positions(sofa, measurements)
    meta = [
        {
            "microphone": path.stem if receivers == 1 else f"{path.stem}#{r}",
            "angle": angles[m],
            "distance": distances[m],
            "measurement": m,
            "receiver": r,
            "source": str(path),
        }
        for m in range(measurements)
        for r in range(receivers)
    ]
    irs = resample_rows(
        torch.from_numpy(data.reshape(measurements * receivers, -1)), rate, sample_rate
    )
    return IRBank(irs.float(), sample_rate, meta)


def sofa_sample_rate(sofa: Any, path: Path) -> int:
    """A SOFA file's one sample rate; several or a fractional one is an error."""
    rates = np.unique(np.asarray(getattr(sofa, "Data_SamplingRate", []), dtype=np.float64))
    if rates.size != 1 or not rates[0] > 0 or rates[0] != round(rates[0]):
        raise DataError(
            f"SOFA file {path}: Data.SamplingRate must be one positive integer, got {rates}"
        )
    return int(rates[0])


def sofa_source_positions(sofa: Any, count: int) -> tuple[list[float | None], list[float | None]]:
    """Azimuth (degrees, 0-360) and distance (cm) per measurement, ``None`` when unknown."""
    unknown: list[float | None] = [None] * count
    positions = np.asarray(getattr(sofa, "SourcePosition", []), dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] not in (1, count):
        return unknown, list(unknown)
    positions = np.broadcast_to(positions, (count, 3))
    kind = str(getattr(sofa, "SourcePosition_Type", "")).lower()
    units = str(getattr(sofa, "SourcePosition_Units", "")).lower()
    if kind == "spherical":
        azimuth = positions[:, 0] if "degree" in units else np.degrees(positions[:, 0])
        distance = positions[:, 2]
    elif kind == "cartesian":
        azimuth = np.degrees(np.arctan2(positions[:, 1], positions[:, 0]))
        distance = np.linalg.norm(positions, axis=1)
    else:
        return unknown, list(unknown)
    angles = [float(a) for a in np.round(np.mod(azimuth, 360.0), 6)]
    return angles, [float(d) for d in np.round(distance * 100.0, 6)]
