"""Speech Commands v2's published layout (Warden, 2018), read by ``speech_commands.py`` and
written by ``speech_commands_embedded.py``. Not a plugin.

::

    ROOT/<word>/<speaker>_nohash_<n>.wav
    ROOT/validation_list.txt   ROOT/testing_list.txt   (paths relative to ROOT)
    ROOT/_background_noise_/   (long noise recordings, not a class; excluded)

The train split is every clip in neither list; the eval split is one list (``eval_split``);
with ``eval_split = test`` the validation list is the validation split (model selection,
the plateau schedule). Every clip of one speaker is in one of the three splits.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.api import Clip, DataError, DataSplits
from harness_plugins.datasets._common import (
    audio_files,
    read_text,
    require_clips,
    require_dir,
    require_file,
)

LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
BACKGROUND_NOISE = "_background_noise_"
WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip
"""The 35 words of v0.02: the ten commands first (the 12-class task's, with unknown and
silence), then the digits and the auxiliary words."""


def clip_path(word: str, speaker: str, repetition: int) -> str:
    """A clip's path relative to ROOT: ``<word>/<speaker>_nohash_<n>.wav``."""
    return f"{word}/{speaker}_nohash_{repetition}.wav"


def write_list(path: Path, entries: Iterable[str]) -> None:
    """A split list: one relative clip path a line, sorted."""
    path.write_text("".join(f"{entry}\n" for entry in sorted(entries)))


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


def load_speech_commands(
    root: Path, eval_split: str, clip_seconds: float, dataset: str
) -> DataSplits:
    """The splits of a Speech Commands folder: word folders are the classes (sorted)."""
    require_dir(root, dataset)
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    lists = {split: read_list(root / f, set(words), dataset) for split, f in LIST_FILES.items()}
    held_out = lists["validation"] | lists["test"]
    label_of = {w: i for i, w in enumerate(words)}
    train, eval_, valid = [], [], []
    for word in words:
        for path in audio_files(root / word):
            relative = f"{word}/{path.name}"
            clip = Clip(path=path, label=label_of[word], meta={"speaker": path.name.split("_")[0]})
            if relative in lists[eval_split]:
                eval_.append(clip)
            elif relative in lists["validation"]:
                valid.append(clip)  # the published validation list (eval_split=test)
            elif relative not in held_out:
                train.append(clip)
    require_clips(train + eval_, dataset, root)
    require_clips(eval_, dataset, root / LIST_FILES[eval_split])
    return DataSplits(words, train, eval_, clip_seconds=clip_seconds, root=root, valid=valid)
