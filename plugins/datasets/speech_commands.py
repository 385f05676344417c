"""Speech Commands v2 (Warden, 2018): one-second recordings of 35 spoken words.

The published layout is described (and read) in ``_speech_commands_layout.py``::

    ROOT/<word>/<speaker>_nohash_<n>.wav
    ROOT/validation_list.txt   ROOT/testing_list.txt   (paths relative to ROOT)
    ROOT/_background_noise_/   (long noise recordings, not a class; excluded)

The train split is every clip in neither list; the eval split is one list (``eval_split``);
with ``eval_split = test`` the validation list is the validation split (model selection,
the plateau schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness import hookimpl
from harness.api import Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import CLIP_SECONDS, check_positive
from harness_plugins.datasets._speech_commands_layout import load_speech_commands


class SpeechCommands(Dataset):
    name = "speech-commands"
    root_fields = ("root",)
    description = "Speech Commands v2 (folder per word + validation/testing lists), 35 words."

    @dataclass
    class Config:
        root: Path = Path("data/speech_commands_v0.02")
        eval_split: Literal["test", "validation"] = "test"
        clip_seconds: float = 1.0

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)

    def load(self) -> DataSplits:
        cfg = self.config
        return load_speech_commands(Path(cfg.root), cfg.eval_split, cfg.clip_seconds, self.name)


@hookimpl
def register_datasets(register) -> None:
    register(SpeechCommands)
