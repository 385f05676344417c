"""Writing a run's split as WebDataset shards (``harness shards write``): the clips the run
would read, at its backbone's sample rate and clip length, decoded once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from harness.data.shards import SplitLabels, write_shards
from harness.engine.distributed import Ranks
from harness.registry.config import RunConfig
from harness.run.components import RunLog, RunParts
from harness.util.errors import UsageError

WRITABLE_SPLITS = ("train", "valid", "eval")


def write_run_shards(
    cfg: RunConfig, split: str, out: Path, clips_per_shard: int, part: tuple[int, int] = (0, 1)
) -> dict | None:
    """Write ``split`` of the run ``cfg`` describes (its data set, held-out validation
    clips, backbone sample rate) into shards under ``out`` (only part ``k`` of ``n``, see
    :func:`harness.data.shards.write_shards`); returns the manifest once complete."""
    if clips_per_shard < 1:
        raise UsageError(f"bad value for --clips-per-shard: {clips_per_shard} (at least 1)")
    if split not in WRITABLE_SPLITS:
        raise UsageError(f"bad value for --split: {split!r} (one of {', '.join(WRITABLE_SPLITS)})")
    run = dataclasses.replace(cfg.run, data_source="raw")  # the shards are not there yet
    parts = RunParts(dataclasses.replace(cfg, run=run), Ranks(), torch.device("cpu"), RunLog(True))
    try:
        if not parts.splits.split(split):
            raise UsageError(f"data set '{cfg.dataset.name}' has no {split} clips")
        audio = parts.decoded(split)
        desc = f"{split} shards"
        splits = parts.splits
        labels = SplitLabels(
            split, tuple(splits.classes), tuple(splits.devices), splits.multi_label
        )
        return write_shards(audio, out, clips_per_shard, parts.workers, desc, part, labels)
    finally:
        parts.close()
