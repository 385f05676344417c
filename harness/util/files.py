"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.util.errors import HarnessError, UsageError, naming

__all__ = ["NAME_MAX", "check_free_space", "check_name_lengths", "write_text_atomic"]

NAME_MAX = 255
"""Longest file or folder name (in bytes) the common file systems accept."""
SPACE_MARGIN = 1 << 20
"""Bytes kept free beyond an estimate (logs, JSON files, SQLite's journal)."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path):
            tmp.write_text(text)
            os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written temporary file left behind
        tmp.unlink(missing_ok=True)
        raise


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_name_lengths(path: Path, what: str) -> None:
    """A UsageError when a component of ``path`` is longer than :data:`NAME_MAX` bytes."""
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UsageError(
                f"{what} {str(path)[:80]}...: the name {part[:40]}... is longer than "
                f"{NAME_MAX} bytes"
            )


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """A HarnessError when the file system of ``folder`` has less than ``needed`` bytes
    (plus :data:`SPACE_MARGIN`) free: found before the work, not half-way through it."""
    free = shutil.disk_usage(existing_ancestor(folder)).free
    if free < needed + SPACE_MARGIN:
        raise HarnessError(
            f"not enough free space for the {what} {folder}: about {mb(needed + SPACE_MARGIN)} "
            f"needed, {mb(free)} free"
        )


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
