"""WebDataset shards of decoded audio: a split written once, streamed by every training run.

For data sets too big for the decoded-audio cache (AudioSet-2M: about 640 GB of int16 at
16 kHz), ``harness shards write`` converts a split into WebDataset tar shards
(https://github.com/webdataset/webdataset), read back through the ``webdataset`` package::

    manifest.json       format, sample rate, clip length, clip count, the clip list's hash,
                        per shard: name, clips, bytes, sha256; the split's name, the data
                        set's classes, devices and label kind, and the clip list's file
    clips.jsonl.gz      every clip of the split in order (its :class:`Clip` as JSON): a run
                        on a node without the split's files builds the split from it
    shard-000000.tar    per clip ``<key>.npy`` (int16 [T]) and ``<key>.json`` (index in the
                        split, scale, CRC-32 of the samples, every field of its Clip)

Samples are the decoded-audio cache's rows (:func:`harness.data.audio_cache.to_int16`): a
streamed clip equals the cached one exactly, and differs from direct decoding by at most
``ROUNDING * scale`` per sample.

Streaming one epoch (:class:`ShardLoader`): the shards are put in a seeded order and read
as one sequence of clips; rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal contiguous
ranges of it (``N // B`` batches of ``B / W`` clips each, ``B`` the global batch), and each
of its DataLoader workers a contiguous part of that range, whole batches, through a seeded
shuffle buffer. So every rank gets exactly the same number of batches, the ranks' clips are
disjoint and together the epoch (the ``N mod B`` clips at the sequence's end are left out,
as ``drop_last`` does), and a rank reads whole shards but at the two ends of its range.
The order is a function of the epoch's generator draw, the number of processes,
``run.workers`` and ``run.shuffle_buffer``: an epoch resumed with the same settings is the
same, its first ``skip`` batches read again and dropped before decoding.

A shard that is shorter than its manifest says (truncated), not a valid tar/npy, or whose
clip fails its CRC-32 (corrupt) fails the run with a one-line :class:`DataError` naming
it; the stream never skips clips, so an epoch is never silently short. ``harness shards
check`` verifies every shard's checksum.

Reading clips by position (:class:`ShardWaves`: the health probe, protocols reading the
training split) needs random access: shards streamed from URLs are fetched into the cache
once per node (:func:`fetch_shard`, checked against the manifest) and read from there.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import _shuffle as shuffle_buffer
from webdataset.gopen import gopen
from webdataset.tariterators import tarfile_samples

from harness.api import Batch, Clip
from harness.data.audio_cache import BUILD_BATCH, FULL_SCALE, clip_files, to_int16
from harness.data.loader import (
    PREFETCH_FACTOR,
    ClipAudio,
    ClipDataset,
    WaveSource,
    ignore_job_signals,
    worker_message,
)
from harness.util.cache import build_once, cache_root, owned_temp_dir, stale_temp_dirs, temp_owner
from harness.util.errors import DataError, HarnessError, UsageError
from harness.util.files import write_text_atomic
from harness.util.progress import note, progress

FORMAT = 1
MANIFEST = "manifest.json"
CLIP_FILE = "clips.jsonl.gz"


@dataclass(frozen=True)
class SplitLabels:
    """What a manifest records of the data set its split came from."""

    split: str
    classes: tuple[str, ...]
    devices: tuple[str, ...]
    multi_label: bool


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def clip_list_hash(clips: list[Clip]) -> str:
    """Hash of the split's clip files in order: what a manifest must have been written from."""
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(("|".join(str(p) for p in clip_files(clip)) + "\n").encode())
    return digest.hexdigest()[:24]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """A clip field as JSON: paths as strings, tuples as lists, mappings as objects."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def clip_record(clip: Clip, index: int, scale: float, row: np.ndarray) -> dict:
    """A clip's JSON beside its samples: its index in the split, the scale of its int16
    samples and their CRC-32 (a damaged payload is caught when read, not trained on), and
    every field of its :class:`Clip` (label or labels, device, path, segments, meta)."""
    fields = plain(dataclasses.asdict(clip))
    return {"index": index, "scale": float(scale), "crc32": zlib.crc32(row), "clip": fields}


def clip_from_record(fields: Mapping[str, Any]) -> Clip:
    """The :class:`Clip` whose fields :func:`clip_record` wrote as JSON."""
    return Clip(
        path=Path(fields["path"]),
        label=int(fields["label"]),
        device=str(fields.get("device", "")),
        meta={str(k): str(v) for k, v in (fields.get("meta") or {}).items()},
        segments=tuple(Path(p) for p in fields.get("segments") or ()),
        labels=tuple(int(k) for k in fields.get("labels") or ()),
    )


def write_clip_file(folder: Path, clips: list[Clip]) -> dict:
    """The split's clips, one JSON line each, gzipped without a timestamp (the same bytes
    for the same clips), written atomically; the manifest's fields naming the file."""
    path = folder / CLIP_FILE
    tmp = folder / f".{CLIP_FILE}.{os.getpid()}"
    with tmp.open("wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as fh:
        for clip in clips:
            fh.write((json.dumps(plain(dataclasses.asdict(clip))) + "\n").encode())
    os.replace(tmp, path)
    return {"clip_file": CLIP_FILE, "clip_file_sha256": file_sha256(path)}


# -- writing ----------------------------------------------------------------------------------


def write_shards(
    audio: ClipAudio,
    folder: Path,
    clips_per_shard: int,
    workers: int = 0,
    desc: str = "shards",
    part: tuple[int, int] = (0, 1),
    labels: SplitLabels | None = None,
) -> dict | None:
    """Decode ``audio`` (a lazily decoded split) in order into shards under ``folder``.

    Shard ``s`` holds clips ``s * clips_per_shard`` on. ``part = (k, n)`` writes only the
    shards ``s`` with ``s % n == k`` (one job of ``n`` writing in parallel, e.g. a SLURM
    array) and records them in ``parts/``; the part that completes the set writes the
    clip list and the manifest (with ``labels``, what the data set says of the split).
    Written into a temporary sibling folder named after this process and moved
    into place, so an interrupted write leaves nothing a run would read (the next write of
    the same folder removes it). Returns the manifest, or None while parts are missing.
    """
    if clips_per_shard < 1:
        raise UsageError(f"bad value for --clips-per-shard: {clips_per_shard} (at least 1)")
    number, parts = part
    if not 0 <= number < parts:
        raise UsageError(f"bad value for --part: {number + 1}/{parts} (1/N to N/N)")
    part_file = folder / "parts" / f"{number + 1}-of-{parts}.json"
    if (folder / MANIFEST).exists() or part_file.exists():
        raise UsageError(f"shard folder {folder} already holds these shards; pick another --out")
    if parts == 1 and folder.exists() and any(folder.iterdir()):
        raise UsageError(f"shard folder {folder} exists and is not empty; pick another --out")
    for stale in stale_temp_dirs([folder.parent]):  # an earlier write that was killed
        if (temp_owner(stale) or ("",))[0] == folder.name:
            shutil.rmtree(stale, ignore_errors=True)
    rows = [i for i in range(len(audio)) if (i // clips_per_shard) % parts == number]
    tmp = owned_temp_dir(folder.parent, folder.name)
    try:
        shards = write_tars(audio, rows, tmp, clips_per_shard, workers, desc)
        if parts == 1:
            manifest = shard_manifest(audio, shards, labels, write_clip_file(tmp, audio.clips))
            write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
            if folder.exists():
                folder.rmdir()
            os.replace(tmp, folder)
            return manifest
        (folder / "parts").mkdir(parents=True, exist_ok=True)
        for shard in shards:
            os.replace(tmp / shard["name"], folder / shard["name"])
        write_text_atomic(part_file, json.dumps(shards) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return complete_parts(audio, folder, parts, labels)


def shard_manifest(
    audio: ClipAudio, shards: list[dict], labels: SplitLabels | None, clip_file: dict
) -> dict:
    source = audio.source
    split = {} if labels is None else plain(dataclasses.asdict(labels))
    manifest = {
        "format": FORMAT,
        "sample_rate": audio.sample_rate,
        "clip_seconds": source.clip_seconds,
        "length": source.length,
        "clips": len(audio),
        "clip_list": clip_list_hash(audio.clips),
        "shards": sorted(shards, key=lambda shard: shard["name"]),
    }
    return manifest | split | clip_file


def complete_parts(
    audio: ClipAudio, folder: Path, parts: int, labels: SplitLabels | None = None
) -> dict | None:
    """The manifest once every part of ``n`` is written (written by whichever part sees
    the set complete first; the same text when two do), else None."""
    files = [folder / "parts" / f"{k}-of-{parts}.json" for k in range(1, parts + 1)]
    if not all(f.is_file() for f in files):
        return None
    shards = [shard for f in files for shard in json.loads(f.read_text())]
    manifest = shard_manifest(audio, shards, labels, write_clip_file(folder, audio.clips))
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def open_tar(path: Path) -> wds.TarWriter:
    """A shard writer giving the same bytes for the same clips (fixed mtime) in plain ustar
    (``TarWriter`` leaves ``tarfile``'s pax default, whose extra headers cost reading time)."""
    writer = wds.TarWriter(str(path), mtime=0.0)
    writer.tarstream.format = tarfile.USTAR_FORMAT
    return writer


def write_tars(
    audio: ClipAudio, rows: list[int], tmp: Path, clips_per_shard: int, workers: int, desc: str
) -> list[dict]:
    """Clips ``rows`` of ``audio`` (whole shards, in order) decoded into ``tmp``."""
    loader = DataLoader(
        ClipDataset(audio.source.subset(np.asarray(rows, dtype=np.int64))),
        batch_size=BUILD_BATCH,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),  # leaves the global RNG as it was
    )
    shards: list[dict] = []
    writer: wds.TarWriter | None = None

    def close_shard() -> None:
        writer.close()
        path = tmp / shards[-1]["name"]
        shards[-1] |= {"bytes": path.stat().st_size, "sha256": file_sha256(path)}

    try:
        for wave, local in progress(loader, desc=desc, total=len(loader), unit="batch"):
            samples, scales = to_int16(wave)
            indices = [rows[k] for k in local.tolist()]
            for row, scale, i in zip(samples.numpy(), scales.tolist(), indices, strict=True):
                if i % clips_per_shard == 0:
                    if writer is not None:
                        close_shard()
                    shards.append({"name": shard_name(i // clips_per_shard), "clips": 0})
                    writer = open_tar(tmp / shards[-1]["name"])
                record = clip_record(audio.clips[i], i, scale, row)
                writer.write({"__key__": f"{i:010d}", "npy": row, "json": record})
                shards[-1]["clips"] += 1
        if writer is not None:
            close_shard()
    except DataError as err:  # re-raised from a worker with its traceback in the text
        raise DataError(worker_message(err)) from None
    return shards


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSet:
    """A manifest and where its shards are."""

    manifest_path: str
    sample_rate: int
    length: int
    clips: int
    clip_list: str
    names: tuple[str, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...]
    sha256: tuple[str, ...]
    base: str
    """Folder or URL prefix of the shards (``{name}`` in it is replaced by a shard's name)."""
    clip_seconds: float = 0.0
    labels: SplitLabels | None = None
    """The split and its data set's classes, devices and label kind (None: a manifest
    written before manifests recorded them)."""
    clip_file: str = ""
    """The clip list's file name beside the manifest ("": none, an older manifest)."""
    clip_file_sha256: str = ""

    def url(self, number: int) -> str:
        name = self.names[number]
        return self.base.replace("{name}", name) if "{name}" in self.base else f"{self.base}/{name}"

    @property
    def local(self) -> bool:
        return "{name}" not in self.base and "://" not in self.base and ":" not in self.base[:6]


def read_manifest(location: str, base: str = "") -> ShardSet:
    """The shards of ``location`` (a folder holding ``manifest.json``, or the file), checked:
    the clip counts add up, and local shards exist with the manifest's sizes.

    ``base`` streams the shards from elsewhere: a URL prefix or a template with ``{name}``
    (e.g. ``pipe:curl -s http://host/shards/{name}``); empty: the manifest's folder.
    """
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        shards = manifest["shards"]
        names = tuple(str(s["name"]) for s in shards)
        counts = tuple(int(s["clips"]) for s in shards)
        sizes = tuple(int(s["bytes"]) for s in shards)
        sums = tuple(str(s["sha256"]) for s in shards)
        fields = (int(manifest[k]) for k in ("sample_rate", "length", "clips", "format"))
        sample_rate, length, clips, version = fields
        clip_list = str(manifest["clip_list"])
        listing = manifest_listing(manifest)
    except OSError as err:
        raise UsageError(f"shard manifest {path} cannot be read ({err.strerror})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"shard manifest {path} is not a harness manifest ({err!r})") from None
    if version != FORMAT:
        raise UsageError(f"shard manifest {path} has format {version}, this harness reads {FORMAT}")
    if sum(counts) != clips or not names:
        raise UsageError(
            f"shard manifest {path} does not match its shards: {clips} clips listed, "
            f"{sum(counts)} in its {len(names)} shards"
        )
    shard_set = ShardSet(
        str(path), sample_rate, length, clips, clip_list, names, counts, sizes, sums,
        base or str(path.parent), **listing,
    )  # fmt: skip
    if shard_set.local:
        check_sizes(shard_set)
    return shard_set


def manifest_listing(manifest: dict) -> dict[str, Any]:
    """The manifest's optional fields as :class:`ShardSet` fields (absent in older ones)."""
    listing: dict[str, Any] = {"clip_seconds": float(manifest.get("clip_seconds", 0.0))}
    if "clip_file" in manifest:
        listing["clip_file"] = str(manifest["clip_file"])
        listing["clip_file_sha256"] = str(manifest["clip_file_sha256"])
    if "classes" in manifest:
        listing["labels"] = SplitLabels(
            str(manifest["split"]),
            tuple(str(name) for name in manifest["classes"]),
            tuple(str(name) for name in manifest["devices"]),
            bool(manifest["multi_label"]),
        )
    return listing


def manifest_clips(shards: ShardSet) -> list[Clip]:
    """The split's clips as the manifest's clip list holds them, checked against the
    manifest (its sha256, clip count and clip-list hash); a one-line error otherwise."""
    if not shards.clip_file or shards.labels is None:
        raise UsageError(
            f"shard manifest {shards.manifest_path} lists no clips (written by an older "
            "harness): write the shards again with harness shards write, or put the "
            "training files on this node"
        )
    path = Path(shards.manifest_path).parent / shards.clip_file
    try:
        if file_sha256(path) != shards.clip_file_sha256:
            raise UsageError(f"shard clip list {path} is not the one {shards.manifest_path} lists")
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            clips = [clip_from_record(json.loads(line)) for line in fh]
    except OSError as err:
        raise UsageError(f"shard clip list {path} cannot be read ({err.strerror or err})") from None
    except EOFError:
        raise UsageError(f"shard clip list {path} cannot be read (truncated)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"shard clip list {path} is not a harness clip list ({err!r})") from None
    if len(clips) != shards.clips or clip_list_hash(clips) != shards.clip_list:
        raise UsageError(
            f"shard clip list {path} does not match {shards.manifest_path} "
            f"({len(clips)} clips, the manifest lists {shards.clips})"
        )
    return clips


def check_sizes(shards: ShardSet) -> None:
    """Every local shard is there, with the size its manifest lists (a cheap stat)."""
    for number, size in enumerate(shards.sizes):
        url = Path(shards.url(number))
        try:
            found = url.stat().st_size
        except OSError:
            raise UsageError(
                f"shard manifest {shards.manifest_path} does not match its shards: {url} is missing"
            ) from None
        if found != size:
            raise UsageError(
                f"shard manifest {shards.manifest_path} does not match its shards: {url} "
                f"has {found} bytes, the manifest says {size} (truncated or rewritten)"
            )


def verify_checksums(shards: ShardSet) -> None:
    """Every local shard's sha256 is the manifest's (``harness shards check``)."""
    for number, expected in enumerate(shards.sha256):
        url = Path(shards.url(number))
        if file_sha256(url) != expected:
            raise DataError(
                f"shard {url} is corrupt: its sha256 differs from {shards.manifest_path}"
            )


def check_against_split(shards: ShardSet, clips: list[Clip], sample_rate: int, length: int):
    """The shards hold exactly this split at this sample rate and clip length."""
    where = f"shards of {shards.manifest_path}"
    if shards.sample_rate != sample_rate or shards.length != length:
        raise UsageError(
            f"{where} are {shards.sample_rate} Hz x {shards.length} samples, the run needs "
            f"{sample_rate} Hz x {length}; write them for this backbone (harness shards write)"
        )
    if shards.clips != len(clips) or shards.clip_list != clip_list_hash(clips):
        raise UsageError(
            f"{where} were written from another clip list ({shards.clips} clips) than this "
            f"run's training split ({len(clips)} clips); write them with the run's data settings"
        )


def shards_fingerprint(shards: ShardSet) -> str:
    """What identifies the clips of a shard set: its clip list and every shard's sha256 (a
    key for caches of the split that must not stat the clips' own files)."""
    digest = hashlib.sha256(f"{shards.clip_list}|{shards.sample_rate}|{shards.length}".encode())
    digest.update("|".join(shards.sha256).encode())
    return digest.hexdigest()[:24]


FETCHED = "shards"
"""The folder under :func:`harness.util.cache.cache_root` of shards fetched from URLs for
reads by position: ``<shards_fingerprint>/<shard name>/<shard name>``, one per node."""

_fetch_noted: set[str] = set()
"""Shard sets whose first fetch this process has announced."""


def fetched_folder(shards: ShardSet) -> Path:
    """Where this node keeps the shards of ``shards`` fetched for reads by position."""
    return cache_root() / FETCHED / shards_fingerprint(shards)


def fetching(url: str, call: Callable[[], Any]) -> Any:
    """``call()`` (opening, reading or closing ``url``), its error a one-line DataError."""
    try:
        return call()
    except Exception as err:  # gopen, a pipe's exit status, anything the reader raises
        said = [str(a) for a in err.args if isinstance(a, str) and a != url]
        message = " ".join(" ".join(said).split())[:160] or type(err).__name__
        raise DataError(f"shard {url} cannot be fetched: {message}") from None


def fetch_shard(shards: ShardSet, number: int) -> Path:
    """Shard ``number`` of URL-streamed ``shards`` as a local file: fetched once per node into
    :func:`fetched_folder` (built atomically by :func:`harness.util.cache.build_once`), opened
    as the training stream opens it (webdataset's ``gopen``: ``pipe:``, http, ...) and
    checked against the manifest's size and sha256. A shard that cannot be fetched or does
    not match is a one-line :class:`DataError` naming its URL; nothing of it stays cached."""
    name, url = shards.names[number], shards.url(number)
    folder = fetched_folder(shards) / name

    def download(tmp: Path) -> None:
        if shards.manifest_path not in _fetch_noted:
            _fetch_noted.add(shards.manifest_path)
            note(
                f"fetching the shards of {shards.manifest_path} that training clips are "
                f"read from by position ({len(shards.names)} shards in all, each once per "
                f"node, as their clips are first read) into {folder.parent}"
            )
        digest, size = hashlib.sha256(), 0
        with (tmp / name).open("wb") as out:  # its errors are the cache's disk's, not the URL's
            stream = fetching(url, lambda: gopen(url, "rb"))
            try:
                while block := fetching(url, lambda: stream.read(1 << 20)):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
            finally:
                fetching(url, stream.close)  # a pipe's command failing shows here
        expected = shards.sizes[number]
        if size != expected:
            raise DataError(
                f"shard {url} does not match {shards.manifest_path}: fetched {size} bytes, "
                f"the manifest lists {expected}"
            )
        if digest.hexdigest() != shards.sha256[number]:
            raise DataError(
                f"shard {url} does not match {shards.manifest_path}: its sha256 differs"
            )

    build_once(folder, download)
    return folder / name


class ShardWaves(WaveSource):
    """The split's clips read by position from the shards, never from the clips' files.

    Clip ``i`` of the split is the member ``<i:010d>`` of the shard whose range holds it
    (shards hold consecutive clips in name order); a shard's member offsets are read from
    its tar headers the first time a clip of it is read (in each process), so a probe of a
    few clips touches only their shards. Shards streamed from URLs (``run.shards_url``) are
    fetched the first time one of their clips is read, once per node, into the cache
    (:func:`fetch_shard`), and read from there. Values equal the streamed clips exactly."""

    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards
        self.length = shards.length
        self.starts = np.cumsum((0, *shards.counts))
        self._members: dict[int, dict[str, tuple[int, int]]] = {}
        self._paths: dict[int, str] = {}

    def __len__(self) -> int:
        return self.shards.clips

    def path(self, shard: int) -> str:
        """The local file of ``shard``: the shard itself, or its fetched copy."""
        if shard not in self._paths:
            local = self.shards.local
            self._paths[shard] = (
                self.shards.url(shard) if local else str(fetch_shard(self.shards, shard))
            )
        return self._paths[shard]

    def members(self, shard: int) -> dict[str, tuple[int, int]]:
        """``name -> (offset, size)`` of the members of ``shard``."""
        if shard not in self._members:
            path = self.path(shard)
            try:
                with tarfile.open(path) as tar:
                    found = {m.name: (m.offset_data, m.size) for m in tar}
            except (OSError, tarfile.TarError) as err:
                raise DataError(f"shard {path} is corrupt or unreadable: {err}") from None
            self._members[shard] = found
        return self._members[shard]

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        members = self.members(shard)
        path, key = self.path(shard), f"{i:010d}"
        if f"{key}.npy" not in members or f"{key}.json" not in members:
            raise DataError(f"shard {path} is corrupt: clip {key} is missing")
        with open(path, "rb") as fh:
            data, text = (read_member(fh, *members[f"{key}.{ext}"]) for ext in ("npy", "json"))
        try:
            record = json.loads(text)
            row = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as err:
            raise DataError(f"shard {path} is corrupt: {err}") from None
        if (
            row.dtype != np.int16
            or row.shape != (self.length,)
            or zlib.crc32(row) != record.get("crc32")
        ):
            raise DataError(f"shard {path} is corrupt: clip {key} fails its checks")
        return row.astype(np.float32) * np.float32(record["scale"] / FULL_SCALE)


def read_member(fh: io.BufferedReader, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise DataError(f"shard {fh.name} is truncated")
    return data


# -- the epoch's plan -------------------------------------------------------------------------


def clip_range(
    counts: list[int], order: list[int], first: int, count: int
) -> list[tuple[int, int, int]]:
    """``(shard, start, stop)`` pieces holding the clips at positions ``[first, first +
    count)`` of the shards read in ``order`` one after another."""
    pieces, position, end = [], 0, first + count
    for shard in order:
        size = counts[shard]
        lo, hi = max(first, position), min(end, position + size)
        if lo < hi:
            pieces.append((shard, lo - position, hi - position))
        position += size
        if position >= end:
            break
    return pieces


def worker_batches(batches: int, workers: int, worker: int) -> int:
    """Batches of worker ``worker``: the ``j``-th batch of a pass comes from ``j % workers``."""
    return len(range(worker, batches, workers))


@dataclass
class EpochPlan:
    order: list[int]
    seed: int | None
    """Seed of the workers' shuffle buffers; None: no shuffling."""
    skip: int


class ShardStream(IterableDataset):
    """One rank's batches of a pass over the shards (see the module docstring)."""

    def __init__(
        self, shards: ShardSet, batches: int, rank_batch: int, rank: int, buffer: int
    ) -> None:
        self.shards = shards
        self.batches, self.rank_batch, self.rank = batches, rank_batch, rank
        self.buffer = buffer
        self.plan = EpochPlan(list(range(len(shards.names))), None, 0)
        self._npy_header, self._npy_bytes = b"", 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        workers, slot = (info.num_workers, info.id) if info else (1, 0)
        worker = (slot + self.plan.skip) % workers  # the pass's next batch comes from slot 0
        counts = [worker_batches(self.batches, workers, w) for w in range(workers)]
        first = self.rank * self.batches * self.rank_batch + sum(counts[:worker]) * self.rank_batch
        wanted = counts[worker] * self.rank_batch
        skipped = worker_batches(self.plan.skip, workers, worker) * self.rank_batch
        pieces = clip_range(list(self.shards.counts), self.plan.order, first, wanted)
        stream = self.samples(pieces)
        if self.plan.seed is not None:
            rng = random.Random(f"{self.plan.seed}|{self.rank}|{worker}")
            stream = shuffle_buffer(stream, self.buffer, self.buffer, rng=rng)
        stream = islice(stream, skipped, None)
        batch: list[dict] = []
        for sample in stream:
            batch.append(sample)
            if len(batch) == self.rank_batch:
                yield self.collate(batch)
                batch = []

    def samples(self, pieces: list[tuple[int, int, int]]) -> Iterator[dict]:
        """The raw samples of ``pieces`` in order; a short or damaged shard is an error."""
        for shard, start, stop in pieces:
            url = self.shards.url(shard)
            got = 0
            try:
                for sample in islice(tarfile_samples(iter([{"url": url}])), start, stop):
                    if "npy" not in sample or "json" not in sample:
                        raise DataError(f"sample {sample.get('__key__')} lacks npy or json")
                    got += 1
                    yield sample
            except DataError as err:
                raise DataError(f"shard {url} is corrupt: {err}") from None
            except Exception as err:  # tarfile, gopen, anything the reader raises
                said = [str(a) for a in err.args if isinstance(a, str) and a != url]
                message = " ".join(" ".join(said).split())[:160] or type(err).__name__
                raise DataError(
                    f"shard {url} is corrupt, unreadable or not found: {message}"
                ) from None
            if got != stop - start:
                raise DataError(
                    f"shard {url} is truncated: it ended after {start + got} clips, "
                    f"its manifest lists {self.shards.counts[shard]}"
                )

    def row(self, sample: dict) -> np.ndarray:
        """A clip's int16 samples: the bytes after the ``.npy`` header every clip of these
        shards has (parsed by ``np.load`` once, and for any other header)."""
        data = sample["npy"]
        header = self._npy_header
        if header and len(data) == self._npy_bytes and data.startswith(header):
            return np.frombuffer(data, dtype=np.int16, offset=len(header))
        row = np.load(io.BytesIO(data), allow_pickle=False)
        if row.dtype != np.int16 or row.shape != (self.shards.length,):
            raise DataError(
                f"shard {sample['__url__']} is corrupt: clip {sample['__key__']} is "
                f"{row.dtype} {row.shape}, not int16 ({self.shards.length},)"
            )
        self._npy_header, self._npy_bytes = data[: len(data) - row.nbytes], len(data)
        return row

    def collate(self, samples: list[dict]) -> tuple[Tensor, Tensor]:
        waves, index = [], []
        for sample in samples:
            try:
                record = json.loads(sample["json"])
                row = self.row(sample)
            except ValueError as err:
                raise DataError(f"shard {sample['__url__']} is corrupt: {err}") from None
            if zlib.crc32(row) != record.get("crc32"):
                raise DataError(
                    f"shard {sample['__url__']} is corrupt: clip {sample['__key__']} fails "
                    "its CRC-32 check"
                )
            waves.append(row.astype(np.float32) * np.float32(record["scale"] / FULL_SCALE))
            index.append(record["index"])
        return torch.from_numpy(np.stack(waves)), torch.tensor(index, dtype=torch.long)


class ShardLoader:
    """The training split streamed from shards, with :class:`harness.data.loader.Loader`'s
    interface (``len``, ``epoch(generator, skip, worker_seed)``, ``close``)."""

    def __init__(
        self, shards: ShardSet, audio: ClipAudio, batch_size: int, torch_device: torch.device,
        workers: int = 0, rank: int = 0, world: int = 1, buffer: int = 1000,
    ) -> None:  # fmt: skip
        if batch_size % world:
            raise UsageError(f"batch size {batch_size} does not split evenly over {world} ranks")
        batches = shards.clips // batch_size
        if batches == 0:
            raise UsageError(
                f"the shards of {shards.manifest_path} hold {shards.clips} clips, "
                f"fewer than one batch of {batch_size}"
            )
        self.torch_device = torch_device
        self.batches = batches
        self.audio = audio
        self.stream = ShardStream(shards, batches, batch_size // world, rank, buffer)
        self.workers = workers

    def __len__(self) -> int:
        return self.batches

    def close(self) -> None:
        """Nothing to stop: each pass's workers end with it."""

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]:
        """One pass: shard order and shuffle-buffer seed drawn from ``generator`` (in order,
        unshuffled without one); its first ``skip`` batches left out."""
        count = len(self.stream.shards.names)
        if generator is not None:
            order = torch.randperm(count, generator=generator).tolist()
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        else:
            order, seed = list(range(count)), None
        self.stream.plan = EpochPlan(order, seed, skip)
        workers = self.workers
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.torch_device.type == "cuda",
            prefetch_factor=PREFETCH_FACTOR if workers else None,
            worker_init_fn=ignore_job_signals if workers else None,
            generator=torch.Generator().manual_seed(worker_seed or 0),
        )
        device = self.torch_device
        try:
            targets = self.audio.targets
            for wave, index in loader:
                yield Batch(
                    wave=wave.to(device, non_blocking=True),
                    label=self.audio.labels[index].to(device, non_blocking=True),
                    device=self.audio.devices[index].to(device, non_blocking=True),
                    index=index.to(device, non_blocking=True),
                    target=None if targets is None else targets[index].to(device),
                )
        except DataError as err:
            raise DataError(worker_message(err)) from None
        except RuntimeError as err:
            if "DataLoader worker" not in str(err):
                raise
            first = str(err).strip().splitlines()[0]
            raise HarnessError(f"a data-loading worker process died: {first}") from None

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()
