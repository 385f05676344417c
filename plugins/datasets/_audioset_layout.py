"""AudioSet's published file layout: the class index, the segment lists and the audio files.

Not a plugin. Shared by the ``audioset`` data set (reads the layout) and the embedded
multi-label benchmark (writes it). The published files::

    class_labels_indices.csv      index,mid,display_name
                                  0,/m/09x0r,"Speech"
    balanced_train_segments.csv   # Segments csv created Sun Mar  5 10:54:31 2017
    eval_segments.csv             # num_ytids=22160, num_segs=22160, num_unique_labels=527, ...
    unbalanced_train_segments.csv # YTID, start_seconds, end_seconds, positive_labels
                                  --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"

AudioMAE's JSON lists (``{"data": [{"wav": ..., "labels": "/m/..,/m/.."}]}``) are read too.
Downloaded audio is matched to YouTube ids by file name: ``<ytid>.<ext>``, ``Y<ytid>.<ext>``
(PANNs' downloader) or ``<ytid>_<anything>.<ext>`` (e.g. ``<ytid>_30.000.wav``), anywhere
under the audio folder.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.api import Clip, DataError, DataSplits, note
from harness_plugins.datasets._common import (
    AUDIO_EXTENSIONS,
    read_csv,
    read_json,
    require_file,
    text_errors,
)

YTID_LENGTH = 11
SEGMENT_FIELDS = ("YTID", "start_seconds", "end_seconds", "positive_labels")


@dataclass(frozen=True)
class Segment:
    """One row of a segment list: a YouTube id, its 10 s window and its label ids."""

    ytid: str
    start: float
    end: float
    mids: tuple[str, ...]


@dataclass(frozen=True)
class ClassIndex:
    """``class_labels_indices.csv``: label ids (``/m/...``) in index order and their names."""

    mids: list[str]
    names: list[str]

    def index_of(self) -> dict[str, int]:
        return {mid: k for k, mid in enumerate(self.mids)}


def read_class_index(path: Path, dataset: str) -> ClassIndex:
    """The class index; its ``index`` column must count 0, 1, 2, ... in file order."""
    rows = read_csv(path, ("index", "mid", "display_name"), dataset)
    mids, names = [], []
    for line, row in rows:
        if row["index"] != str(len(mids)):
            raise DataError(f"{path}: line {line}: index {row['index']!r}, expected {len(mids)}")
        mids.append(row["mid"])
        names.append(row["display_name"])
    if len(set(mids)) != len(mids):
        raise DataError(f"{path}: a label id is listed twice")
    if not mids:
        raise DataError(f"{path}: no classes listed")
    return ClassIndex(mids, names)


def read_segments(path: Path, dataset: str) -> list[tuple[int, Segment]]:
    """``(line number, segment)`` of a published segment CSV: ``#`` lines are comments,
    fields are separated by ``", "``, the label ids are one quoted comma-separated list."""
    require_file(path, dataset)
    segments = []
    with text_errors(path), path.open(newline="", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = next(csv.reader([line], skipinitialspace=True))
            segments.append((number, parse_segment(fields, path, number)))
    return segments


def parse_segment(fields: list[str], path: Path, line: int) -> Segment:
    """One segment row, or a DataError naming the file and line."""
    if len(fields) != len(SEGMENT_FIELDS):
        raise DataError(
            f"{path}: line {line}: {len(fields)} fields, expected {len(SEGMENT_FIELDS)} "
            f"({', '.join(SEGMENT_FIELDS)})"
        )
    ytid, start, end, labels = (f.strip() for f in fields)
    if not ytid:
        raise DataError(f"{path}: line {line}: empty YTID")
    try:
        start_s, end_s = float(start), float(end)
    except ValueError:
        raise DataError(f"{path}: line {line}: times {start!r}, {end!r} are not numbers") from None
    mids = tuple(m.strip() for m in labels.split(",") if m.strip())
    if not mids:
        raise DataError(f"{path}: line {line}: no positive_labels")
    return Segment(ytid, start_s, end_s, mids)


def label_set(
    mids: Iterable[str], index: dict[str, int], path: Path, where: str
) -> tuple[int, ...]:
    """Sorted class indices of label ids (a DataError naming an id not in the class index)."""
    indices = set()
    for mid in mids:
        if mid not in index:
            raise DataError(f"{path}: {where}: label id {mid!r} is not in the class index")
        indices.add(index[mid])
    return tuple(sorted(indices))


def ytid_keys(stem: str) -> list[str]:
    """The YouTube ids a downloaded file's name may stand for."""
    keys = [stem]
    names = [stem, stem[1:]] if stem.startswith("Y") and len(stem) > YTID_LENGTH else [stem]
    for name in names:
        if len(name) == YTID_LENGTH:
            keys.append(name)
        elif len(name) > YTID_LENGTH and name[YTID_LENGTH] == "_":
            keys.append(name[:YTID_LENGTH])
    return keys


