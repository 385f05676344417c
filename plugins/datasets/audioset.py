"""AudioSet: multi-label clips from the published segment lists (or AudioMAE's JSON).

Layout (the published files, as downloaded from research.google.com/audioset)::

    ROOT/class_labels_indices.csv
    ROOT/balanced_train_segments.csv    AudioSet-20K (train_list default)
    ROOT/unbalanced_train_segments.csv  with the balanced list: AudioSet-2M
    ROOT/eval_segments.csv
    ROOT/audio/...                      the clips you downloaded, any folder structure:
                                        <ytid>.wav, Y<ytid>.wav or <ytid>_<start>.wav

Each clip carries its label set (``Clip.labels``, indices into the class index); batches
carry a multi-hot target. A list may also be AudioMAE's JSON (``.json``: ``wav`` paths and
``labels`` ids). Every AudioSet mirror misses some videos: listed clips without an audio
file are left out and counted in one line; above ``max_missing`` (a share) it is an error.

``train_json`` (legacy): AudioMAE's JSON as a pool of unlabeled tuning audio (label -1,
the ids kept in ``Clip.meta["labels"]``), no class index needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import Dataset, DataSplits, Domain, domain_map
from harness_plugins.datasets._audioset_layout import Layout, load_layout
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_positive,
    read_audioset_json,
)


class AudioSet(Dataset):
    name = "audioset"
    root_fields = ("root",)
    description = (
        "AudioSet from the published segment CSVs (or AudioMAE's JSON): multi-label clips, "
        "527 classes; or AudioMAE's JSON as unlabeled tuning audio (train_json)."
    )

    @dataclass
    class Config:
        root: Path = Path("data/audioset")
        train_list: str = "balanced_train_segments.csv"
        """Segment CSVs or AudioMAE JSONs of the train split, relative to ``root``, comma
        separated (AudioSet-2M: ``balanced_train_segments.csv,unbalanced_train_segments.csv``)."""
        eval_list: str = "eval_segments.csv"
        class_index: str = "class_labels_indices.csv"
        audio_dir: str = "audio"
        """Folder (relative to ``root``) searched recursively for the downloaded clips."""
        max_missing: float = 0.2
        """Largest share of a list's clips that may lack an audio file."""
        clip_seconds: float = 10.0
        train_json: Path | None = None
        """Legacy: AudioMAE's JSON read as unlabeled tuning audio (the lists are then unused)."""
        eval_json: Path | None = None
        """With ``train_json``: the unlabeled eval clips (default: the train clips)."""

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
            max_missing=Domain(ge=0, le=1, help="Largest share of listed clips without audio."),
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)
            if not 0 <= self.max_missing <= 1:
                raise ValueError(f"max_missing must be in [0, 1], got {self.max_missing}")

    def load(self) -> DataSplits:
        return self.read(train=True)

    def load_without_train(self) -> DataSplits:
        return self.read(train=False)

    def read(self, train: bool) -> DataSplits:
        """The splits (the training lists unread unless ``train``)."""
        cfg = self.config
        if cfg.train_json is not None:
            return self.unlabeled_pool()
        layout = Layout(
            Path(cfg.root),
            cfg.train_list,
            cfg.eval_list,
            cfg.class_index,
            cfg.audio_dir,
            cfg.max_missing,
        )
        return load_layout(layout, cfg.clip_seconds, self.name, train)

    def unlabeled_pool(self) -> DataSplits:
        cfg = self.config
        train = read_audioset_json(Path(cfg.train_json), self.name)
        eval_ = read_audioset_json(Path(cfg.eval_json), self.name) if cfg.eval_json else list(train)
        return DataSplits(
            classes=[],
            train=train,
            eval=eval_,
            clip_seconds=cfg.clip_seconds,
            root=Path(cfg.train_json).parent,
        )


@hookimpl
def register_datasets(register) -> None:
    register(AudioSet)
