"""FSDKaggle2018 (Fonseca et al., DCASE 2018): 11,073 Freesound clips of 41 AudioSet classes.

Published layout::

    ROOT/FSDKaggle2018.meta/train_post_competition.csv   (fname,label,manually_verified,...)
    ROOT/FSDKaggle2018.meta/test_post_competition_scoring_clips.csv   (fname,label,usage,...)
    ROOT/FSDKaggle2018.audio_train/<fname>   ROOT/FSDKaggle2018.audio_test/<fname>

Clips last 0.3 s to 30 s and are cropped or padded to ``clip_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import Clip, Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_audio_exists,
    check_positive,
    read_csv,
    require_clips,
    require_dir,
)

META = "FSDKaggle2018.meta"
TRAIN_CSV = "train_post_competition.csv"
TEST_CSV = "test_post_competition_scoring_clips.csv"


class FsdKaggle2018(Dataset):
    name = "fsdkaggle2018"
    root_fields = ("root",)
    description = "FSDKaggle2018 (FSDKaggle2018.meta/*.csv + audio folders), 41 classes."

    @dataclass
    class Config:
        root: Path = Path("data/FSDKaggle2018")
        clip_seconds: float = 5.0
        verified_only: bool = False
        """Train only on clips whose label was manually verified."""

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)

    def load(self) -> DataSplits:
        cfg = self.config
        root = require_dir(Path(cfg.root), self.name)
        train_csv, test_csv = root / META / TRAIN_CSV, root / META / TEST_CSV
        train_fields = (
            ("fname", "label", "manually_verified") if cfg.verified_only else ("fname", "label")
        )
        train_rows = [row for _, row in read_csv(train_csv, train_fields, self.name)]
        test_rows = [row for _, row in read_csv(test_csv, ("fname", "label"), self.name)]
        if cfg.verified_only:
            train_rows = [row for row in train_rows if row["manually_verified"] == "1"]
        classes = sorted({row["label"] for row in train_rows + test_rows})
        label_of = {c: i for i, c in enumerate(classes)}

        def clips(rows: list[dict[str, str]], folder: str, listed_in: Path) -> list[Clip]:
            out = [
                Clip(path=root / folder / row["fname"], label=label_of[row["label"]])
                for row in rows
            ]
            check_audio_exists((c.path for c in out), listed_in)
            return out

        train = clips(train_rows, "FSDKaggle2018.audio_train", train_csv)
        eval_ = require_clips(
            clips(test_rows, "FSDKaggle2018.audio_test", test_csv), self.name, test_csv
        )
        return DataSplits(classes, train, eval_, clip_seconds=cfg.clip_seconds, root=root)


@hookimpl
def register_datasets(register) -> None:
    register(FsdKaggle2018)
