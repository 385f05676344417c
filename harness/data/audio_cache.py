"""The decoded-audio cache: a split decoded and resampled once, read by every later run.

One folder per (clip list, sample rate, clip length) under ``<cache>/audio``::

    waves.npy    int16 [N, T], row i is clip i scaled by 32767 / scale[i]
    scales.npy   float32 [N], max(1, peak |x|) of each clip (resampling may overshoot 1)
    index.json   clip paths, sample rate, clip seconds, shape, fingerprint

The key hashes every file's path, size and modification time, so a changed,
added or removed file gives a new folder (and a fresh build). Folders are built
with :func:`harness.util.cache.build_once` (a temporary folder renamed into place with
a done marker), so an interrupted or concurrent build never leaves a half-written
cache that a run would read. Every open verifies the folder (sizes and checksums written at
build time, :func:`harness.util.cache.verify_built`; the index's shape; finite scales of at
least 1): a damaged folder is discarded with one warning and rebuilt. Rows are read with
``os.pread`` from the page cache: the file is mapped by the OS, not into each process's
resident memory.

Stored values round to the nearest int16 step, so a read clip differs from
direct decoding by at most ``0.5 * scale[i] / 32767`` per sample (:data:`ROUNDING`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.api import Clip
from harness.data.loader import ClipAudio, ClipDataset, DecodedWaves, WaveSource, worker_message
from harness.util.cache import CacheDamaged, build_once, cache_root, discard
from harness.util.errors import DataError, UsageError
from harness.util.files import check_free_space
from harness.util.progress import enabled, note, progress

FORMAT = 2
FULL_SCALE = 32767
ROUNDING = 0.5 / FULL_SCALE
"""Largest difference from direct decoding per sample, times the clip's ``scale``."""
BUILD_BATCH = 32


def clip_files(clip: Clip) -> tuple:
    return clip.segments or (clip.path,)


def fingerprint(clips: list[Clip], sample_rate: int, clip_seconds: float) -> str:
    """Hash of every file's path, size and mtime, the sample rate and the clip length."""
    digest = hashlib.sha256(f"{FORMAT}|{sample_rate}|{clip_seconds!r}".encode())
    for clip in clips:
        for path in clip_files(clip):
            try:
                stat = os.stat(path)
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:24]


def cache_folder(setting: str) -> Path | None:
    """``run.audio_cache``: ``off`` -> None, ``auto`` -> ``<cache>/audio``, else the path."""
    if setting == "off":
        return None
    return cache_root() / "audio" if setting == "auto" else Path(setting).expanduser()


def check_writable(folder: Path) -> None:
    """A one-line :class:`UsageError` when the cache folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe."):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(
            f"the decoded-audio cache folder {folder} is not writable ({reason}); "
            "set run.audio_cache to another folder or to off"
        ) from None


class CachedWaves(WaveSource):
    """Rows of a built cache, read one clip at a time with ``os.pread``.

    Opening checks what the rows depend on (raising :class:`CacheDamaged`): the index, the
    ``waves.npy`` header against the index's shape, and one finite scale of at least 1 per
    clip (a NaN or zero scale would turn every sample of its clip into NaN or silence)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count, self.length = read_shape(folder / "index.json")
        self.scales = read_scales(folder / "scales.npy", self.count)
        try:
            with (folder / "waves.npy").open("rb") as fh:
                np.lib.format.read_magic(fh)
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                self.offset = fh.tell()
        except (OSError, ValueError) as err:
            raise CacheDamaged(f"waves.npy unreadable ({type(err).__name__})") from None
        if tuple(shape) != (self.count, self.length) or dtype != np.int16:
            raise CacheDamaged("waves.npy header does not match index.json")
        self.row_bytes = self.length * 2
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def read(self, i: int) -> np.ndarray:
        path = self.folder / "waves.npy"
        try:
            if self._fd is None or self._pid != os.getpid():
                self._fd, self._pid = os.open(path, os.O_RDONLY), os.getpid()
            data = os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes)
        except OSError as err:
            raise DataError(f"decoded-audio cache file {path}: {err.strerror}; {REBUILD}") from None
        if len(data) != self.row_bytes:
            raise DataError(f"decoded-audio cache file {path} is truncated at clip {i}; {REBUILD}")
        row = np.frombuffer(data, dtype=np.int16).astype(np.float32)
        return row * np.float32(self.scales[i] / FULL_SCALE)


