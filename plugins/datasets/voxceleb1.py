"""VoxCeleb1 speaker identification (Nagrani et al., Interspeech 2017): 1,251 speakers.

The published layout is described (and read) in ``_voxceleb1_layout.py``::

    ROOT/wav/id10001/1zcIwhmdeo4/00001.wav ...
    ROOT/iden_split.txt   lines "<set> id10001/1zcIwhmdeo4/00001.wav", set 1=train 2=val 3=test
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness import hookimpl
from harness.api import Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import CLIP_SECONDS, check_positive
from harness_plugins.datasets._voxceleb1_layout import load_voxceleb1


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
        return load_voxceleb1(Path(cfg.root), cfg.eval_split, cfg.clip_seconds, self.name)


@hookimpl
def register_datasets(register) -> None:
    register(VoxCeleb1)
