"""Errors the command line reports as one line with exit code 2."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class HarnessError(Exception):
    """A problem with the user's input, files or plugins (not a bug in the harness)."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: a value quoted in the message may itself hold line breaks.
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class UsageError(HarnessError):
    """An unknown name, key or value given on the command line or in a config file."""


class DataError(HarnessError):
    """A data set, audio file or impulse-response file that cannot be used."""


class Interrupted(HarnessError):
    """The user interrupted a command (Ctrl-C); the message says what was kept."""

    exit_code = 130


STORAGE_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EFBIG,  # file too large (a file size limit)
        errno.EROFS,  # read-only file system
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
    )
)
"""``OSError`` codes that describe the user's storage (full, read-only, not theirs), not a
bug: reported as one line like a :class:`HarnessError`."""


@contextmanager
def naming(path: object) -> Iterator[None]:
    """Name ``path`` in a storage ``OSError`` raised inside the block without a file name
    (``write`` and ``close`` on a full disk raise ``ENOSPC`` without one)."""
    try:
        yield
    except OSError as err:
        if err.errno in STORAGE_ERRNOS and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def storage_error(err: BaseException) -> HarnessError | None:
    """A one-line :class:`HarnessError` for a full, read-only or forbidden file system (an
    ``OSError`` with a :data:`STORAGE_ERRNOS` code, or SQLite's "disk is full"), else None."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = err.filename if err.filename is not None else "a file"
        reason = err.strerror or os.strerror(err.errno)
        verb = "access" if err.errno in (errno.EACCES, errno.EPERM) else "write"
        return HarnessError(f"cannot {verb} {where}: {reason}")
    if isinstance(err, sqlite3.OperationalError) and _SQLITE_STORAGE.search(str(err)):
        return HarnessError(f"the results store cannot be written: {err}")
    return None


_SQLITE_STORAGE = re.compile(r"disk is full|disk I/O error|readonly database|read-only")
