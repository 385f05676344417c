"""Progress on stderr, silenced by ``HARNESS_PROGRESS=0``: tqdm bars on a terminal, plain
periodic lines (no carriage returns) when stderr is a file or a pipe."""

from __future__ import annotations

import os
import sys
import time
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


PLAIN_EVERY_S = 30.0
"""Seconds between two plain progress lines off a terminal."""


def progress_bar(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    if enabled() and not sys.stderr.isatty():
        return plain_progress(items, desc, total, PLAIN_EVERY_S)
    return iter(
        tqdm(
            items, desc=desc, total=total, disable=not enabled(), leave=False, mininterval=0.5, **kw
        )
    )


def plain_progress(items: Iterable[T], desc: str, total: int | None, every_s: float) -> Iterator[T]:
    """``items``, writing ``desc: done/total (percent), elapsed, ETA`` to stderr as a line at
    most every ``every_s`` seconds: readable in a log file, unlike a bar's carriage returns."""
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            sys.stderr.write(plain_line(desc, done, total, now - start) + "\n")
            sys.stderr.flush()


def plain_line(desc: str, done: int, total: int | None, elapsed_s: float) -> str:
    """``epoch 1/10: 20/50 (40 %), 12 s, ETA 18 s`` (without a total: count and time)."""
    if not total:
        return f"{desc}: {done}, {format_duration(elapsed_s)}"
    eta = elapsed_s / done * (total - done) if done else 0.0
    return (
        f"{desc}: {done}/{total} ({100 * done / total:.0f} %), {format_duration(elapsed_s)}, "
        f"ETA {format_duration(eta)}"
    )


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def note(message: str) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
