"""A run's parts along its data path, built from its configuration: the data set's splits
(with a held-out validation split) -> their audio and loaders -> augmentations -> the
backbone's front-end -> backbone -> method -> protocols. Also the run log every part
writes to."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from harness.api import (
    Augmentation,
    Backbone,
    Batch,
    Clip,
    DataSplits,
    Method,
    Protocol,
    RunSettings,
    Sampling,
    Task,
)
from harness.data.audio_cache import cache_folder, cached_audio, check_writable
from harness.data.loader import ClipAudio, Loader, resolve_workers, split_audio
from harness.data.shards import (
    ShardLoader,
    ShardSet,
    ShardWaves,
    check_against_split,
    read_manifest,
    shards_fingerprint,
)
from harness.engine import distributed
from harness.engine.batches import prepare_batch
from harness.registry.checkpoints import (
    LoadedCheckpoint,
    load_backbone_checkpoint,
    verify_backbone_checkpoint,
)
from harness.registry.config import RunConfig
from harness.run.preflight import check_clips_inside_root
from harness.run.shard_split import load_splits
from harness.util.errors import DataError, UsageError
from harness.util.progress import note


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad value for run.device: {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"run.device is {name!r} but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"run.device is {name!r} but this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"run.device is {name!r} but no MPS device is available")
    return device


def process_device(name: str, ranks: distributed.Ranks) -> torch.device:
    """``run.device`` for this process: under DDP on CUDA, the GPU of its local rank."""
    device = pick_device(name)
    if ranks.active and device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"process {ranks.local_rank} has no GPU ({torch.cuda.device_count()} present)"
            )
        device = torch.device("cuda", ranks.local_rank)
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse a precision the device cannot compute in."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise UsageError(f"run.precision is bf16 but the device {device} ({name}) has no bf16")


class RunLog:
    """The run's log lines (``log.txt``), printed by the main process as they come."""

    def __init__(self, is_main: bool) -> None:
        self.lines: list[str] = []
        self.is_main = is_main

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        if self.is_main:
            note(message)


