"""The decoded-audio cache: a split decoded and resampled once, read by every later run.

One folder per (clip list, sample rate, clip length) under ``<cache>/audio``::

    waves.npy    int16 [N, T], row i is clip i scaled by 32767 / scale[i]
    scales.npy   float32 [N], max(1, peak |x|) of each clip (resampling may overshoot 1)
    index.json   clip paths, sample rate, clip seconds, shape, fingerprint

The key hashes every file's path, size and modification time, so a changed,
added or removed file gives a new folder (and a fresh build). Folders are built
with :func:`harness.util.cache.build_once` (a temporary folder renamed into place with
a done marker), so an interrupted or concurrent build never leaves a half-written
cache that a run would read. Rows are read with ``os.pread`` from the page cache:
the file is mapped by the OS, not into each process's resident memory.

Stored values round to the nearest int16 step, so a read clip differs from
direct decoding by at most ``0.5 * scale[i] / 32767`` per sample (:data:`ROUNDING`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.api import Clip
from harness.data.loader import ClipAudio, ClipDataset, DecodedWaves, WaveSource, worker_message
from harness.util.cache import build_once, cache_root
from harness.util.errors import DataError, UsageError
from harness.util.files import check_free_space
from harness.util.progress import enabled, note, progress

FORMAT = 1
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
    """Rows of a built cache, read one clip at a time with ``os.pread``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        info = json.loads((folder / "index.json").read_text())
        self.count, self.length = info["shape"]
        self.scales = np.load(folder / "scales.npy")
        with (folder / "waves.npy").open("rb") as fh:
            np.lib.format.read_magic(fh)
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            self.offset = fh.tell()
        if tuple(shape) != (self.count, self.length) or dtype != np.int16:
            raise OSError(f"decoded-audio cache {folder} has a bad waves.npy header")
        self.row_bytes = self.length * 2
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def read(self, i: int) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.folder / "waves.npy", os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, self.row_bytes, self.offset + i * self.row_bytes)
        row = np.frombuffer(data, dtype=np.int16).astype(np.float32)
        return row * np.float32(self.scales[i] / FULL_SCALE)


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
            peak = wave.abs().amax(dim=1).clamp(min=1.0)
            scales[idx.numpy()] = peak.numpy()
            rows = torch.round(wave / peak[:, None] * FULL_SCALE).to(torch.int16)
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
        built["yes"] = True

    build_once(folder, build)
    if built and enabled():
        size = (folder / "waves.npy").stat().st_size
        note(f"{desc}: decoded-audio cache ready, {size / 1e9:.2f} GB in {folder}")
    return ClipAudio(
        audio.clips, CachedWaves(folder), audio.labels, audio.devices, audio.sample_rate
    )
