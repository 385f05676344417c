"""Messages naming a mistyped name together with the names that exist."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["unknown_name_message"]


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown KIND 'NAME'. Did you mean: ...? Available: ...`` (up to three close matches)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Available: {', '.join(known) or 'none'}"
