"""Cheap checks before a run trains: the output folders, every audio file's header, and
(after evaluation) that every metric is finite."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Collection
from pathlib import Path

from harness.api import SPLIT_NAMES, DataSplits
from harness.data.audio import check_header
from harness.util.errors import DataError, HarnessError


def check_output_folder(out_dir: Path) -> None:
    """Preflight: ``out_dir`` accepts a file, or can be created (nothing is created here)."""
    if out_dir.is_dir():
        try:
            with tempfile.TemporaryFile(dir=out_dir):
                pass
        except OSError as err:
            raise HarnessError(f"output folder {out_dir} is not writable: {err}") from None
        return
    ancestor = out_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if out_dir.exists() or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise HarnessError(f"output folder {out_dir} cannot be created (check {ancestor})")


def check_clips_inside_root(
    splits: DataSplits, dataset: str, allow_outside: bool, skip: Collection[str] = ()
) -> None:
    """Every clip file resolves inside the data set's root (``..``, absolute paths and
    symlinks included), unless ``run.data_outside_root`` allows it; nothing is read
    (``skip``: splits whose files are never read, e.g. a manifest's training split)."""
    if allow_outside or splits.root is None:
        return
    root = Path(os.path.realpath(splits.root))
    seen: set[Path] = set()
    for split in (name for name in SPLIT_NAMES if name not in skip):
        for clip in splits.split(split):
            for path in clip.segments or (clip.path,):
                if path in seen:
                    continue
                seen.add(path)
                if not Path(os.path.realpath(path)).is_relative_to(root):
                    raise DataError(
                        f"data set '{dataset}': clip file {path} ({split} split) resolves "
                        f"outside the data set root {splits.root}; set "
                        "run.data_outside_root=true to allow files outside it"
                    )


def check_audio_headers(splits: DataSplits, skip: Collection[str] = ()) -> None:
    """Preflight: every file of every split opens and its header's data is all there
    (``skip``: splits read from elsewhere, e.g. the training split of a shards run)."""
    seen: set[Path] = set()
    for split in SPLIT_NAMES:
        if split in skip:
            continue
        for clip in splits.split(split):
            for path in clip.segments or (clip.path,):
                if path not in seen:
                    seen.add(path)
                    check_header(path)


def check_metrics(metrics: dict[str, float]) -> None:
    """No NaN or infinite metric may be stored: the run fails instead, naming them."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise HarnessError(f"run failed: non-finite metrics ({listed}); nothing was stored")
