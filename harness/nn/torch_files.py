"""Reading a weights or checkpoint file the user names, with ``torch.load(weights_only=True)``.

Every option that names such a file (``backbone.checkpoint``, ``aug.dirgen.model``, a
``--resume`` folder's ``rank0.pt``) reads it through :func:`load_torch_file`, so each kind of
file that is not one gives the same one-line :class:`~harness.util.errors.DataError` naming
the file and what is wrong: a folder, an empty file, a file of another format (text, an
archive), a truncated torch file, or a pickle that holds code or classes beyond tensors and
plain containers (never executed: ``weights_only`` refuses it before anything runs). The
message never quotes the file's content.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from harness.util.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"
"""torch's format since 1.6: a zip archive."""
PICKLE_PROTOCOL_OPCODE = 0x80
"""The first byte of a pickle of protocol 2 or later (torch's legacy format)."""
_GLOBAL = re.compile(
    r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|Unsupported class) ([\w.]+)"
)


def load_torch_file(
    path: str | Path, what: str = "checkpoint", safe_globals: Sequence[type] = ()
) -> Any:
    """The object in ``path`` (``weights_only=True``), or one line saying why it is not a
    ``what`` file. ``safe_globals``: classes beyond tensors and containers to accept."""
    path = Path(path).expanduser()
    check_torch_file(path, what)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for the user
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler and the zip reader fail in many ways
        raise DataError(f"cannot read {what} {path}: it {load_failure(err)}") from None


def check_torch_file(path: Path, what: str) -> None:
    """Refuse, without loading it, a path that cannot be a torch file."""
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    problem = ""
    if path.is_dir():
        problem = "it is a folder, not a file"
    elif not path.is_file():
        problem = "it is not a regular file"
    else:
        try:
            with path.open("rb") as handle:
                head = handle.read(4)
        except OSError as err:
            raise DataError(f"cannot read {what} {path}: {err.strerror or err}") from None
        if not head:
            problem = "it is empty"
        elif head != ZIP_MAGIC and head[0] != PICKLE_PROTOCOL_OPCODE:
            problem = (
                "it is not a torch file (corrupt or truncated, or of another format: "
                "neither torch's zip format nor a pickle)"
            )
    if problem:
        raise DataError(f"cannot read {what} {path}: {problem}")


def load_failure(err: Exception) -> str:
    """Why a file with a torch file's first bytes did not load, as a phrase."""
    text = " ".join(str(err).split())
    if isinstance(err, EOFError) or "truncated" in text:
        return "is corrupt or truncated (it ends before its data does)"
    found = _GLOBAL.search(text)
    if found:
        return (
            f"holds pickled code or objects other than tensors ({found.group(1)}); refused, "
            "nothing in it was run (only weights are loaded)"
        )
    if isinstance(err, pickle.UnpicklingError) or "Weights only load" in text:
        return (
            "is corrupt or holds objects other than tensors; refused, nothing in it was run "
            "(only weights are loaded)"
        )
    return "is corrupt or truncated (it does not load as a torch file)"
