"""The end of a run's data path: its record (the store's row) and its run folder."""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

import harness
from harness.api import Dataset, DataSplits
from harness.engine.metrics_log import flat_hparams
from harness.registry.config import RunConfig
from harness.results.store import RunRecord, write_json
from harness.util.faults import checkpoint
from harness.util.files import write_text_atomic


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


def git_dirty() -> bool | None:
    """Whether the harness's git checkout has uncommitted changes to tracked files (None
    outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(harness.__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started the run, as a shell would read it (``harness run ...``)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("__main__.py", "harness"):
        argv[0] = "harness"
    return shlex.join(argv)


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line and whether the code differed from its commit."""
    return {"command": command_line(argv), "git_dirty": git_dirty()}


def parameter_counts(modules: dict[str, nn.Module]) -> dict[str, dict[str, int]]:
    """``{"total": n, "trainable": m}`` of each module's own parameters (a parameter two of
    them share counts for the first) and of all of them (``all``)."""
    seen: set[int] = set()
    counts: dict[str, dict[str, int]] = {}
    for name, module in modules.items():
        own = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in own)
        counts[name] = {
            "total": sum(p.numel() for p in own),
            "trainable": sum(p.numel() for p in own if p.requires_grad),
        }
    counts["all"] = {key: sum(c[key] for c in counts.values()) for key in ("total", "trainable")}
    return counts


def describe_parameters(counts: dict[str, dict[str, int]]) -> str:
    """One run-log line of :func:`parameter_counts`."""
    parts = "; ".join(
        f"{name} {c['total']:,} ({c['trainable']:,} trainable)"
        for name, c in counts.items()
        if name != "all"
    )
    every = counts["all"]
    return f"parameters: {every['total']:,} ({every['trainable']:,} trainable); {parts}"


def config_lines(cfg: RunConfig) -> list[str]:
    """The resolved configuration, one run-log line per section (``key=value`` pairs)."""
    lines = [f"config hash {cfg.config_hash()}"]
    for section, values in cfg.as_dict().items():
        flat = ", ".join(
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
            for key, value in flat_hparams(values).items()
        )
        lines.append(f"config {section}: {flat}")
    return lines


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


def clip_predictions(splits: DataSplits, probabilities: Tensor) -> list[dict[str, Any]]:
    """One row per evaluation clip: ``clip`` (its path under the data set's root),
    ``device``, ``label`` and ``predicted`` (class names; ``label`` None when unlabeled)
    and ``probabilities`` (class name -> probability)."""
    rows = []
    for clip, probs in zip(splits.eval, probabilities.tolist(), strict=True):
        path = clip.path
        if splits.root is not None and path.is_relative_to(splits.root):
            path = path.relative_to(splits.root)
        rows.append(
            {
                "clip": str(path),
                "device": clip.device,
                "label": splits.classes[clip.label] if clip.label >= 0 else None,
                "predicted": splits.classes[max(range(len(probs)), key=probs.__getitem__)],
                "probabilities": dict(zip(splits.classes, probs, strict=True)),
            }
        )
    return rows


def write_samples(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))


def write_run_folder(
    folder: Path,
    record: RunRecord,
    experiment: TrainedRun,
    tables: dict[str, str],
    extra_weights: dict[str, Any] | None = None,
) -> None:
    """The run folder: config, metrics, record, weights (and ``extra_weights``: file name
    -> state, e.g. ``ema.pt``), log, tables and the training records."""
    write_json(folder / "config.json", record.config)
    checkpoint("staging")
    write_json(folder / "metrics.json", record.metrics)
    write_json(folder / "record.json", {k: v for k, v in record.__dict__.items() if k != "config"})
    torch.save(experiment.backbone.state_dict(), folder / "backbone.pt")
    torch.save(experiment.method.state_dict(), folder / "method.pt")
    for name, state in (extra_weights or {}).items():
        torch.save(state, folder / name)
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