def index_audio(folder: Path) -> dict[str, Path]:
    """YouTube id -> audio file, for every audio file under ``folder`` (first one wins)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            for key in ytid_keys(path.stem):
                found.setdefault(key, path)
    return found


@dataclass
class ListedClips:
    """The clips of one list whose audio was found, and how many were listed."""

    clips: list[Clip]
    listed: int

    @property
    def missing(self) -> int:
        return self.listed - len(self.clips)


def segment_clips(
    path: Path, classes: ClassIndex, audio: dict[str, Path], dataset: str
) -> ListedClips:
    """The clips of a segment CSV with their label sets; rows without audio are left out."""
    index = classes.index_of()
    rows = read_segments(path, dataset)
    clips = []
    for line, segment in rows:
        labels = label_set(segment.mids, index, path, f"line {line}")
        found = audio.get(segment.ytid)
        if found is not None:
            meta = {"ytid": segment.ytid, "start": f"{segment.start:.3f}"}
            clips.append(Clip(path=found, label=-1, labels=labels, meta=meta))
    return ListedClips(clips, len(rows))


def json_clips(path: Path, classes: ClassIndex, dataset: str) -> ListedClips:
    """The clips of an AudioMAE JSON list with their label sets; missing files left out."""
    data = read_json(path, dataset)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: missing field 'data' (a list of {{'wav': ..., 'labels': ...}})")
    index = classes.index_of()
    clips = []
    for number, item in enumerate(data["data"]):
        wav = item.get("wav") if isinstance(item, dict) else None
        mids = item.get("labels") if isinstance(item, dict) else None
        if not isinstance(wav, str) or not wav or not isinstance(mids, str):
            raise DataError(f"{path}: data[{number}] needs the fields 'wav' and 'labels'")
        labels = label_set(mids.split(","), index, path, f"data[{number}]")
        clip_path = Path(wav) if Path(wav).is_absolute() else path.parent / wav
        if clip_path.is_file():
            clips.append(Clip(path=clip_path, label=-1, labels=labels))
    return ListedClips(clips, len(data["data"]))


@dataclass(frozen=True)
class Layout:
    """Where a data set in the AudioSet layout keeps its files (relative to ``root``)."""

    root: Path
    train_list: str = "balanced_train_segments.csv"
    eval_list: str = "eval_segments.csv"
    class_index: str = "class_labels_indices.csv"
    audio_dir: str = "audio"
    max_missing: float = 0.2


def load_layout(
    layout: Layout, clip_seconds: float, dataset: str, train: bool = True
) -> DataSplits:
    """The multi-label splits of a data set in the AudioSet layout (without ``train``: the
    training split empty, its lists unread and its clips unchecked)."""
    classes = read_class_index(layout.root / layout.class_index, dataset)
    audio = index_audio(layout.root / layout.audio_dir)
    training = listed_clips(layout, layout.train_list, classes, audio, dataset) if train else []
    return DataSplits(
        classes=classes.names,
        train=training,
        eval=listed_clips(layout, layout.eval_list, classes, audio, dataset),
        clip_seconds=clip_seconds,
        root=layout.root,
        multi_label=True,
    )


def listed_clips(
    layout: Layout, lists: str, classes: ClassIndex, audio: dict[str, Path], dataset: str
) -> list[Clip]:
    """The clips of the comma-separated ``lists`` (CSV or JSON) whose audio was found."""
    clips = []
    for name in (n.strip() for n in lists.split(",") if n.strip()):
        path = layout.root / name
        if path.suffix.lower() == ".json":
            found = json_clips(path, classes, dataset)
        else:
            found = segment_clips(path, classes, audio, dataset)
        check_missing(layout, path, found, dataset)
        clips.extend(found.clips)
    return clips


def check_missing(layout: Layout, path: Path, found: ListedClips, dataset: str) -> None:
    """One line on the listed clips without audio; an error above ``max_missing``."""
    if not found.missing:
        return
    share = found.missing / found.listed
    line = (
        f"{path}: {found.missing} of {found.listed} listed clips ({100 * share:.1f}%) "
        f"have no audio file under {layout.root / layout.audio_dir}"
    )
    if share > layout.max_missing or not found.clips:
        limit = f"{100 * layout.max_missing:g}%"
        raise DataError(f"{dataset}: {line}, more than dataset.max_missing ({limit})")
    note(f"{dataset}: {line}; left out")


def write_class_index(path: Path, mids: list[str], names: list[str]) -> None:
    """A class index in the published layout."""
    lines = ["index,mid,display_name"]
    lines += [f'{k},{mid},"{name}"' for k, (mid, name) in enumerate(zip(mids, names, strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_segments(path: Path, segments: list[Segment], num_classes: int) -> None:
    """A segment CSV in the published layout (three comment lines, quoted label lists)."""
    positives = sum(len(s.mids) for s in segments)
    lines = [
        "# Segments csv created by the harness (AudioSet layout)",
        f"# num_ytids={len(segments)}, num_segs={len(segments)}, "
        f"num_unique_labels={num_classes}, num_positive_labels={positives}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for s in segments:
        lines.append(f'{s.ytid}, {s.start:.3f}, {s.end:.3f}, "{",".join(s.mids)}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
