"""In-progress run state: per-epoch checkpoints under ``OUT/.partial`` and exact resume.

While a run trains, everything needed to continue it exactly lives in
``OUT/.partial/<run id>/`` (never in the final run folder, so a failed run leaves
no finished record): ``config.json`` (the run's configuration), ``state.json``
(where it stands, for people and ``harness runs --partial``) and one
``rank<r>.pt`` per training process (model, method state including non-persistent
buffers such as NNCLR's queue, optimizer, schedulers, grad scaler, every RNG
state, the data-order generator and the position in the stages). Every file is
written to a temporary name and renamed into place, and read back with
``torch.load(weights_only=True)``: RNG states are stored as tensors and plain types.
A finished run removes its folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.nn.torch_files import load_torch_file
from harness.registry.config import hashed_config
from harness.results.store import PARTIAL, committed_partials
from harness.util.errors import DataError, HarnessError, UsageError, naming
from harness.util.faults import checkpoint
from harness.util.files import write_text_atomic

FORMAT = 1
SCALARS = (int, float, bool, str)


def partial_root(out_dir: Path) -> Path:
    return out_dir / PARTIAL


def rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank{rank}.pt"


@dataclass(frozen=True)
class Position:
    """Where a checkpoint stands: stage number (1-based), finished epochs of that stage,
    optimizer steps of that stage, and micro-batches done in the current epoch (0 at an
    epoch boundary)."""

    stage: int = 1
    epoch: int = 0
    step: int = 0
    micro: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"stage": self.stage, "epoch": self.epoch, "step": self.step, "micro": self.micro}


@dataclass
class Partial:
    """One in-progress run folder and what its ``state.json`` / ``config.json`` say."""

    folder: Path
    config: dict[str, Any]
    state: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.state.get("run_id", self.folder.name))

    @property
    def config_hash(self) -> str:
        return str(self.state.get("config_hash", ""))

    def describe(self) -> str:
        s = self.state
        where = f"stage {s.get('stage', '?')}/{s.get('stages', '?')} ('{s.get('stage_name', '?')}')"
        epochs = f"epoch {s.get('epoch', '?')}/{s.get('stage_epochs', '?')}"
        if s.get("micro"):
            epochs += f" + {s['micro']} batches"
        return (
            f"{self.folder}  {s.get('backbone', '?')}/{s.get('method', '?')}/"
            f"{s.get('dataset', '?')}  {where}, {epochs} done, updated {s.get('updated', '?')}"
        )


def read_partial(folder: Path) -> Partial:
    try:
        config = json.loads((folder / "config.json").read_text())
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise HarnessError(f"in-progress run {folder} is unreadable: {err}") from None
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise HarnessError(f"in-progress run {folder} is unreadable: not a JSON object")
    return Partial(folder, config, state)


def list_partials(out_dir: Path, stored: Collection[str] = ()) -> list[Partial]:
    """Interrupted runs under ``out_dir`` (newest first); unreadable folders, and those of
    runs that finished (in ``stored`` or with their run folder in place) are skipped."""
    root = partial_root(out_dir)
    finished = set(committed_partials(out_dir, stored))
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder in finished:
            continue
        if folder.is_dir() and (folder / "state.json").is_file():
            try:
                found.append(read_partial(folder))
            except HarnessError:
                continue
    return sorted(found, key=lambda p: str(p.state.get("updated", "")), reverse=True)


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in differing_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def find_resume(
    out_dir: Path, config: dict[str, Any], config_hash: str, target: str, if_any: bool = False
) -> Partial | None:
    """The in-progress run to continue: ``target`` is ``auto`` (the newest of this config
    under ``out_dir``) or a folder. None only with ``if_any`` and nothing to resume."""
    if target != "auto":
        path = Path(target)
        folder = path.parent if path.is_file() else path
        if not (folder / "state.json").is_file():
            raise UsageError(f"--resume {target}: no in-progress run there (no state.json)")
        partial = read_partial(folder)
        check_same_config(partial, config)
        return partial
    partials = list_partials(out_dir)
    same = [p for p in partials if p.config_hash == config_hash]
    if same:
        return same[0]
    if if_any:
        return None
    if partials:
        keys = differing_keys(hashed_config(partials[0].config), hashed_config(config))
        raise UsageError(
            f"--resume: no interrupted run of this configuration in {partial_root(out_dir)}; "
            f"the newest ({partials[0].folder.name}) differs in {', '.join(keys) or 'its hash'}"
        )
    raise UsageError(f"--resume: nothing to resume in {partial_root(out_dir)}")


def check_same_config(partial: Partial, config: dict[str, Any]) -> None:
    keys = differing_keys(hashed_config(partial.config), hashed_config(config))
    if keys:
        raise UsageError(
            f"--resume {partial.folder}: the configuration differs in {', '.join(keys)}"
        )


# -- state --------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states as tensors and plain types."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def module_state(module: nn.Module) -> dict[str, Any]:
    """Everything training changes in a module: its state dict, every buffer (including
    non-persistent ones), plain scalar attributes of its sub-modules (a queue's pointer),
    and which parameters are trainable."""
    scalars = {}
    for name, sub in module.named_modules():
        for key, value in vars(sub).items():
            if not key.startswith("_") and key != "training" and isinstance(value, SCALARS):
                scalars[f"{name}:{key}"] = value
    return {
        "state_dict": module.state_dict(),
        "buffers": {k: v.detach().clone() for k, v in module.named_buffers()},
        "scalars": scalars,
        "requires_grad": {k: p.requires_grad for k, p in module.named_parameters()},
    }


def load_module_state(module: nn.Module, state: dict[str, Any], what: str) -> None:
    try:
        module.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise HarnessError(f"checkpoint does not fit the {what}: {err}") from None
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for key, value in state["buffers"].items():
            if key not in buffers or buffers[key].shape != value.shape:
                raise HarnessError(f"checkpoint does not fit the {what}: buffer {key}")
            buffers[key].copy_(value)
    modules = dict(module.named_modules())
    for key, value in state["scalars"].items():
        name, _, attr = key.rpartition(":")
        if name in modules:
            setattr(modules[name], attr, value)
    for key, param in module.named_parameters():
        if key in state["requires_grad"]:
            param.requires_grad_(state["requires_grad"][key])


CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config_hash": str,
    "world": int,
    "position": dict,
    "backbone": dict,
    "method": dict,
    "rng": dict,
    "log": list,
}
"""The fields every harness checkpoint holds, with their types (checked when it is read)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A rank's checkpoint, read with ``weights_only=True``; a damaged one is one line."""
    if not path.exists():
        raise HarnessError(f"in-progress run {path.parent} has no checkpoint {path.name}")
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise HarnessError(f"checkpoint {path} is not a harness checkpoint (format {FORMAT})")
    wrong = [
        f"{key} ({'missing' if key not in state else type(state[key]).__name__})"
        for key, kind in CHECKPOINT_FIELDS.items()
        if not isinstance(state.get(key), kind)
    ]
    wrong += [
        f"{key}.state_dict"
        for key in ("backbone", "method")
        if isinstance(state.get(key), dict) and not isinstance(state[key].get("state_dict"), dict)
    ]
    if wrong:
        raise DataError(
            f"checkpoint {path} is not a complete harness checkpoint: {', '.join(wrong)}"
        )
    return state


def check_fits(path: Path, saved: Mapping[str, Any], module: nn.Module, what: str) -> None:
    """Refuse, before any work, a checkpoint whose ``what`` tensors do not fit ``module``
    (missing or mis-shaped keys), as one line naming the file. Keys the module lacks are
    left to the full load after set-up (a method may add modules to the backbone)."""
    ours = module.state_dict()
    missing = [k for k in ours if k not in saved]
    shapes = [
        k
        for k in ours
        if k in saved
        and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != ours[k].shape)
    ]
    problems = [
        f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("mis-shaped", shapes))
        if keys
    ]
    if problems:
        raise DataError(f"checkpoint {path} does not fit the {what}: {'; '.join(problems)}")


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename; on failure no file is left."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path):
            torch.save(obj, tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def start_partial(folder: Path, config: dict[str, Any]) -> None:
    """Create the in-progress folder with its configuration (rank 0)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint("partial")  # the kill suite's stage: the folder exists, nothing in it yet
        write_text_atomic(folder / "config.json", json.dumps(config, indent=2, sort_keys=True))
    except OSError as err:
        raise HarnessError(f"cannot write in-progress run folder {folder}: {err}") from None


def write_state(folder: Path, info: dict[str, Any]) -> None:
    info = {**info, "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    write_text_atomic(folder / "state.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def remove_partial(folder: Path) -> None:
    """Remove an in-progress folder (and ``.partial`` itself once it is empty)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # other runs' state is still there
        folder.parent.rmdir()
