"""Loading backbone checkpoints (``--set backbone.checkpoint=PATH``), shared by every backbone.

A checkpoint file is read with ``torch.load(weights_only=True)``, which also accepts an
``argparse.Namespace`` (AudioMAE and MAE store their training ``args`` as one) and no other
pickled class, and may hold a
raw state dict or one wrapped as ``{'model': ...}``, ``{'state_dict': ...}``
(Lightning), ``{'module': ...}`` or ``{'net': ...}``. Then:

1. The backbone inspects the loaded object first with
   :meth:`~harness.api.Backbone.check_checkpoint` (e.g. to compare a stored ``cfg`` with
   its size and raise an error that names the right size).
2. Wrapper prefixes (``module.``, ``net.``, ``model.``, ``backbone.``,
   ``_orig_mod.``) are stripped where the model itself has no key under them.
3. The backbone remaps keys with :meth:`~harness.api.Backbone.adapt_state_dict`
   (e.g. to rename a published layout, or to set aside decoder keys it does not use);
   the lines it leaves in :attr:`~harness.api.Backbone.load_notes` are added to the report.
4. A backbone whose published checkpoints carry their classifier names its key
   prefixes in ``head_prefixes`` (PaSST: ``("head.", "head_dist.")``). Those
   tensors are kept in ``backbone.pretrained_head_state`` for ``build_head``
   when their shapes fit a head for ``num_classes``; when the class count
   differs the head is replaced, which the report notes (not an error).
5. Every other key is compared with the backbone strictly: missing keys,
   unexpected keys and shape mismatches are reported together in one
   one-line :class:`~harness.util.errors.DataError`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from harness.api import Backbone
from harness.nn.torch_files import load_torch_file
from harness.registry.pretrained import PREFIX, resolve_checkpoint
from harness.util.errors import DataError

WRAPPER_KEYS = ("model", "state_dict", "module", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "net.", "model.", "backbone.")
SAFE_GLOBALS = [argparse.Namespace]
"""The one class beyond tensors and containers that ``weights_only`` loading accepts."""
LISTED_KEYS = 6
"""Keys named per category in a mismatch message before the rest is counted."""


@dataclass
class CheckpointReport:
    """What a checkpoint load did, as lines for the run log."""

    path: Path
    loaded: int = 0
    """Backbone tensors loaded."""
    head: str = "none"
    """``"none"`` (the file has no head), ``"kept"`` (used by ``build_head``) or ``"replaced"``."""
    notes: list[str] = field(default_factory=list)


def load_backbone_checkpoint(
    backbone: Backbone,
    path: str | Path,
    num_classes: int | None = None,
    loaded: LoadedCheckpoint | None = None,
) -> CheckpointReport:
    """Load ``path`` into ``backbone`` strictly; see the module docstring.

    :param num_classes: the task's class count, to decide whether a checkpoint's
        classifier head fits; ``None`` keeps any head for ``build_head`` to check.
    :raises DataError: the file is missing or unreadable, holds no state dict, or
        does not fit the backbone (one line naming missing, unexpected and
        mis-shaped keys).
    :param loaded: the file as :func:`verify_backbone_checkpoint` read it (not read again).
    """
    path, raw = read_backbone_checkpoint(backbone, path, loaded)
    body_state, head_state = split_state(backbone, raw, path)
    report = CheckpointReport(path)
    report.notes.extend(backbone.load_notes)
    head_problems = settle_head(backbone, head_state, num_classes, report)
    problems = compare_state(body_state, backbone.state_dict()) + head_problems
    if problems:
        raise DataError(
            f"checkpoint {path} does not fit backbone '{backbone.name}': {'; '.join(problems)}"
        )
    backbone.load_state_dict(body_state, strict=True)
    report.loaded = len(body_state)
    report.notes.insert(0, f"loaded {report.loaded} backbone tensors from {path}")
    return report


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A backbone checkpoint file read and checked at start-up, kept for the load."""

    path: Path
    raw: Any


def verify_backbone_checkpoint(backbone: Backbone, path: str | Path) -> LoadedCheckpoint:
    """Read ``path`` and check that it fits ``backbone`` without loading it: run at start-up,
    before any data is generated or decoded, so a file that is not a checkpoint of this
    backbone (a folder, empty, text, truncated, pickled code, wrong keys or shapes) stops
    the run at once. The head is checked later, against the task's class count."""
    resolved, raw = read_backbone_checkpoint(backbone, path)
    body_state, _ = split_state(backbone, raw, resolved)
    problems = compare_state(body_state, backbone.state_dict())
    if problems:
        raise DataError(
            f"checkpoint {resolved} does not fit backbone '{backbone.name}': {'; '.join(problems)}"
        )
    return LoadedCheckpoint(resolved, raw)


def read_backbone_checkpoint(
    backbone: Backbone, path: str | Path, loaded: LoadedCheckpoint | None = None
) -> tuple[Path, Any]:
    """The resolved file and its object, checked by the backbone (``check_checkpoint``)."""
    if loaded is not None:
        return loaded.path, loaded.raw
    downloaded = str(path).startswith(PREFIX)
    resolved = resolve_checkpoint(type(backbone), path)  # downloads a "pretrained:NAME" once
    raw = read_checkpoint(resolved, downloaded)
    backbone.check_checkpoint(raw)
    return resolved, raw


