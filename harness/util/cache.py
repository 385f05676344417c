"""The harness cache folder and folders built once into it (generated data, embeddings).

For plugins too: a data set that generates files, or a protocol that caches
embeddings, builds its folder with :func:`build_once` under :func:`cache_root`.

Temporary folders are named ``.<name>.<host>~<pid>~<start>.<random>`` by
:func:`owned_temp_dir`, so that a later process can tell those of dead processes
(:func:`stale_temp_dirs`) from those of running ones and remove them.

A built folder is verified, not trusted: its done marker lists every file with its size
and a checksum (:func:`file_digest`), written at build time and checked on every later
:func:`build_once` (every size; every checksum up to :data:`CHECKSUM_ALL_UP_TO` files, else
a random sample). A missing, resized, altered or replaced file (e.g. by a folder) makes
the folder stale: it is discarded with one warning and built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import socket
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.util.errors import naming
from harness.util.faults import checkpoint

DONE_MARKER = ".done"
FULL_DIGEST_BYTES = 1 << 20
"""Files up to this size are hashed whole; larger ones through :data:`DIGEST_BLOCKS` blocks."""
DIGEST_BLOCKS = 64
DIGEST_BLOCK_BYTES = 16 << 10
CHECKSUM_ALL_UP_TO = 256
"""Folders with at most this many files have every checksum verified at each open; larger
ones (generated data sets of thousands of clips) every size, and :data:`CHECKSUM_SAMPLE`
checksums drawn at random (so a full check of 20,000 files, ~15 s, is not paid per run)."""
CHECKSUM_SAMPLE = 64
LEGACY_MARKER = "done\n"
"""The done marker of folders built before markers listed their files (trusted as before)."""


class CacheDamaged(Exception):
    """A built cache folder whose contents no longer match what was built (the reason)."""


OWNER = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.~]+)~(?P<pid>\d+)~(?P<start>\d+)\.[^.]+$")


def cache_root() -> Path:
    """The harness cache folder: ``$HARNESS_CACHE`` or ``~/.cache/harness``."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def host_name() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def process_start(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 where /proc is absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag() -> str:
    pid = os.getpid()
    return f"{host_name()}~{pid}~{process_start(pid)}"


def owner_alive(host: str, pid: int, start: int) -> bool:
    """Whether the process that made a folder may still run (another host's: assumed so)."""
    if host != host_name():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or process_start(pid) in (0, start)


def owned_temp_dir(parent: Path, name: str) -> Path:
    """A new hidden temporary folder in ``parent`` that names this process as its owner."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{owner_tag()}.", dir=parent))


def temp_owner(path: Path) -> tuple[str, str, int, int] | None:
    """``(name, host, pid, start)`` of a folder made by :func:`owned_temp_dir`, else None."""
    match = OWNER.match(path.name)
    if not match:
        return None
    return match["name"], match["host"], int(match["pid"]), int(match["start"])


def stale_temp_dirs(parents: Iterable[Path], depth: int = 1) -> list[Path]:
    """Temporary folders of dead processes in ``parents`` (and ``depth - 1`` levels below)."""
    found: list[Path] = []
    for parent in parents:
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            owner = temp_owner(path)
            if owner is not None:
                if not owner_alive(*owner[1:]):
                    found.append(path)
            elif depth > 1 and not entry.name.startswith(".") and not (path / DONE_MARKER).exists():
                found += stale_temp_dirs([path], depth - 1)
    return found


def stale_temp_files(parent: Path, name: str) -> list[Path]:
    """Temporary files of dead processes named ``.<name>.<owner>.<random>`` in ``parent``
    (e.g. a download killed half-way)."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    found = []
    for entry in entries:
        owner = temp_owner(Path(entry.path))
        if (
            owner is not None
            and owner[0] == name
            and entry.is_file(follow_symlinks=False)
            and not owner_alive(*owner[1:])
        ):
            found.append(Path(entry.path))
    return found


