"""VoxCeleb1's published identification layout (Nagrani et al., Interspeech 2017), read by
``voxceleb1.py`` and written by ``voxceleb1_embedded.py``. Not a plugin.

::

    ROOT/wav/id10001/1zcIwhmdeo4/00001.wav ...
    ROOT/iden_split.txt   lines "<set> id10001/1zcIwhmdeo4/00001.wav", set 1=train 2=val 3=test
"""

from __future__ import annotations

from pathlib import Path

from harness.api import Clip, DataError, DataSplits
from harness_plugins.datasets._common import (
    check_audio_exists,
    read_text,
    require_clips,
    require_dir,
    require_file,
)

SET_IDS = {"1": "train", "2": "val", "3": "test"}
SPLIT_FILE = "iden_split.txt"
FIRST_SPEAKER = 10001
"""VoxCeleb1's speaker ids run from id10001 to id11251."""


def speaker_id(index: int) -> str:
    """The id of the ``index``-th speaker (from 0): ``id10001``, ``id10002``, ..."""
    return f"id{FIRST_SPEAKER + index}"


def clip_path(speaker: str, video: str, number: int) -> str:
    """A clip's path relative to ``ROOT/wav``: ``idXXXXX/<video>/NNNNN.wav`` (from 1)."""
    return f"{speaker}/{video}/{number:05d}.wav"


def split_line(split: str, relative: str) -> str:
    """One line of ``iden_split.txt`` for a clip of split ``train``, ``val`` or ``test``."""
    set_id = {name: number for number, name in SET_IDS.items()}[split]
    return f"{set_id} {relative}"


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


def load_voxceleb1(root: Path, eval_split: str, clip_seconds: float, dataset: str) -> DataSplits:
    """The identification splits: the speakers (sorted) are the classes."""
    require_dir(root, dataset)
    split_file = root / SPLIT_FILE
    entries = read_iden_split(split_file, dataset)
    require_clips(entries, dataset, split_file)
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
    eval_ = require_clips(splits[eval_split], dataset, split_file)
    valid = splits["val"] if eval_split == "test" else []  # the published set 2
    return DataSplits(
        speakers, splits["train"], eval_, clip_seconds=clip_seconds, root=root, valid=valid
    )
