"""ESC-50 (Piczak, ACM MM 2015): 2,000 five-second clips of 50 environmental sound classes.

Published layout::

    ROOT/meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    ROOT/audio/1-100032-A-0.wav ...

Five folds; one (``fold``) is the eval split, the other four train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import Dataset, DataSplits, between, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_positive,
    require_clips,
)
from harness_plugins.datasets._esc50_layout import FOLDS, read_esc50, split_by_fold


class Esc50(Dataset):
    name = "esc50"
    root_fields = ("root",)
    description = "ESC-50 environmental sounds (meta/esc50.csv + audio/), 50 classes, 5 folds."

    @dataclass
    class Config:
        root: Path = Path("data/ESC-50")
        fold: int = 1
        """Eval fold (1-5); the other four folds are the train split."""
        clip_seconds: float = 5.0
        esc10: bool = False
        """Only the ESC-10 subset (10 classes)."""

        domains = domain_map(
            fold=between(1, 5, "Eval fold (1-5); the other four folds train."),
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            if self.fold not in FOLDS:
                raise ValueError(f"fold must be one of 1-5, got {self.fold}")
            check_positive("clip_seconds", self.clip_seconds)

    def load(self) -> DataSplits:
        return self.read(train=True)

    def load_without_train(self) -> DataSplits:
        return self.read(train=False)

    def read(self, train: bool) -> DataSplits:
        """The splits (the training folds' files unchecked and left out unless ``train``)."""
        cfg = self.config
        checked = FOLDS if train else (cfg.fold,)
        table = read_esc50(Path(cfg.root), cfg.esc10, self.name, checked)
        training, eval_ = split_by_fold(table, cfg.fold)
        require_clips(eval_, self.name, Path(cfg.root) / "meta" / "esc50.csv")
        return DataSplits(
            classes=table.classes,
            train=training if train else [],
            eval=eval_,
            clip_seconds=cfg.clip_seconds,
            root=Path(cfg.root),
            fold_key="fold",
        )


@hookimpl
def register_datasets(register) -> None:
    register(Esc50)