def split_state(
    backbone: Backbone, raw: Any, path: Path
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The checkpoint's backbone tensors (prefixes stripped, keys adapted) and its head's."""
    state = unwrap_state_dict(raw, path)
    state = strip_wrapper_prefixes(state, backbone.state_dict().keys())
    state = backbone.adapt_state_dict(state)
    head_prefixes = tuple(backbone.head_prefixes)
    head_state = (
        {k: v for k, v in state.items() if k.startswith(head_prefixes)} if head_prefixes else {}
    )
    return {k: v for k, v in state.items() if k not in head_state}, head_state


def read_checkpoint(path: Path, downloaded: bool = False) -> Any:
    """The object in a checkpoint file (``torch.load(weights_only=True)``); a file that is not
    one is one line naming it and what is wrong (a ``downloaded`` one: delete it to download
    it again)."""
    try:
        # AudioMAE's save_model stores ``args`` as an argparse.Namespace: allow exactly that class
        return load_torch_file(path, "checkpoint", SAFE_GLOBALS)
    except DataError as err:
        advice = "; delete it to download it again" if downloaded and path.is_file() else ""
        raise DataError(f"{err}{advice}") from None


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside ``obj``: itself, or under a wrapper key such as ``'model'``."""
    while isinstance(obj, Mapping) and not is_state_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not is_state_dict(obj):
        found = (
            f"keys {', '.join(map(str, list(obj)[:8]))}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise DataError(
            f"checkpoint {path} holds no state dict (found {found}); expected a mapping of "
            f"tensors, possibly under {' or '.join(repr(k) for k in WRAPPER_KEYS)}"
        )
    return dict(obj)


def is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def strip_wrapper_prefixes(
    state: dict[str, Tensor], model_keys: Iterable[str]
) -> dict[str, Tensor]:
    """Strip ``module.``/``net.``/... where the model has no key under that prefix."""
    model_keys = list(model_keys)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            has_prefix = any(k.startswith(prefix) for k in state)
            if has_prefix and not any(k.startswith(prefix) for k in model_keys):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                changed = True
    return state


def settle_head(
    backbone: Backbone,
    head_state: dict[str, Tensor],
    num_classes: int | None,
    report: CheckpointReport,
) -> list[str]:
    """Keep the checkpoint's head for ``build_head`` or note its replacement.

    Returns problems with head key names (shapes that differ only mean a new class count).
    """
    if not head_state:
        return []
    if num_classes is None:
        backbone.pretrained_head_state = head_state
        report.head = "kept"
        report.notes.append(
            f"kept the checkpoint's classification head ({len(head_state)} tensors)"
        )
        return []
    fresh = backbone.build_head(num_classes).state_dict()
    missing = sorted(set(fresh) - set(head_state))
    unexpected = sorted(set(head_state) - set(fresh))
    if missing or unexpected:
        return [f"head {p}" for p in key_problems(missing, unexpected, [])]
    differing = [k for k in fresh if fresh[k].shape != head_state[k].shape]
    if differing:
        key = max(differing, key=lambda k: fresh[k].ndim)
        backbone.pretrained_head_state = None
        report.head = "replaced"
        theirs, ours = list(head_state[key].shape), list(fresh[key].shape)
        report.notes.append(
            f"classification head replaced: the checkpoint's {key} is {theirs}, "
            f"the task needs {ours} ({num_classes} classes)"
        )
        return []
    backbone.pretrained_head_state = head_state
    report.head = "kept"
    report.notes.append(f"kept the checkpoint's classification head ({num_classes} classes)")
    return []


def compare_state(state: Mapping[str, Tensor], model_state: Mapping[str, Tensor]) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against the model's, as phrases."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    shapes = [
        f"{k} checkpoint {list(state[k].shape)} vs model {list(model_state[k].shape)}"
        for k in model_state
        if k in state and state[k].shape != model_state[k].shape
    ]
    return key_problems(missing, unexpected, shapes)


def key_problems(missing: list[str], unexpected: list[str], shapes: list[str]) -> list[str]:
    out = []
    if missing:
        out.append(f"missing keys ({len(missing)}): {summarize_keys(missing)}")
    if unexpected:
        out.append(f"unexpected keys ({len(unexpected)}): {summarize_keys(unexpected)}")
    if shapes:
        out.append(f"shape mismatch ({len(shapes)}): {limited(shapes)}")
    return out


_INDEXED = re.compile(r"^(.*?)\.(\d+)\.(.*)$")


def summarize_keys(keys: list[str]) -> str:
    """Keys for a message; numbered sub-modules collapse to ``blocks.{3..11}.*`` (listed first)."""
    groups: dict[str, set[int]] = {}
    counts: dict[str, int] = {}
    singles = []
    for key in keys:
        match = _INDEXED.match(key)
        if match:
            groups.setdefault(match.group(1), set()).add(int(match.group(2)))
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        else:
            singles.append(key)
    items = []
    for prefix, indices in groups.items():
        if len(indices) == 1:
            items.extend(k for k in keys if k.startswith(f"{prefix}.{next(iter(indices))}."))
        else:
            items.append(
                f"{prefix}.{{{index_ranges(sorted(indices))}}}.* ({counts[prefix]} tensors)"
            )
    return limited(items + singles)


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0..2,5"``."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def limited(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED_KEYS])
    return shown if len(items) <= LISTED_KEYS else f"{shown} and {len(items) - LISTED_KEYS} more"
