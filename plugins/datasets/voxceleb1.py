"""VoxCeleb1 speaker identification (Nagrani et al., Interspeech 2017): 1,251 speakers.

Published layout::

    ROOT/wav/id10001/1zcIwhmdeo4/00001.wav ...
    ROOT/iden_split.txt   lines "<set> id10001/1zcIwhmdeo4/00001.wav", set 1=train 2=val 3=test
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness import hookimpl
from harness.api import Clip, DataError, Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_audio_exists,
    check_positive,
    read_text,
    require_clips,
    require_dir,
    require_file,
)

SET_IDS = {"1": "train", "2": "val", "3": "test"}


def read_iden_split(path: Path, dataset: str) -> list[tuple[str, str, str]]:
    """``(split, speaker, relative path)`` for each line of ``iden_split.txt``."""
    require_file(path, dataset)
    entries = []
    for number, line in enumerate(read_text(path, dataset).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SET_IDS or parts[1].count("/") != 2:
            raise DataError(
                f"{path}: line {number}: expected '<1|2|3> idXXXXX/<video>/NNNNN.wav', "
                f"got {line.strip()!r}"
            )
        entries.append((SET_IDS[parts[0]], parts[1].split("/")[0], parts[1]))
    return entries


class VoxCeleb1(Dataset):
    name = "voxceleb1"
    root_fields = ("root",)
    description = "VoxCeleb1 speaker identification (wav/ + iden_split.txt), 1,251 speakers."

    @dataclass
    class Config:
        root: Path = Path("data/voxceleb1")
        eval_split: Literal["test", "val"] = "test"
        clip_seconds: float = 3.0

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)

    def load(self) -> DataSplits:
        cfg = self.config
        root = require_dir(Path(cfg.root), self.name)
        split_file = root / "iden_split.txt"
        entries = read_iden_split(split_file, self.name)
        require_clips(entries, self.name, split_file)
        speakers = sorted({speaker for _, speaker, _ in entries})
        label_of = {s: i for i, s in enumerate(speakers)}
        splits: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
        for split, speaker, relative in entries:
            clip = Clip(
                path=root / "wav" / relative,
                label=label_of[speaker],
                meta={"video": relative.split("/")[1]},
            )
            splits[split].append(clip)
        check_audio_exists((c.path for clips in splits.values() for c in clips), split_file)
        eval_ = require_clips(splits[cfg.eval_split], self.name, split_file)
        valid = splits["val"] if cfg.eval_split == "test" else []  # the published set 2
        return DataSplits(
            speakers,
            splits["train"],
            eval_,
            clip_seconds=cfg.clip_seconds,
            root=root,
            valid=valid,
        )


@hookimpl
def register_datasets(register) -> None:
    register(VoxCeleb1)
