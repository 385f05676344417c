"""ESC-50's published metadata table (``meta/esc50.csv``: filename, fold, target, category,
esc10, src_file, take) and its five folds, shared by ``esc50.py`` and ``fewshot_embedded.py``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.api import Clip, DataError
from harness_plugins.datasets._common import (
    check_audio_exists,
    parse_int,
    read_csv,
    require_dir,
)

FIELDS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Esc50Table:
    """The parsed metadata: class names (by target) and clips by fold."""

    classes: list[str]
    clips_by_fold: dict[int, list[Clip]]


def read_esc50(
    root: Path, esc10_only: bool = False, dataset: str = "esc50", checked: Iterable[int] = FOLDS
) -> Esc50Table:
    """Parse ``meta/esc50.csv`` and check that every clip's file of the ``checked`` folds
    exists."""
    require_dir(root, dataset)
    csv_path = root / "meta" / "esc50.csv"
    rows = read_csv(csv_path, FIELDS, dataset)
    if esc10_only:
        rows = [(line, r) for line, r in rows if r["esc10"].lower() == "true"]
    if not rows:
        raise DataError(f"{csv_path}: no clips listed")
    category_of: dict[int, str] = {}
    for line, row in rows:
        target = parse_int(row["target"], csv_path, f"line {line}: field 'target'")
        known = category_of.setdefault(target, row["category"])
        if known != row["category"]:
            raise DataError(
                f"{csv_path}: line {line}: target {target} is '{row['category']}' here "
                f"but '{known}' on an earlier line"
            )
    targets = sorted(category_of)
    label_of = {t: i for i, t in enumerate(targets)}
    clips_by_fold: dict[int, list[Clip]] = {f: [] for f in FOLDS}
    for line, row in rows:
        fold = parse_int(row["fold"], csv_path, f"line {line}: field 'fold'")
        if fold not in clips_by_fold:
            raise DataError(f"{csv_path}: line {line}: fold {fold} is not one of 1-5")
        clips_by_fold[fold].append(
            Clip(
                path=root / "audio" / row["filename"],
                label=label_of[int(row["target"])],
                meta={"fold": str(fold), "src_file": row["src_file"], "take": row["take"]},
            )
        )
    check_audio_exists((c.path for fold in checked for c in clips_by_fold[fold]), csv_path)
    return Esc50Table([category_of[t] for t in targets], clips_by_fold)


def split_by_fold(table: Esc50Table, fold: int) -> tuple[list[Clip], list[Clip]]:
    """(train, eval): ``fold`` is the eval split, the other folds train."""
    train = [c for f, clips in table.clips_by_fold.items() if f != fold for c in clips]
    return train, table.clips_by_fold[fold]