def to_int16(wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[B, T]`` as stored: int16 ``round(x / scale * 32767)`` and each row's ``scale``
    (``max(1, peak |x|)``); read back as ``row * scale / 32767``."""
    peak = wave.abs().amax(dim=1).clamp(min=1.0)
    return torch.round(wave / peak[:, None] * FULL_SCALE).to(torch.int16), peak


REBUILD = "delete its folder to rebuild it"


def read_shape(path: Path) -> tuple[int, int]:
    """``(clips, samples)`` from a cache's ``index.json``."""
    try:
        count, length = json.loads(path.read_text())["shape"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CacheDamaged("index.json unreadable or without a shape") from None
    if not all(isinstance(n, int) and n >= 0 for n in (count, length)):
        raise CacheDamaged("index.json has a bad shape")
    return count, length


def read_scales(path: Path, count: int) -> np.ndarray:
    """The per-clip scales: ``count`` finite float32 values of at least 1."""
    try:
        scales = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise CacheDamaged(f"scales.npy unreadable ({type(err).__name__})") from None
    if scales.shape != (count,) or scales.dtype != np.float32:
        raise CacheDamaged(f"scales.npy holds {scales.dtype} {scales.shape}, not {count} scales")
    if not (np.isfinite(scales) & (scales >= 1)).all():
        raise CacheDamaged("scales.npy holds a NaN, infinite or below-1 scale")
    return scales


def write_cache(tmp: Path, audio: ClipAudio, workers: int, desc: str) -> None:
    """Decode ``audio`` (a :class:`DecodedWaves` split) in order into ``tmp``."""
    source = audio.source
    n, length = len(source), source.length
    loader = DataLoader(
        ClipDataset(source),
        batch_size=BUILD_BATCH,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # leaves the global RNG as it was
    )
    scales = np.ones(n, dtype=np.float32)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int16)), "fortran_order": False}
    with (tmp / "waves.npy").open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": (n, length)})
        for wave, idx in progress(loader, desc=desc, total=len(loader), unit="batch"):
            rows, peak = to_int16(wave)
            scales[idx.numpy()] = peak.numpy()
            fh.write(rows.numpy().tobytes())
    np.save(tmp / "scales.npy", scales)
    info = {
        "format": FORMAT,
        "shape": [n, length],
        "sample_rate": audio.sample_rate,
        "clip_seconds": source.clip_seconds,
        "clips": [[str(p) for p in clip_files(c)] for c in audio.clips],
    }
    (tmp / "index.json").write_text(json.dumps(info) + "\n")


def cached_audio(
    audio: ClipAudio, setting: str, workers: int = 0, desc: str = "decoding audio"
) -> ClipAudio:
    """``audio`` read from the decoded-audio cache (built first when missing).

    ``audio`` must be a lazily decoded split (:func:`harness.data.loader.split_audio`); with
    ``setting == "off"`` it is returned unchanged.
    """
    root = cache_folder(setting)
    source = audio.wave
    if root is None or not isinstance(source, DecodedWaves):
        return audio
    check_writable(root)
    key = fingerprint(audio.clips, source.sample_rate, source.clip_seconds)
    folder = root / f"{source.sample_rate}hz-{source.clip_seconds:g}s-{len(source)}-{key}"
    built = {}

    def build(tmp: Path) -> None:
        gigabytes = len(source) * source.length * 2 / 1e9
        if enabled():  # with progress bars off (HARNESS_PROGRESS=0) the build is silent
            note(f"{desc}: decoding {len(source)} clips into {folder} ({gigabytes:.2f} GB int16)")
        needed = len(source) * (source.length * 2 + 4)  # int16 waves, float32 scales
        check_free_space(tmp, needed, "decoded-audio cache")
        try:
            write_cache(tmp, audio, workers, desc)
        except DataError as err:  # re-raised from a worker with its traceback in the text
            raise DataError(worker_message(err)) from None
        except RuntimeError as err:  # a worker killed (e.g. out of memory) while decoding
            if "DataLoader worker" not in str(err):
                raise
            first = str(err).strip().splitlines()[0]
            raise DataError(f"{desc}: a worker died building the cache {folder}: {first}") from None
        built["yes"] = True

    rows = open_verified(folder, build)
    if built and enabled():
        size = (folder / "waves.npy").stat().st_size
        note(f"{desc}: decoded-audio cache ready, {size / 1e9:.2f} GB in {folder}")
    return ClipAudio(
        audio.clips, rows, audio.labels, audio.devices, audio.sample_rate, audio.targets
    )


def open_verified(folder: Path, build: Callable[[Path], None]) -> CachedWaves:
    """The cache in ``folder`` (built when missing); a damaged one is discarded with one
    warning and rebuilt once, a rebuild that is damaged too is a :class:`DataError`."""
    build_once(folder, build)  # verifies sizes and checksums first, rebuilding on damage
    try:
        return CachedWaves(folder)
    except CacheDamaged as damage:
        warnings.warn(f"cache {folder} is damaged ({damage}); rebuilding it", stacklevel=3)
    discard(folder)
    build_once(folder, build)
    try:
        return CachedWaves(folder)
    except CacheDamaged as damage:
        raise DataError(
            f"decoded-audio cache {folder} is damaged right after its build "
            f"({damage}); check the disk or set run.audio_cache=off"
        ) from None
