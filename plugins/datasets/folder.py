"""Any folder of audio files with one subfolder per class::

    ROOT/<class>/<clip>.wav ...

The eval split is either a second folder of the same layout (``eval_root``) or
a seeded, per-class fraction of ``root`` (``eval_fraction``; 1.0 puts every
clip in the eval split, as few-shot evaluation wants).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import Clip, DataError, Dataset, DataSplits, Domain, domain_map, non_negative
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    audio_files,
    check_positive,
    require_clips,
    require_dir,
)


def clips_by_class(root: Path, dataset: str) -> dict[str, list[Path]]:
    """Audio files of each class folder (hidden folders skipped), in name order."""
    require_dir(root, dataset)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {folder.name: audio_files(folder) for folder in folders}
    found = {name: files for name, files in found.items() if files}
    if not found:
        raise DataError(f"{dataset}: no clips found in {root} (expected ROOT/<class>/<clip>.wav)")
    return found


class Folder(Dataset):
    name = "folder"
    root_fields = ("root", "eval_root")
    description = "A generic folder-per-class data set (ROOT/<class>/<clip>.wav)."

    @dataclass
    class Config:
        root: Path = Path("data/folder")
        eval_root: Path | None = None
        """A second folder of the same layout holding the eval split."""
        eval_fraction: float = 0.2
        """Share of each class's clips drawn into the eval split when no ``eval_root``."""
        seed: int = 0
        clip_seconds: float = 5.0

        domains = domain_map(
            eval_fraction=Domain(gt=0, le=1, help="Share of the clips held out for evaluation."),
            seed=non_negative("Seed of the train/eval split."),
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)
            if not 0.0 < self.eval_fraction <= 1.0:
                raise ValueError(f"eval_fraction must be in (0, 1], got {self.eval_fraction}")

    def load(self) -> DataSplits:
        cfg = self.config
        root = Path(cfg.root)
        train_files = clips_by_class(root, self.name)
        if cfg.eval_root is not None:
            eval_files = clips_by_class(Path(cfg.eval_root), self.name)
        else:
            train_files, eval_files = self._split(train_files)
        classes = sorted(set(train_files) | set(eval_files))
        label_of = {c: i for i, c in enumerate(classes)}

        def clips(files: dict[str, list[Path]]) -> list[Clip]:
            return [
                Clip(path=p, label=label_of[name]) for name, paths in files.items() for p in paths
            ]

        eval_ = require_clips(clips(eval_files), self.name, Path(cfg.eval_root or root))
        return DataSplits(
            classes, clips(train_files), eval_, clip_seconds=cfg.clip_seconds, root=root
        )

    def _split(
        self, files: dict[str, list[Path]]
    ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
        """Per class, a seeded ``eval_fraction`` of the clips (at least one) goes to eval."""
        rng = random.Random(self.config.seed)
        train, eval_ = {}, {}
        for name, paths in files.items():
            order = list(paths)
            rng.shuffle(order)
            n_eval = max(1, round(self.config.eval_fraction * len(order)))
            eval_[name] = sorted(order[:n_eval])
            train[name] = sorted(order[n_eval:])
        return train, eval_


@hookimpl
def register_datasets(register) -> None:
    register(Folder)
