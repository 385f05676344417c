"""The end of a run's data path: its record (the store's row) and its run folder."""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

import harness
from harness.api import Dataset
from harness.results.store import RunRecord, write_json
from harness.util.faults import checkpoint


@dataclass
class RunResult:
    record: RunRecord
    tables: dict[str, str] = field(default_factory=dict)


class TrainedRun(Protocol):
    """What the run folder is written from: the trained models, the run log and the
    in-progress folder whose training records it keeps."""

    backbone: nn.Module
    method: nn.Module
    log_lines: list[str]
    partial_dir: Path | None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(harness.__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


KEY_PACKAGES = ("torch", "torchaudio", "numpy", "scipy", "scikit-learn", "timm")


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for a package that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def environment(dataset_cls: type[Dataset] | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "packages": package_versions(),
        "data_generator_version": dataset_cls.generator_version if dataset_cls else None,
    }


def write_run_folder(
    folder: Path, record: RunRecord, experiment: TrainedRun, tables: dict[str, str]
) -> None:
    write_json(folder / "config.json", record.config)
    checkpoint("staging")
    write_json(folder / "metrics.json", record.metrics)
    write_json(folder / "record.json", {k: v for k, v in record.__dict__.items() if k != "config"})
    torch.save(experiment.backbone.state_dict(), folder / "backbone.pt")
    torch.save(experiment.method.state_dict(), folder / "method.pt")
    (folder / "log.txt").write_text("\n".join(experiment.log_lines) + "\n")
    (folder / "tables.md").write_text(
        "\n\n".join(f"## {k}\n\n{v}" for k, v in tables.items()) + "\n"
    )
    copy_training_records(experiment.partial_dir, folder)


PARTIAL_ONLY = ("config.json", "state.json")


def copy_training_records(partial: Path | None, folder: Path) -> None:
    """``metrics.jsonl`` and the loggers' files from the in-progress folder (not the
    checkpoints) into the run folder."""
    if partial is None or not partial.is_dir():
        return
    for item in partial.iterdir():
        if item.name in PARTIAL_ONLY or item.name.startswith(".") or item.suffix == ".pt":
            continue
        if item.is_dir():
            shutil.copytree(item, folder / item.name)
        else:
            shutil.copy2(item, folder / item.name)
