"""Errors the command line reports as one line with exit code 2."""

from __future__ import annotations


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
