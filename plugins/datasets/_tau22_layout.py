"""The official layout of TAU Urban Acoustic Scenes 2022 Mobile (``meta.csv``,
``evaluation_setup/fold1_*.csv``, ``audio/``) and its reader :func:`load_tau22`, shared by
``tau22.py`` and ``tau22_embedded.py`` (which writes a data set in this layout); see
``tau22.py`` for the layout."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.api import Clip, DataError, DataSplits
from harness_plugins.datasets._common import text_errors

META_FILE = "meta.csv"
FOLD_DIR = "evaluation_setup"
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
FOLD_COLUMNS = ("filename", "scene_label")
DEVICE_ORDER = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
"""Display order of the TAU22 devices: real (a, b, c), simulated seen, simulated unseen."""
FILE_SECONDS = 1.0
SUBSET_SEED = 0


class FileName(NamedTuple):
    """The fields of ``<scene>-<city>-<location>-<segment>-<k>-<device>.wav``."""

    scene: str
    city: str
    location: str
    segment: str
    k: int
    device: str

    @property
    def recording(self) -> tuple[str, str, str, str, str]:
        """What identifies the 10 s recording the file was cut from."""
        return (self.scene, self.city, self.location, self.segment, self.device)


@dataclass(frozen=True)
class MetaRow:
    scene: str
    identifier: str
    device: str


def parse_file_name(filename: str, listed_in: Path) -> FileName:
    """Split a TAU22 audio file name into its fields (the scene may itself hold dashes)."""
    stem = Path(filename).stem
    parts = stem.split("-")
    if len(parts) < 6 or not all(parts):
        raise DataError(
            f"{listed_in}: file name {filename!r} does not follow "
            "<scene>-<city>-<location>-<segment>-<k>-<device>.wav"
        )
    *scene, city, location, segment, k, device = parts
    if not k.isdigit():
        raise DataError(
            f"{listed_in}: file name {filename!r}: second index {k!r} is not an integer"
        )
    return FileName("-".join(scene), city, location, segment, int(k), device)


def read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a tab-separated table whose header has all of ``columns``."""
    if not path.is_file():
        raise DataError(f"TAU22 table not found: {path}")
    with text_errors(path):
        return _read_table(path, columns)


def _read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = [name.strip() for name in next(reader, [])]
        for column in columns:
            if column not in header:
                found = ", ".join(header) or "nothing"
                raise DataError(f"{path}: missing column '{column}' (header has: {found})")
        where = [header.index(column) for column in columns]
        rows = []
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            if len(fields) < len(header):
                raise DataError(
                    f"{path}: line {reader.line_num}: expected {len(header)} tab-separated "
                    f"fields, found {len(fields)}"
                )
            row = {column: fields[i].strip() for column, i in zip(columns, where, strict=True)}
            for column, value in row.items():
                if not value:
                    raise DataError(f"{path}: line {reader.line_num}: empty '{column}'")
            rows.append((reader.line_num, row))
    return rows


def read_meta(path: Path) -> dict[str, MetaRow]:
    meta: dict[str, MetaRow] = {}
    for line, row in read_table(path, META_COLUMNS):
        filename = row["filename"]
        if filename in meta:
            raise DataError(f"{path}: line {line}: {filename} is listed twice")
        meta[filename] = MetaRow(row["scene_label"], row["identifier"], row["source_label"])
    if not meta:
        raise DataError(f"{path}: lists no files")
    return meta


def read_fold(path: Path, meta: dict[str, MetaRow], meta_path: Path) -> list[str]:
    """The file names of a fold table, each checked against ``meta.csv``."""
    classes = {row.scene for row in meta.values()}
    names: list[str] = []
    seen: set[str] = set()
    for line, row in read_table(path, FOLD_COLUMNS):
        filename, scene = row["filename"], row["scene_label"]
        if filename not in meta:
            raise DataError(f"{path}: line {line}: {filename} is not listed in {meta_path}")
        if scene not in classes:
            raise DataError(
                f"{path}: line {line}: unknown scene label '{scene}' "
                f"(scenes in {meta_path.name}: {', '.join(sorted(classes))})"
            )
        if scene != meta[filename].scene:
            raise DataError(
                f"{path}: line {line}: {filename} is '{scene}' here "
                f"but '{meta[filename].scene}' in {meta_path}"
            )
        if filename in seen:
            raise DataError(f"{path}: line {line}: {filename} is listed twice")
        seen.add(filename)
        names.append(filename)
    if not names:
        raise DataError(f"{path}: lists no files")
    return names


