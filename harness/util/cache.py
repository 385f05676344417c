"""The harness cache folder and folders built once into it (generated data, embeddings).

For plugins too: a data set that generates files, or a protocol that caches
embeddings, builds its folder with :func:`build_once` under :func:`cache_root`.

Temporary folders are named ``.<name>.<host>~<pid>~<start>.<random>`` by
:func:`owned_temp_dir`, so that a later process can tell those of dead processes
(:func:`stale_temp_dirs`) from those of running ones and remove them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.util.faults import checkpoint

DONE_MARKER = ".done"
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


def clean_stale_cache() -> list[Path]:
    """Remove temporary folders that dead processes left in the cache (e.g. killed generation)."""
    stale = stale_temp_dirs([cache_root()], depth=3)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder`` complete with a done marker; ``build(tmp)`` fills a temporary folder first.

    The temporary folder is renamed into place only after ``build`` returned, so an
    interrupted build leaves nothing that a later call would mistake for finished work
    (and a killed build's folder is removed by the next :func:`clean_stale_cache`).
    """
    for stale in stale_temp_dirs([folder.parent]):
        if temp_owner(stale)[0] == folder.name:  # type: ignore[index]
            shutil.rmtree(stale, ignore_errors=True)
    if (folder / DONE_MARKER).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    tmp = owned_temp_dir(folder.parent, folder.name)
    try:
        build(tmp)
        checkpoint("generate")
        (tmp / DONE_MARKER).write_text("done\n")
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
