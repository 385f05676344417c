"""The splits of a shards run (``run.data_source=shards``).

Where the training split's files are on the node, the data set lists every split and the
shards' manifest is checked against its training split. Where they are not, the data set
lists its other splits (:meth:`harness.api.Dataset.load_without_train`) and the training
split is the manifest's clip list: its files are never listed, checked or opened.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.api import Clip, Dataset, DataSplits, RunSettings
from harness.data.audio_cache import clip_files
from harness.data.shards import ShardSet, manifest_clips
from harness.util.errors import DataError, UsageError


def files_present(clips: Iterable[Clip]) -> bool:
    """Whether every file of ``clips`` is on this node (stops at the first missing one)."""
    return all(Path(path).is_file() for clip in clips for path in clip_files(clip))


def load_splits(
    dataset: Dataset, shards: ShardSet | None, run: RunSettings
) -> tuple[DataSplits, bool]:
    """The run's splits, and whether the training split came from the shards' manifest."""
    if shards is None:
        return dataset.load(), False
    if not shards.clip_file:
        return load_for_older_manifest(dataset, shards), False
    clips = manifest_clips(shards)
    if files_present(clips):
        return dataset.load(), False
    splits = dataset.load_without_train()
    refuse_without_files(shards, run, splits)
    return with_manifest_train(splits, shards, clips, dataset.name), True


def load_for_older_manifest(dataset: Dataset, shards: ShardSet) -> DataSplits:
    """The data set's splits for a manifest without a clip list (the training files needed)."""
    try:
        return dataset.load()
    except DataError as err:
        raise DataError(
            f"{err} (shard manifest {shards.manifest_path} lists no clips: written by an older "
            "harness, it needs the training files on this node; write the shards again with "
            "harness shards write)"
        ) from None


def refuse_without_files(shards: ShardSet, run: RunSettings, splits: DataSplits) -> None:
    """What a run cannot do without the training files: hold validation clips out of them
    (shards streamed from URLs are fine: reads by position fetch their shards)."""
    if run.valid_fraction > 0 and not splits.valid:
        raise UsageError(
            f"run.valid_fraction={run.valid_fraction} holds validation clips out of the "
            "training files, which are not on this node (the training split comes from "
            f"{shards.manifest_path}): set run.valid_fraction=0 or put the training files there"
        )


def with_manifest_train(
    splits: DataSplits, shards: ShardSet, clips: list[Clip], dataset: str
) -> DataSplits:
    """``splits`` with the manifest's training split, its devices and clip length, once the
    manifest is checked to come from this data set's training split."""
    labels = shards.labels
    where = f"shard manifest {shards.manifest_path}"
    if labels is None or labels.split != "train":
        split = labels.split if labels else "an unknown"
        raise UsageError(f"{where} holds the {split} split, not a training split")
    if list(labels.classes) != splits.classes or labels.multi_label != splits.multi_label:
        raise UsageError(
            f"{where} was written for other classes ({len(labels.classes)}, "
            f"{'multi' if labels.multi_label else 'single'}-label) than data set '{dataset}' "
            f"has ({len(splits.classes)}); write the shards with the run's data settings"
        )
    devices = list(labels.devices)
    splits.devices = devices + [d for d in splits.devices if d not in devices]
    splits.train = clips
    if shards.clip_seconds and shards.clip_seconds != splits.clip_seconds:
        splits.train_clip_seconds = shards.clip_seconds
    return splits
