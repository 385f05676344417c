"""Helpers for testing plugins: a ``Batch``, a ``Task``, a tiny backbone, one training step.

A plugin's own tests build the objects the core would hand its component, without data
sets or a training run::

    from harness.api.testing import TinyBackbone, make_batch, make_task, training_step

    task = make_task(num_classes=3)
    backbone = TinyBackbone()
    batch = make_batch(task, backbone, batch_size=4, seed=0)
    out = training_step(FocalLoss, backbone, task, batch, gamma=2.0)
    assert out.loss.isfinite()

Everything is deterministic for a given ``seed`` and runs on the CPU in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.api import Augmentation, Backbone, Batch, Encoded, Method, StepOutput, Task

__all__ = [
    "TinyBackbone",
    "apply_augmentation",
    "build",
    "make_batch",
    "make_task",
    "training_step",
]


def make_task(
    num_classes: int = 3,
    devices: Sequence[str] = ("a", "b", "c"),
    sample_rate: int = 8000,
    time_axis: int = -1,
) -> Task:
    """A task with classes ``class0`` ... and the given recording devices."""
    return Task(
        classes=[f"class{i}" for i in range(num_classes)],
        devices=list(devices),
        sample_rate=sample_rate,
        time_axis=time_axis,
    )


def make_batch(
    task: Task,
    backbone: Backbone | None = None,
    batch_size: int = 4,
    seconds: float = 0.5,
    seed: int = 0,
) -> Batch:
    """Random waveforms ``[B, T]`` with labels and devices cycling through the task's.

    With a ``backbone``, ``features`` holds its front-end's output (as the core fills it).
    """
    gen = torch.Generator().manual_seed(seed)
    samples = round(seconds * task.sample_rate)
    wave = 0.1 * torch.randn(batch_size, samples, generator=gen)
    batch = Batch(
        wave=wave,
        label=torch.arange(batch_size) % task.num_classes,
        device=torch.arange(batch_size) % max(len(task.devices), 1),
        index=torch.arange(batch_size),
    )
    if backbone is not None:
        with torch.no_grad():
            batch.features = backbone.frontend()(wave)
    return batch


class TinyFrontend(nn.Module):
    """Log power of 16 frequency bands per 256-sample frame, ``[B, 1, 16, frames]``."""

    def forward(self, wave: Tensor) -> Tensor:
        frames = wave.unfold(-1, 256, 128)
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2)[..., :128]
        bands = power.reshape(*power.shape[:-1], 16, 8).mean(-1)
        return torch.log(bands + 1e-6).transpose(-1, -2).unsqueeze(1)


class TinyBackbone(Backbone):
    """Two residual linear blocks over band energies: the smallest real ``Backbone``."""

    name = "tiny-test"
    description = "Two linear blocks over mean band energies (plugin tests)."
    sample_rate = 8000
    stem_prefixes = ("stem",)

    @dataclass
    class Config:
        dim: int = 16
        seed: int = 0

    def __init__(self, config: Config | None = None) -> None:
        config = config or self.Config()
        super().__init__(config)
        torch.manual_seed(config.seed)
        self.embed_dim = config.dim
        self.stem = nn.Linear(16, config.dim)
        self.blocks = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(2))
        self.norm = nn.LayerNorm(config.dim)

    def frontend(self) -> nn.Module:
        return TinyFrontend()

    def forward(self, features: Tensor) -> Encoded:
        x = self.stem(features.mean(-1).squeeze(1))
        tokens = [x]
        for block in self.blocks:
            x = x + torch.tanh(block(x))
            tokens.append(x)
        x = self.norm(x)
        return Encoded(embedding=x, tokens=self.norm(torch.stack(tokens, dim=1)))


def build(component_cls: type, **config: Any) -> Any:
    """``component_cls(Config(**config))``: a component as the core builds it."""
    config_cls = component_cls.Config
    names = (
        {f.name for f in dataclasses.fields(config_cls)}
        if dataclasses.is_dataclass(config_cls)
        else set()
    )
    unknown = set(config) - names
    if unknown:
        raise TypeError(f"{component_cls.__name__}.Config has no field {sorted(unknown)[0]!r}")
    return component_cls(component_cls.Config(**config))


def training_step(
    method_cls: type[Method],
    backbone: Backbone,
    task: Task,
    batch: Batch,
    **config: Any,
) -> StepOutput:
    """Build ``method_cls``, call ``setup`` and one ``training_step``, and backpropagate.

    Raises ``AssertionError`` when the loss is not a finite scalar or no parameter of the
    backbone or method received a gradient.
    """
    method = build(method_cls, **config)
    method.setup(backbone, task)
    backbone.train()
    method.train()
    out = method.training_step(batch, backbone)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss), f"loss {out.loss!r}"
    out.loss.backward()
    params = [*backbone.parameters(), *method.parameters()]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), "no gradient"
    return out


def apply_augmentation(
    aug_cls: type[Augmentation], task: Task, batch: Batch, seed: int = 0, **config: Any
) -> Tensor:
    """Build ``aug_cls``, ``setup`` it and apply it once, as the core does in training.

    The input is ``batch.wave`` for a waveform augmentation and ``batch.features`` for a
    features one; torch's global generator is seeded with ``seed`` first (the core seeds
    it once per run with ``run.seed``), so a call is reproducible.
    """
    aug = build(aug_cls, **config)
    aug.setup(task)
    aug.train()
    x = batch.wave if aug_cls.stage == "waveform" else batch.features
    if x is None:
        raise ValueError("a features augmentation needs make_batch(task, backbone)")
    torch.manual_seed(seed)
    return aug(x, batch)
