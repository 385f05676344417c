"""The on-disk embedding cache of a run's frozen backbone and the fingerprint it is keyed by.

Embeddings are cached on disk (``$HARNESS_CACHE/embeddings/<key>``, with a done marker),
keyed by a hash of the backbone's weights and configuration and of the clip list, so a
rerun with the same encoder and data skips the encoder; an entry that cannot be read is
discarded with a warning and rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from harness.api import Backbone, Clip, DataSplits
from harness.util.cache import (
    DONE_MARKER,
    CacheDamaged,
    build_once,
    cache_root,
    discard,
    verify_built,
)
from harness.util.errors import DataError


@dataclass
class Embedder:
    """What the embedding cache needs: the splits, the backbone, and what computes the
    embeddings ``[N, D]`` of a split; :meth:`cached` is ``EvalContext.embed``."""

    splits: DataSplits
    backbone: Backbone
    embed: Callable[[str], Tensor]
    fingerprint: str | None = None
    """The backbone's :func:`backbone_fingerprint` (taken on first use)."""
    split_keys: dict[str, str] = field(default_factory=dict)
    """Keys of splits whose clips are read from elsewhere than their files (the training
    split of a shards run: its shards' fingerprint), used instead of the files' stats."""

    def cached(self, split: str, cache: bool = True) -> Tensor:
        """The split's embeddings through the on-disk cache (``cache=False``: computed)."""
        if not cache:
            return self.embed(split)
        if self.fingerprint is None:
            self.fingerprint = backbone_fingerprint(self.backbone)
        return cached_embed(self, split, self.fingerprint)


def backbone_fingerprint(backbone: Backbone) -> str:
    """A hash of the backbone's class, configuration and every tensor of its state dict."""
    digest = hashlib.blake2b(digest_size=16)
    cls = type(backbone)
    digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    config = backbone.config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    else:
        digest.update(repr(config).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def clips_fingerprint(clips: Sequence[Clip]) -> str:
    """A hash of the clip files (path, size, modification time) in order."""
    digest = hashlib.blake2b(digest_size=16)
    for clip in clips:
        for path in clip.segments or (clip.path,):
            try:
                stat = Path(path).stat()
            except OSError:
                raise DataError(f"audio file not found: {path}") from None
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def split_seconds(ctx: Embedder, split: str) -> float:
    if split == "train" and ctx.splits.train_clip_seconds:
        return ctx.splits.train_clip_seconds
    return ctx.splits.clip_seconds


def embedding_cache_dir(ctx: Embedder, split: str, backbone_hash: str) -> Path:
    clips = ctx.splits.split(split)
    digest = hashlib.blake2b(digest_size=16)
    parts = (
        backbone_hash,
        ctx.split_keys.get(split) or clips_fingerprint(clips),
        ctx.backbone.sample_rate,
        split_seconds(ctx, split),
    )
    digest.update(json.dumps([str(p) for p in parts]).encode())
    return cache_root() / "embeddings" / digest.hexdigest()


def cached_embed(ctx: Embedder, split: str, backbone_hash: str | None = None) -> Tensor:
    """``ctx.embed(split)``, read from or written to the on-disk embedding cache."""
    backbone_hash = backbone_hash or backbone_fingerprint(ctx.backbone)
    folder = embedding_cache_dir(ctx, split, backbone_hash)
    count = len(ctx.splits.split(split))
    if (folder / DONE_MARKER).is_file():
        stored = read_verified(folder)
        if stored is not None:
            expected = (count, recorded_dim(folder))
            if tuple(stored.shape) == expected:
                return stored
            warnings.warn(
                f"discarding embedding cache entry {folder}: shape {tuple(stored.shape)}, "
                f"expected {expected} (clips, info.json's dim); rebuilding it",
                stacklevel=2,
            )
    embeddings = ctx.embed(split)

    def write(tmp: Path) -> None:
        torch.save(embeddings.detach().cpu().contiguous(), tmp / "embeddings.pt")
        info = {
            "split": split,
            "clips": count,
            "dim": int(embeddings.shape[1]),
            "backbone": ctx.backbone.name or type(ctx.backbone).__name__,
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")

    discard(folder)  # unfinished, damaged, or written for another clip count
    try:
        build_once(folder, write)
    except (OSError, RuntimeError, pickle.PicklingError) as err:  # torch.save: RuntimeError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"could not cache embeddings in {folder}: {reason}", stacklevel=2)
    return embeddings


def recorded_dim(folder: Path) -> int | None:
    """The embedding width ``info.json`` of a verified entry records (None if it does not)."""
    try:
        dim = json.loads((folder / "info.json").read_text()).get("dim")
    except (OSError, ValueError, AttributeError):
        return None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def read_verified(folder: Path) -> Tensor | None:
    """The entry's embeddings when its files match their sizes and checksums, else None
    (with one warning)."""
    try:
        verify_built(folder)
    except CacheDamaged as damage:
        warnings.warn(
            f"discarding embedding cache entry {folder} ({damage}); rebuilding it", stacklevel=3
        )
        return None
    return read_cached_embeddings(folder / "embeddings.pt")


def read_cached_embeddings(path: Path) -> Tensor | None:
    """A cached embedding matrix, or None (with a warning) when the entry cannot be used."""
    try:
        stored = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # any unreadable file: pickle, zip, EOF and OS errors alike
        warnings.warn(
            f"discarding unreadable embedding cache entry {path} ({type(err).__name__}); "
            "rebuilding it",
            stacklevel=3,
        )
        return None
    if not isinstance(stored, Tensor) or not stored.is_floating_point():
        warnings.warn(
            f"discarding embedding cache entry {path}: not a float tensor; rebuilding it",
            stacklevel=3,
        )
        return None
    if not torch.isfinite(stored).all():
        warnings.warn(
            f"discarding embedding cache entry {path}: non-finite values; rebuilding it",
            stacklevel=3,
        )
        return None
    return stored
