"""Speech Commands v2 (Warden, 2018): one-second recordings of 35 spoken words.

Published layout::

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
from harness.api import Clip, DataError, Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    audio_files,
    check_positive,
    read_text,
    require_clips,
    require_dir,
    require_file,
)

LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def read_list(path: Path, classes: set[str], dataset: str) -> set[str]:
    """Relative clip paths of a split list, each inside a word folder and existing."""
    require_file(path, dataset)
    entries = set()
    root = path.parent
    for number, line in enumerate(read_text(path, dataset).splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        word = entry.split("/")[0]
        if "/" not in entry or word not in classes:
            raise DataError(
                f"{path}: line {number}: {entry!r} is not <word>/<file> of a word folder"
            )
        if not (root / entry).is_file():
            raise DataError(f"{path}: line {number}: audio file not found: {root / entry}")
        entries.add(entry)
    return entries


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
        root = require_dir(Path(cfg.root), self.name)
        words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        lists = {
            split: read_list(root / f, set(words), self.name) for split, f in LIST_FILES.items()
        }
        held_out = lists["validation"] | lists["test"]
        label_of = {w: i for i, w in enumerate(words)}
        train, eval_, valid = [], [], []
        for word in words:
            for path in audio_files(root / word):
                relative = f"{word}/{path.name}"
                clip = Clip(
                    path=path, label=label_of[word], meta={"speaker": path.name.split("_")[0]}
                )
                if relative in lists[cfg.eval_split]:
                    eval_.append(clip)
                elif relative in lists["validation"]:
                    valid.append(clip)  # the published validation list (eval_split=test)
                elif relative not in held_out:
                    train.append(clip)
        require_clips(train + eval_, self.name, root)
        require_clips(eval_, self.name, root / LIST_FILES[cfg.eval_split])
        return DataSplits(
            words, train, eval_, clip_seconds=cfg.clip_seconds, root=root, valid=valid
        )


@hookimpl
def register_datasets(register) -> None:
    register(SpeechCommands)
