"""NSynth (Engel et al., ICML 2017): four-second musical notes of 1,006 instruments.

Published layout, one folder per split (instruments do not overlap between splits)::

    ROOT/nsynth-train/examples.json   ROOT/nsynth-train/audio/<note_str>.wav
    ROOT/nsynth-valid/...             ROOT/nsynth-test/...

``examples.json`` maps each note name to its attributes; the class is
``instrument_str`` (or ``instrument_family_str``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import hookimpl
from harness.api import Clip, DataError, Dataset, DataSplits, domain_map
from harness_plugins.datasets._common import (
    CLIP_SECONDS,
    check_audio_exists,
    check_positive,
    read_json,
    require_clips,
    require_dir,
)


def read_examples(folder: Path, label_field: str, dataset: str) -> list[tuple[str, Path, dict]]:
    """``(class name, audio path, attributes)`` for each note of one split folder."""
    json_path = folder / "examples.json"
    examples = read_json(json_path, dataset)
    if not isinstance(examples, dict):
        raise DataError(f"{json_path}: expected an object mapping note names to attributes")
    notes = []
    for key, attrs in examples.items():
        if not isinstance(attrs, dict):
            raise DataError(f"{json_path}: entry '{key}' is not an object")
        for name in ("note_str", label_field):
            value = attrs.get(name)
            if not isinstance(value, str) or not value:
                raise DataError(f"{json_path}: entry '{key}' has no field '{name}'")
        notes.append((attrs[label_field], folder / "audio" / f"{attrs['note_str']}.wav", attrs))
    check_audio_exists((path for _, path, _ in notes), json_path)
    return notes


class NSynth(Dataset):
    name = "nsynth"
    root_fields = ("root",)
    description = "NSynth notes (examples.json + audio/ per split folder), class = instrument."

    @dataclass
    class Config:
        root: Path = Path("data/nsynth")
        train_dirs: list[str] = field(default_factory=lambda: ["nsynth-train", "nsynth-valid"])
        """Split folders under ``root`` forming the train split ('.' is ``root`` itself)."""
        eval_dirs: list[str] = field(default_factory=lambda: ["nsynth-test"])
        valid_dirs: list[str] = field(default_factory=list)
        """Split folders forming the validation split (model selection, the plateau schedule),
        e.g. ``["nsynth-valid"]`` with ``train_dirs = ["nsynth-train"]``; none by default, as
        the default train split includes ``nsynth-valid``."""
        label_field: Literal["instrument_str", "instrument_family_str"] = "instrument_str"
        clip_seconds: float = 4.0

        domains = domain_map(
            clip_seconds=CLIP_SECONDS,
        )

        def __post_init__(self) -> None:
            check_positive("clip_seconds", self.clip_seconds)
            if not self.eval_dirs:
                raise ValueError("eval_dirs must name at least one split folder")

    def load(self) -> DataSplits:
        cfg = self.config
        root = require_dir(Path(cfg.root), self.name)
        train_notes = [n for d in cfg.train_dirs for n in self._read(root, d)]
        eval_notes = [n for d in cfg.eval_dirs for n in self._read(root, d)]
        valid_notes = [n for d in cfg.valid_dirs for n in self._read(root, d)]
        classes = sorted({name for name, _, _ in train_notes + eval_notes + valid_notes})
        label_of = {c: i for i, c in enumerate(classes)}

        def clips(notes: list[tuple[str, Path, dict]]) -> list[Clip]:
            return [
                Clip(path=path, label=label_of[name], meta={"pitch": str(attrs.get("pitch", ""))})
                for name, path, attrs in notes
            ]

        eval_clips = require_clips(clips(eval_notes), self.name, root / cfg.eval_dirs[0])
        return DataSplits(
            classes,
            clips(train_notes),
            eval_clips,
            cfg.clip_seconds,
            root=root,
            valid=clips(valid_notes),
        )

    def _read(self, root: Path, folder: str) -> list[tuple[str, Path, dict]]:
        path = root if folder in ("", ".") else root / folder
        return read_examples(require_dir(path, self.name), self.config.label_field, self.name)


@hookimpl
def register_datasets(register) -> None:
    register(NSynth)