def clean_stale_cache() -> list[Path]:
    """Remove temporary folders that dead processes left in the cache (e.g. killed generation)."""
    stale = stale_temp_dirs([cache_root()], depth=3)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def file_digest(path: Path, size: int) -> str:
    """BLAKE2b of a file's size and content: whole up to :data:`FULL_DIGEST_BYTES`, else
    :data:`DIGEST_BLOCKS` evenly spaced blocks (first and last included): about 1 MiB read
    per file however large, so verifying a multi-GB audio cache at every open stays cheap."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as handle:
        if size <= FULL_DIGEST_BYTES:
            digest.update(handle.read())
        else:
            last = size - DIGEST_BLOCK_BYTES
            for i in range(DIGEST_BLOCKS):
                handle.seek(last * i // (DIGEST_BLOCKS - 1))
                digest.update(handle.read(DIGEST_BLOCK_BYTES))
    return digest.hexdigest()


def manifest(folder: Path) -> dict[str, list]:
    """``{relative path: [size, digest]}`` of every file under ``folder`` but the marker."""
    files: dict[str, list] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != DONE_MARKER:
            size = path.stat().st_size
            files[path.relative_to(folder).as_posix()] = [size, file_digest(path, size)]
    return files


def write_done_marker(folder: Path) -> None:
    """The done marker, listing every file's size and checksum."""
    text = json.dumps({"files": manifest(folder)}, separators=(",", ":"))
    (folder / DONE_MARKER).write_text(text + "\n")


def verify_built(folder: Path) -> None:
    """Raise :class:`CacheDamaged` unless every file the done marker lists is there, a
    regular file, of its size and checksum (a legacy ``done`` marker is trusted)."""
    try:
        text = (folder / DONE_MARKER).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CacheDamaged(f"done marker unreadable ({type(err).__name__})") from None
    if text == LEGACY_MARKER:
        return
    try:
        files = json.loads(text)["files"]
        listed = [(str(name), int(size), str(digest)) for name, (size, digest) in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CacheDamaged("done marker is garbled") from None
    for name, size, _ in listed:
        try:
            info = (folder / name).stat()
        except OSError:
            raise CacheDamaged(f"{name} is missing") from None
        if not stat.S_ISREG(info.st_mode):
            raise CacheDamaged(f"{name} is not a regular file")
        if info.st_size != size:
            raise CacheDamaged(f"{name} has {info.st_size} bytes, {size} were written")
    if len(listed) > CHECKSUM_ALL_UP_TO:  # a private generator: the run's RNG stays as it was
        listed = random.Random(os.urandom(8)).sample(listed, CHECKSUM_SAMPLE)
    for name, size, digest in listed:
        try:
            actual = file_digest(folder / name, size)
        except OSError as err:
            raise CacheDamaged(f"{name} is unreadable ({err.strerror})") from None
        if actual != digest:
            raise CacheDamaged(f"{name} does not match its checksum")


def discard(folder: Path) -> None:
    """Remove a built folder: renamed to a temporary name first, so a reader never sees it
    half-deleted and a kill leaves a stale temporary folder the next run removes."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink(missing_ok=True)
        return
    doomed = owned_temp_dir(folder.parent, folder.name)
    with contextlib.suppress(FileNotFoundError):  # another process discarded it first
        os.replace(folder, doomed / "old")
    checkpoint("discard")
    shutil.rmtree(doomed, ignore_errors=True)


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder`` complete with a done marker; ``build(tmp)`` fills a temporary folder first.

    The temporary folder is renamed into place only after ``build`` returned, so an
    interrupted build leaves nothing that a later call would mistake for finished work
    (and a killed build's folder is removed by the next :func:`clean_stale_cache`). A
    finished folder is verified against its done marker first (:func:`verify_built`); a
    damaged one is discarded with one warning and built again.
    """
    for stale in stale_temp_dirs([folder.parent]):
        if temp_owner(stale)[0] == folder.name:  # type: ignore[index]
            shutil.rmtree(stale, ignore_errors=True)
    if (folder / DONE_MARKER).is_file():
        try:
            verify_built(folder)
            return folder
        except CacheDamaged as damage:
            warnings.warn(f"cache {folder} is damaged ({damage}); rebuilding it", stacklevel=2)
    if folder.exists() or folder.is_symlink():
        discard(folder)
    tmp = owned_temp_dir(folder.parent, folder.name)
    try:
        with naming(folder):
            build(tmp)
            checkpoint("generate")
            write_done_marker(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / DONE_MARKER).is_file():
            raise
    return folder
