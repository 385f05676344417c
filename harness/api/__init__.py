"""The public plugin API: everything a plugin needs from the core, besides :mod:`harness.nn`.

Owns the component base classes (:class:`Backbone`, :class:`Method`, :class:`Augmentation`,
:class:`Dataset`, :class:`Protocol`, :class:`Logger`), the data they exchange (:class:`Clip`,
:class:`DataSplits`, :class:`Batch`, ...), the training and evaluation contracts
(:class:`Training`, :class:`EvalContext`), the hook specifications, config domains and
the errors a plugin raises. May import :mod:`harness.util` only.

Importing this package is cheap: the torch-backed names load on first use, so the command
line can read hook specifications and config domains without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from harness.api.columns import PERCENT, Column, log_value_text, percent_of_fraction
from harness.api.domains import (
    FINITE,
    Domain,
    at_least,
    between,
    check_domains,
    domain_map,
    field_domains,
    field_help,
    non_negative,
    positive,
    unit,
)
from harness.api.hookspecs import hookimpl, hookspec
from harness.api.pretrained import Pretrained
from harness.util.errors import DataError, HarnessError, Interrupted, UsageError

_LAZY = {
    "harness.api.components": (
        "Augmentation",
        "Component",
        "SPLIT_NAMES",
        "SplitName",
        "Backbone",
        "Batch",
        "Clip",
        "DataSplits",
        "Dataset",
        "EmbeddingHead",
        "Encoded",
        "EvalContext",
        "KINDS",
        "LabelKind",
        "Logger",
        "MaskedBackbone",
        "MaskedEncoding",
        "Method",
        "NoConfig",
        "OptimizerSettings",
        "Phase",
        "Protocol",
        "ProtocolResult",
        "SplitAudio",
        "StepOutput",
        "Task",
        "multi_hot",
    ),
    "harness.api.settings": ("RunSettings",),
    "harness.api.training": (
        "FeatureData",
        "OptimizerSettings",
        "Phase",
        "Sampling",
        "Stage",
        "Training",
        "TrainingJob",
        "TrainingResult",
        "trainable_groups",
    ),
    "harness.util.cache": ("DONE_MARKER", "build_once", "cache_root"),
    "harness.util.progress": ("note", "progress"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from harness.api.components import (
        KINDS,
        SPLIT_NAMES,
        Augmentation,
        Backbone,
        Batch,
        Clip,
        Component,
        Dataset,
        DataSplits,
        EmbeddingHead,
        Encoded,
        EvalContext,
        LabelKind,
        Logger,
        MaskedBackbone,
        MaskedEncoding,
        Method,
        NoConfig,
        Protocol,
        ProtocolResult,
        SplitAudio,
        SplitName,
        StepOutput,
        Task,
        multi_hot,
    )
    from harness.api.settings import RunSettings
    from harness.api.training import (
        FeatureData,
        OptimizerSettings,
        Phase,
        Sampling,
        Stage,
        Training,
        TrainingJob,
        TrainingResult,
        trainable_groups,
    )
    from harness.util.cache import DONE_MARKER, build_once, cache_root
    from harness.util.progress import note, progress


def __getattr__(name: str) -> Any:
    """Load a torch-backed name of the API on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
    value = vars(import_module(module))[name]
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DONE_MARKER",
    "FINITE",
    "KINDS",
    "PERCENT",
    "SPLIT_NAMES",
    "Augmentation",
    "Backbone",
    "Batch",
    "Clip",
    "Column",
    "Component",
    "DataError",
    "DataSplits",
    "Dataset",
    "Domain",
    "EmbeddingHead",
    "Encoded",
    "EvalContext",
    "FeatureData",
    "HarnessError",
    "Interrupted",
    "LabelKind",
    "Logger",
    "MaskedBackbone",
    "MaskedEncoding",
    "Method",
    "NoConfig",
    "OptimizerSettings",
    "Phase",
    "Pretrained",
    "Protocol",
    "ProtocolResult",
    "RunSettings",
    "Sampling",
    "SplitAudio",
    "SplitName",
    "Stage",
    "StepOutput",
    "Task",
    "Training",
    "TrainingJob",
    "TrainingResult",
    "UsageError",
    "at_least",
    "between",
    "build_once",
    "cache_root",
    "check_domains",
    "domain_map",
    "field_domains",
    "field_help",
    "hookimpl",
    "hookspec",
    "log_value_text",
    "multi_hot",
    "non_negative",
    "note",
    "percent_of_fraction",
    "positive",
    "progress",
    "trainable_groups",
    "unit",
]