class RunParts:
    """The built components of one run and the data they see, in data-path order."""

    def __init__(
        self, cfg: RunConfig, ranks: distributed.Ranks, device: torch.device, log: RunLog
    ) -> None:
        self.cfg, self.ranks, self.device, self.log = cfg, ranks, device, log
        self.workers = resolve_workers(cfg.run.workers, ranks.world)
        cache = cache_folder(cfg.run.audio_cache)
        if cache is not None:
            check_writable(cache)
        distributed.init(ranks, device)
        self.backbone: Backbone = cfg.backbone.build()
        self.checkpoint: LoadedCheckpoint | None = None
        """The backbone's checkpoint, read and checked before any data is touched."""
        if self.backbone.checkpoint_source():
            self.checkpoint = verify_backbone_checkpoint(
                self.backbone, self.backbone.checkpoint_source()
            )
        self.method: Method = cfg.method.build()
        self.augs: list[Augmentation] = [a.build() for a in cfg.augs]
        for aug in self.augs:
            aug.load_files()  # weights and banks it reads: a bad file stops the run here
        self.protocols: list[Protocol] = [p.build() for p in cfg.protocols]
        for protocol in self.protocols:
            if protocol.needs_classifier and not self.method.supervised:
                raise UsageError(
                    f"protocol '{protocol.name}' needs a classifier, "
                    f"but method '{self.method.name}' trains none"
                )
        self.shards: ShardSet | None = training_shards(cfg.run)
        """The training split's shards (``run.data_source=shards``)."""
        with distributed.main_first():  # a data set generated on first use: rank 0 writes it
            splits, from_manifest = load_splits(cfg.dataset.build(), self.shards, cfg.run)
        self.splits: DataSplits = splits
        self.train_from_manifest = from_manifest
        """Whether the training split is the shards' manifest's (its files not on the node)."""
        check_label_kinds(cfg.dataset.name, self.splits, self.method, self.protocols)
        check_clips_inside_root(
            self.splits,
            cfg.dataset.name,
            cfg.run.data_outside_root,
            skip=("train",) if self.train_from_manifest else (),
        )
        for protocol in self.protocols:
            protocol.check(self.splits, self.method)
        self.has_valid = validation_split(cfg, self.splits, self.method)
        """Whether the run validates after every epoch."""
        if self.method.supervised:
            missing = classes_without_training_clips(self.splits)
            if missing:
                log(
                    f"WARNING: {len(missing)} of {len(self.splits.classes)} classes have no "
                    f"training clip (the classifier never sees them): {', '.join(missing[:10])}"
                )
        self.task = Task(
            self.splits.classes,
            self.splits.devices,
            self.backbone.sample_rate,
            self.backbone.time_axis,
        )
        self.frontend: torch.nn.Module | None = None
        """The backbone's front-end on the device (after :meth:`setup`)."""
        self._audio: dict[str, ClipAudio] = {}
        self._loaders: dict[tuple, Loader | ShardLoader] = {}
        if self.shards is not None:
            train = self.decoded("train")
            check_against_split(self.shards, train.clips, train.sample_rate, train.source.length)

    # -- data -----------------------------------------------------------------

    def decoded(self, split: str) -> ClipAudio:
        """The split's clips, decoded from their files on each read."""
        seconds = self.splits.clip_seconds
        if split in ("train", "valid") and self.splits.train_clip_seconds:
            seconds = self.splits.train_clip_seconds
        try:
            multi = len(self.splits.classes) if self.splits.multi_label else 0
            return split_audio(
                self.splits.split(split),
                self.backbone.sample_rate,
                seconds,
                self.splits.devices,
                multi,
            )
        except DataError as err:
            raise DataError(f"{split} split: {err}") from None

    def audio(self, split: str) -> ClipAudio:
        """The split's waveforms at the backbone's sample rate (read once, cached).

        With ``run.data_source=raw`` the clips are decoded from their files. The training
        split of a shards run is read by position from its shards (shards streamed from
        URLs are fetched into the cache once per node as their clips are first read: the
        health probe's few, or all of them for a protocol reading the whole split), never
        from its files; its other splits come from the cache."""
        if split not in self._audio:
            audio = self.decoded(split)
            source = self.cfg.run.data_source
            if split == "train" and self.shards is not None:
                audio = dataclasses.replace(audio, wave=ShardWaves(self.shards))
            elif source == "cache" or (source == "shards" and split != "train"):
                with distributed.main_first():
                    audio = cached_audio(
                        audio, self.cfg.run.audio_cache, self.workers, desc=f"{split} audio"
                    )
            self._audio[split] = audio
        return self._audio[split]

    def file_free_splits(self) -> dict[str, str]:
        """Splits read without their clips' files, with the key caches use for them instead
        of the files' stats: the training split of a shards run."""
        if self.shards is None:
            return {}
        return {"train": shards_fingerprint(self.shards)}

    def train_origin(self) -> dict[str, str]:
        """For the run record: where a shards run's training split was listed from."""
        if self.shards is None:
            return {}
        return {"train_split": "shards manifest" if self.train_from_manifest else "files"}

    def loader(self, split: str, batch_size: int, train: bool) -> Loader | ShardLoader:
        """The split's DataLoader (kept with its workers); under DDP this rank's share.
        The training split streams from shards with ``run.data_source=shards``."""
        key = (split, batch_size, train)
        if key not in self._loaders:
            ranks = self.ranks
            if train and batch_size % ranks.world:
                raise UsageError(
                    f"batch size {batch_size} does not split evenly over {ranks.world} processes"
                )
            if train and split == "train" and self.shards is not None:
                self._loaders[key] = ShardLoader(
                    self.shards,
                    self.audio("train"),
                    batch_size,
                    self.device,
                    workers=self.workers,
                    rank=ranks.rank,
                    world=ranks.world,
                    buffer=self.cfg.run.shuffle_buffer,
                )
                return self._loaders[key]
            self._loaders[key] = Loader(
                self.audio(split),
                batch_size,
                self.device,
                drop_last=train,
                workers=self.workers,
                rank=ranks.rank,
                world=ranks.world,
                sampling=self.sampling() if train and split == "train" else None,
            )
        return self._loaders[key]

    def sampling(self) -> Sampling:
        """How the method's training draws each epoch (``run.sampler``)."""
        run = self.cfg.run
        return Sampling(run.sampler, run.samples_per_epoch, run.sampler_replacement)

    # -- augmentations, front-end, backbone, method ---------------------------

    def setup(self) -> None:
        """Load the backbone's checkpoint, put everything on the device, set up the
        augmentations for the task and the method's heads for the backbone."""
        checkpoint = self.backbone.checkpoint_source()
        if checkpoint:
            report = load_backbone_checkpoint(
                self.backbone, checkpoint, self.task.num_classes, self.checkpoint
            )
            for line in report.notes:
                self.log(line)
        self.frontend = self.backbone.frontend().to(self.device)
        self.backbone.to(self.device)
        for aug in self.augs:
            aug.setup(self.task)
            aug.to(self.device)
        self.method.setup(self.backbone, self.task)
        self.method.to(self.device)
        if self.cfg.run.compile:
            self.backbone.compile()

    def prepare(self, batch: Batch, train: bool) -> Batch:
        """A loaded batch as the method's input (see :func:`prepare_batch`)."""
        return prepare_batch(batch, self.frontend, self.augs, train)

    def close(self) -> None:
        """Stop the loaders' worker processes."""
        for loader in self._loaders.values():
            loader.close()
        self._loaders.clear()


