"""The one training specification the core's trainer runs (:class:`Training`).

Every training of a run is a :class:`Training`: the method's stages (the core turns each
:class:`Stage` a method returns into one), the heads evaluation protocols fit
(:func:`TrainingJob` builds their spec) and trainings with several optimizers, such as a
GAN's discriminator and generator (one :class:`Phase` each). The trainer
(:mod:`harness.engine.trainer`) runs them all with the same precision, devices, DDP,
gradient accumulation and clipping, schedules, metrics logging and hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from harness.api.components import Batch


@dataclass(frozen=True)
class OptimizerSettings:
    """An Adam or AdamW optimizer: the defaults of every parameter group."""

    kind: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class Phase:
    """One optimizer of a training and the parameters it steps.

    A training with several phases calls its model once per phase on every batch,
    ``model(batch, phase.name)``, each call followed by its own backward pass and (at the
    end of a gradient-accumulation window) its own optimizer step.
    """

    name: str
    param_groups: list[dict]
    """Optimizer groups (each may set its own ``lr`` or ``weight_decay``)."""
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)


def trainable_groups(modules: Iterable[nn.Module]) -> list[dict]:
    """One group of every parameter of ``modules`` that requires a gradient (each once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                seen.setdefault(id(param), param)
    return [{"params": list(seen.values())}]


SamplerKind = Literal["uniform", "label-weighted"]


@dataclass(frozen=True)
class Sampling:
    """How a training draws the clips of each epoch (``run.sampler``).

    ``uniform``: every clip once per epoch, in a fresh random order. ``label-weighted``
    (AudioMAE's fine-tuning on the unbalanced AudioSet-2M): ``samples_per_epoch`` clips
    drawn with probability proportional to the clip's weight, the sum over its labels of
    1 / (training clips carrying that label), so rare classes are seen about as often as
    common ones; without ``replacement`` a clip is drawn at most once per epoch.
    """

    kind: SamplerKind = "uniform"
    samples_per_epoch: int = 0
    """Clips drawn per epoch (0: as many as the split has)."""
    replacement: bool = False


@dataclass
class FeatureData:
    """Precomputed inputs of a training (e.g. cached clip embeddings): row ``i`` of
    ``features`` becomes a batch's :attr:`Batch.features`."""

    features: Tensor
    labels: Tensor
    devices: Tensor | None = None
    """Recording-device indices (default: unknown, -1)."""


@dataclass
class Training:
    """One training the core's trainer runs: what trains, on which data, how.

    ``model(batch)`` returns the :class:`StepOutput` of a batch (with several ``phases``:
    ``model(batch, phase_name)``); it is trained in place on the run's device and precision,
    under DDP when several processes run, and logged to ``metrics.jsonl`` and the loggers
    with ``stage = number`` and ``stage_name = name``.
    """

    name: str
    """Shown in logs (``stage_name`` of its log events)."""
    model: nn.Module
    data: Any
    """A split's audio (``EvalContext.audio(split)`` or a subset: batches of waveforms),
    :class:`FeatureData`, or a ready batch source (``__len__``, ``epoch``, ``close``)."""
    epochs: int
    batch_size: int
    phases: list[Phase]
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    """``cosine``: linear warm-up over ``warmup_fraction`` of the steps, then cosine to 0;
    ``plateau``: linear warm-up over ``warmup_epochs``, then ReduceLROnPlateau on the
    validation loss (the training loss without validation)."""
    warmup_fraction: float = 0.0
    warmup_epochs: int = 0
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    accum: int = 1
    """Micro-batches whose gradients add up to one optimizer step."""
    grad_clip: float = 0.0
    """Clip the gradients' global norm of each optimizer to this (0: off)."""
    patience: int = 0
    """Stop after this many epochs without a drop of the epoch's mean loss by more than
    ``min_delta`` (0: train every epoch)."""
    min_delta: float = 0.0
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit)."""
    prepare: Callable[[Batch], Batch] | None = None
    """Turns a loaded batch into the step's input (default: ``frontend`` features)."""
    frontend: nn.Module | None = None
    """Maps waveforms to features (run without gradient) for waveform data."""
    train_modules: tuple[nn.Module, ...] = ()
    """Modules set to training mode before every epoch (default: ``model``)."""
    drop_last: bool = True
    seed: int = 0
    own_rng: bool = True
    """Seed the global RNGs with ``seed`` for this training and restore them after (protocol
    jobs); off for the method's stages, which continue the run's RNG streams."""
    order: torch.Generator | None = None
    """Shuffles the batches of every epoch (default: a generator seeded with ``seed``)."""
    number: int = 0
    """``stage`` of its log events: 1, 2, ... for the method's stages, 0 otherwise."""
    counts_globally: bool = False
    """Whether its optimizer steps count in the run's ``global_step`` (the method's stages)."""
    log_epochs: bool = True
    """Whether each epoch's line goes into the run log (off for jobs of many short epochs)."""
    validate: Callable[[], dict[str, float]] | None = None
    """After every epoch: values for the epoch's event and log line (e.g. a protocol's
    held-out score for model selection); called on every process."""
    sampling: Sampling = field(default_factory=Sampling)
    """How each epoch's clips are drawn from waveform data (default: each once, shuffled)."""


@dataclass
class TrainingResult:
    epoch_losses: list[float]
    """Mean training loss of each epoch trained."""
    steps: int

    @property
    def epochs(self) -> int:
        return len(self.epoch_losses)


@dataclass(frozen=True)
class Stage:
    """One phase of a method's staged training (:meth:`Method.stages`).

    The core turns it into a :class:`Training` over the backbone and the method with the
    run's optimizer settings and a fresh optimizer; positional arguments are
    ``Stage(name, epochs, lr, batch_size, backbone_blocks, layer_decay, note)``.
    """

    name: str
    epochs: int
    lr: float
    batch_size: int
    backbone_blocks: int | None = None
    """Top backbone blocks trained, with what lies above them; 0 freezes the whole backbone;
    None leaves ``requires_grad`` as it is."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay (see :meth:`Backbone.param_groups`); used when
    ``backbone_blocks`` is set."""
    note: str = ""
    """Why the stage runs or what it starts from, for the run log."""


def TrainingJob(
    name: str,
    model: nn.Module,
    data: Any,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: Literal["adam", "adamw"] = "adam",
    weight_decay: float = 0.0,
    param_groups: list[dict] | None = None,
    schedule: Literal["constant", "cosine"] = "constant",
    warmup_fraction: float = 0.0,
    patience: int = 0,
    min_delta: float = 0.0,
    frontend: nn.Module | None = None,
    drop_last: bool = True,
    seed: int = 0,
    log_epochs: bool = True,
    validate: Callable[[], dict[str, float]] | None = None,
    sampling: Sampling | None = None,
) -> Training:
    """The :class:`Training` of an evaluation protocol's model with one optimizer (kept for
    plugins written against the former job type; the arguments are those of
    :class:`Training`). ``param_groups``: default every trainable parameter of ``model``.
    Run it with :meth:`EvalContext.fit`: seeded by ``seed``, the global RNGs kept."""
    settings = OptimizerSettings(kind=optimizer, lr=lr, weight_decay=weight_decay)
    groups = param_groups if param_groups is not None else trainable_groups([model])
    return Training(
        name=name,
        model=model,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        phases=[Phase(name, groups, settings)],
        schedule=schedule,
        warmup_fraction=warmup_fraction,
        patience=patience,
        min_delta=min_delta,
        frontend=frontend,
        drop_last=drop_last,
        seed=seed,
        log_epochs=log_epochs,
        validate=validate,
        sampling=sampling or Sampling(),
    )
