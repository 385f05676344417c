"""The harness cache folder and folders built once into it (generated data, embeddings).

For plugins too: a data set that generates files, or a protocol that caches
embeddings, builds its folder with :func:`build_once` under :func:`cache_root`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DONE_MARKER = ".done"


def cache_root() -> Path:
    """The harness cache folder: ``$HARNESS_CACHE`` or ``~/.cache/harness``."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """``folder`` complete with a done marker; ``build(tmp)`` fills a temporary folder first.

    The temporary folder is renamed into place only after ``build`` returned, so an
    interrupted build leaves nothing that a later call would mistake for finished work.
    """
    if (folder / DONE_MARKER).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
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
