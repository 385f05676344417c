"""AudioSet in AudioMAE's JSON layout, used as a pool of unlabeled tuning audio.

Layout (one file per split, as AudioMAE's data preparation writes them)::

    {"data": [{"wav": "path/to/clip.wav", "labels": "/m/09x0r,/m/05zppz"}, ...]}

Relative ``wav`` paths are taken relative to the JSON file's folder. Clips are
unlabeled (label -1); the AudioSet labels are kept in ``Clip.meta["labels"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_positive,
    read_audioset_json,
)


class AudioSet(Dataset):
    name = "audioset"
    description = "AudioSet clips listed in AudioMAE's JSON layout, as unlabeled tuning audio."

    @dataclass
    class Config:
        train_json: Path = Path("data/audioset/bal_train.json")
        eval_json: Path | None = None
        """Clips of the eval split (default: the train clips)."""
        clip_seconds: float = 10.0

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)

    def load(self) -> DataSplits:
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