def check_audio_files(root: Path, names: list[str], listed_in: Path) -> None:
    """Every listed file exists; each folder is listed once instead of one stat per file."""
    by_folder: dict[Path, list[str]] = defaultdict(list)
    for name in names:
        path = root / name
        by_folder[path.parent].append(path.name)
    missing: list[Path] = []
    for folder, files in by_folder.items():
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        missing += [folder / f for f in files if f not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{listed_in}: audio file not found: {missing[0]}{more}")


def make_clip(root: Path, filename: str, row: MetaRow, label: int, listed_in: Path) -> Clip:
    name = parse_file_name(filename, listed_in)
    meta = {
        "city": name.city,
        "location": name.location,
        "identifier": row.identifier,
        "segment": name.segment,
        "k": str(name.k),
    }
    return Clip(path=root / filename, label=label, device=row.device, meta=meta)


def merge_recordings(clips: list[Clip]) -> list[Clip]:
    """One clip per 10 s recording: its 1 s files in ``k`` order (recordings sorted by name)."""
    groups: dict[tuple[str, ...], list[Clip]] = defaultdict(list)
    for clip in clips:
        name = parse_file_name(clip.path.name, clip.path)
        groups[name.recording].append(clip)
    merged = []
    for key in sorted(groups):
        parts = sorted(groups[key], key=lambda c: int(c.meta["k"]))
        first = parts[0]
        merged.append(
            Clip(
                path=first.path,
                label=first.label,
                device=first.device,
                meta={**first.meta, "k": ",".join(c.meta["k"] for c in parts)},
                segments=tuple(c.path for c in parts),
            )
        )
    return merged


def subset(clips: list[Clip], limit: int) -> list[Clip]:
    """A fixed random subset of ``limit`` clips in their original order (all when 0)."""
    if limit <= 0 or limit >= len(clips):
        return clips
    keep = np.random.default_rng(SUBSET_SEED).choice(len(clips), size=limit, replace=False)
    return [clips[i] for i in sorted(keep)]


def ordered_devices(devices: set[str]) -> list[str]:
    """TAU22's display order; unknown device labels follow, sorted."""
    return [d for d in DEVICE_ORDER if d in devices] + sorted(devices - set(DEVICE_ORDER))


def load_tau22(
    root: Path,
    merge_segments: bool = False,
    max_train_clips: int = 0,
    max_eval_clips: int = 0,
    train: bool = True,
) -> DataSplits:
    """The fold-1 train and evaluation splits of a TAU22 development-set folder (without
    ``train``: the training split empty, its table and files untouched)."""
    if not root.is_dir():
        raise DataError(f"TAU22 folder not found: {root}")
    meta_path = root / META_FILE
    meta = read_meta(meta_path)
    classes = sorted({row.scene for row in meta.values()})
    label_of = {scene: i for i, scene in enumerate(classes)}
    splits: dict[str, list[Clip]] = {"train": []}
    tables = (("train", "fold1_train.csv"), ("eval", "fold1_evaluate.csv"))
    for split, table in tables if train else tables[1:]:
        fold_path = root / FOLD_DIR / table
        names = read_fold(fold_path, meta, meta_path)
        check_audio_files(root, names, fold_path)
        splits[split] = [
            make_clip(root, n, meta[n], label_of[meta[n].scene], fold_path) for n in names
        ]
    overlap = {c.path for c in splits["train"]} & {c.path for c in splits["eval"]}
    if overlap:
        raise DataError(f"{root / FOLD_DIR}: {min(overlap)} is in both the train and the eval fold")
    training = splits["train"]
    train_seconds = None
    if merge_segments and training:
        training = merge_recordings(training)
        train_seconds = FILE_SECONDS * max(len(c.segments) for c in training)
    training = subset(training, max_train_clips)
    evaluation = subset(splits["eval"], max_eval_clips)
    return DataSplits(
        classes=classes,
        train=training,
        eval=evaluation,
        clip_seconds=FILE_SECONDS,
        train_clip_seconds=train_seconds,
        devices=ordered_devices({c.device for c in training + evaluation}),
        root=root,
    )
