"""Errors the command line reports as one line with exit code 2, and the message for an
unknown name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown <kind> '<name>'``, the close matches among ``known`` and all of them."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Available: {', '.join(known) or 'none'}"
