"""Pure state-dict helpers for backbones reading published checkpoints: counting numbered
blocks, refusing a checkpoint of another model size, renaming key prefixes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from harness.util.errors import DataError


def block_count(state: Mapping[str, Tensor], prefix: str = "blocks.") -> int:
    """Number of numbered sub-modules under ``prefix`` (``blocks.0.`` ... ``blocks.11.``)."""
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def check_size(
    backbone: str, chosen: str, found: tuple[int, int], sizes: Mapping[str, tuple[int, int]]
) -> None:
    """Refuse a checkpoint of another size with one line naming the size that fits.

    ``found`` and the values of ``sizes`` are ``(embedding dims, blocks)``.
    """
    ours = sizes[chosen]
    if found == ours:
        return
    fits = [name for name, shape in sizes.items() if shape == found]
    hint = f"; set backbone.size={fits[0]}" if fits else f"; no {backbone} size has this shape"
    raise DataError(
        f"checkpoint holds a {backbone} encoder with {found[0]} dims and {found[1]} blocks, "
        f"backbone size '{chosen}' has {ours[0]} and {ours[1]}{hint}"
    )


def swap_prefix(key: str, prefixes: Sequence[tuple[str, str]], reverse: bool = False) -> str:
    """``key`` with its first matching prefix replaced: ``(ours, theirs)`` pairs map ours to
    theirs, or theirs to ours with ``reverse`` (published checkpoint layouts)."""
    for ours, theirs in prefixes:
        old, new = (theirs, ours) if reverse else (ours, theirs)
        if key.startswith(old):
            return new + key[len(old) :]
    return key