def training_shards(run: RunSettings) -> ShardSet | None:
    """``run.shards`` read (shards runs only): its manifest and that every local shard is
    there with its size."""
    if run.data_source != "shards":
        return None
    if not run.shards:
        raise UsageError("run.data_source=shards needs run.shards (a shard folder)")
    if run.sampler != "uniform":
        raise UsageError(
            f"run.sampler={run.sampler} cannot draw from streamed shards (run.data_source="
            "shards reads each shard in sequence); use run.data_source=cache or raw"
        )
    return read_manifest(run.shards, run.shards_url)


def check_label_kinds(
    dataset: str, splits: DataSplits, method: Method, protocols: list[Protocol]
) -> None:
    """Refuse, before training, a multi-label data set given to a single-label method or
    protocol, and a single-label data set given to a multi-label protocol."""
    kind = "multi" if splits.multi_label else "single"
    if splits.multi_label and method.supervised:
        raise UsageError(
            f"data set '{dataset}' is multi-label (label sets), but method '{method.name}' "
            "trains a single-label classifier; use an unsupervised method (e.g. mae)"
        )
    for protocol in protocols:
        if protocol.label_kind not in (kind, "either"):
            raise UsageError(
                f"data set '{dataset}' is {kind}-label, but protocol '{protocol.name}' "
                f"evaluates {protocol.label_kind}-label data"
            )


def validation_split(cfg: RunConfig, splits: DataSplits, method: Method) -> bool:
    """Hold out ``run.valid_fraction`` of the training clips (unless the data set has a
    validation split); whether this run validates after every epoch."""
    run = cfg.run
    if run.valid_fraction > 0 and not splits.valid:
        check_valid_group(splits.train, run.valid_group)
        splits.train, splits.valid = hold_out(
            splits.train, run.valid_fraction, run.valid_group, run.seed
        )
    has_valid = bool(splits.valid)
    if run.select == "best" and not has_valid:
        raise UsageError(
            "run.select=best needs a validation split: set run.valid_fraction "
            f"(data set '{cfg.dataset.name}' has none of its own)"
        )
    wanted = run.select == "best" or run.valid_fraction > 0
    if has_valid and not method.supervised:
        if wanted:
            raise UsageError(
                f"validation needs class scores, but method '{method.name}' trains no "
                "classifier (leave run.valid_fraction at 0 and run.select=last)"
            )
        return False
    return has_valid


def check_valid_group(clips: list[Clip], key: str) -> None:
    """``run.valid_group`` must name metadata some training clip has: a misspelled key
    would silently hold out single clips instead of whole groups."""
    if not any(key in clip.meta for clip in clips):
        known = sorted({k for clip in clips for k in clip.meta})
        message = f"run.valid_group={key!r}: no training clip has this metadata"
        if key == RunSettings.valid_group:  # the default: the data set has no such groups
            note(f"WARNING: {message}; each clip is its own group")
            return
        raise UsageError(f"{message} (clips have: {', '.join(known) or 'no metadata'})")


def classes_without_training_clips(splits: DataSplits) -> list[str]:
    """Names of the classes no labeled training clip has (none when training is unlabeled)."""
    labels = {clip.label for clip in splits.train if clip.label >= 0}
    if not labels:
        return []
    return [name for i, name in enumerate(splits.classes) if i not in labels]


def hold_out(
    clips: list[Clip], fraction: float, key: str, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """``(train, valid)``: whole groups of clips (equal ``meta[key]``; a clip without it is
    its own group), drawn in a seeded order until ``fraction`` of the clips are held out."""
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault(clip.meta.get(key) or f"clip {i}", []).append(i)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    held: list[int] = []
    for name in names:
        if len(held) >= fraction * len(clips):
            break
        held += groups[name]
    if not held or len(held) == len(clips):
        raise DataError(
            f"run.valid_fraction={fraction} leaves no training or no validation clips "
            f"({len(groups)} groups by clip metadata '{key}')"
        )
    chosen = set(held)
    return [c for i, c in enumerate(clips) if i not in chosen], [clips[i] for i in sorted(held)]
