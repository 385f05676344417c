"""Learning-rate schedules of a training: constant, warm-up then plateau, warm-up then cosine.

Each sets the learning rates from every group's ``base_lr`` before each optimizer step and
after each epoch; :func:`build_schedule` picks the one a :class:`harness.api.Training` names.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.api import Training


class Schedule:
    """Sets learning rates from each group's ``base_lr``: before every optimizer step and
    after every epoch. The default keeps them constant."""

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Called before optimizer step ``step`` (0-based, over the loop's epochs)."""

    def after_epoch(self, optimizer: torch.optim.Optimizer, loss: float, step: int) -> None:
        """Called after each epoch with the loss it watches."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def scale_lrs(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


class WarmupPlateau(Schedule):
    """Linear warm-up over ``warmup_steps``, then ReduceLROnPlateau on the watched loss
    (the validation loss when the run has a validation split, the training loss otherwise)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int, patience: int, factor: float
    ) -> None:
        self.warmup_steps = warmup_steps
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, patience=patience, factor=factor
        )

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if step < self.warmup_steps:
            scale_lrs(optimizer, (step + 1) / self.warmup_steps)

    def after_epoch(self, optimizer: torch.optim.Optimizer, loss: float, step: int) -> None:
        if step >= self.warmup_steps:
            self.plateau.step(loss)

    def state_dict(self) -> dict[str, Any]:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state)


class WarmupCosine(Schedule):
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, max(1, warmup)

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        fraction = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        scale_lrs(optimizer, self.factor(step))


def build_schedule(
    spec: Training, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> Schedule:
    """The schedule ``spec.schedule`` names, over ``spec.epochs`` epochs of these steps."""
    if spec.schedule == "cosine":
        total = spec.epochs * steps_per_epoch
        return WarmupCosine(total, round(spec.warmup_fraction * total))
    if spec.schedule == "plateau":
        return WarmupPlateau(
            optimizer,
            spec.warmup_epochs * steps_per_epoch,
            spec.plateau_patience,
            spec.plateau_factor,
        )
    return Schedule()
