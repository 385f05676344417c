"""Progress bars (tqdm on stderr), silenced by ``HARNESS_PROGRESS=0``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from harness.util.faults import KILL_ENV, checkpoint

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("HARNESS_PROGRESS", "1") not in ("0", "false", "no")


def progress(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    """Iterate ``items`` with a progress bar named ``desc``."""
    if os.environ.get(KILL_ENV):
        return _with_kill_hook(progress_bar(items, desc, total, **kw), desc)
    return progress_bar(items, desc, total, **kw)


def _with_kill_hook(items: Iterator[T], desc: str) -> Iterator[T]:
    for item in items:
        yield item
        checkpoint(desc)


def progress_bar(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    return iter(
        tqdm(
            items, desc=desc, total=total, disable=not enabled(), leave=False, mininterval=0.5, **kw
        )
    )


def note(message: str) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
