"""Progress bars (tqdm on stderr), silenced by ``HARNESS_PROGRESS=0``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("HARNESS_PROGRESS", "1") not in ("0", "false", "no")


def progress(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    """Iterate ``items`` with a progress bar named ``desc``."""
    return iter(
        tqdm(
            items, desc=desc, total=total, disable=not enabled(), leave=False, mininterval=0.5, **kw
        )
    )


def note(message: str) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
