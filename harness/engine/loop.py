"""A training under way: its loop (module, one optimizer step per phase, batch source), the
sums of its losses, where it stands for its hooks, early stopping and the divergence check."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.api import Batch, StepOutput
from harness.engine import distributed
from harness.engine.batches import BatchSource
from harness.engine.metrics_log import learning_rates
from harness.engine.schedules import Schedule
from harness.util.errors import HarnessError


class Accumulator:
    """Sums of the loss and the step logs on the device, read only when asked."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.bad = torch.zeros((), device=self.device, dtype=torch.long)
        self.logs: dict[str, Tensor | float] = {}
        self.steps = 0

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss, "bad": self.bad, "logs": dict(self.logs), "steps": self.steps}

    def load(self, state: dict[str, Any]) -> None:
        self.loss = state["loss"].to(self.device)
        self.bad = state["bad"].to(self.device)
        self.logs = {
            k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in state["logs"].items()
        }
        self.steps = int(state["steps"])

    def add(self, loss: Tensor, logs: dict[str, Any]) -> None:
        loss = loss.detach().float()
        self.bad += (~torch.isfinite(loss)).long()
        self.loss += torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
        for key, value in logs.items():
            value = value.detach().float() if isinstance(value, Tensor) else float(value)
            self.logs[key] = self.logs.get(key, 0.0) + value
        self.steps += 1

    def nonfinite(self) -> int:
        """Non-finite losses in the window, summed over the ranks (so all of them stop)."""
        return int(distributed.sum_over_ranks(self.bad.clone()).item())

    def snapshot(self) -> tuple[list[str], Tensor]:
        """The log keys and, on the device, the sums of the loss and of each log divided by
        the steps: what :meth:`means` returns, without reading it (no host sync)."""
        keys = sorted(self.logs)
        values = torch.stack(
            [self.loss]
            + [torch.as_tensor(self.logs[k], dtype=torch.float32, device=self.device) for k in keys]
        )
        return keys, values / max(self.steps, 1)

    def means(self) -> tuple[float, dict[str, float]]:
        """Mean loss and logs over the steps (and over the ranks, which then agree)."""
        n = max(self.steps, 1)
        keys = sorted(self.logs)
        values = torch.stack(
            [self.loss]
            + [torch.as_tensor(self.logs[k], dtype=torch.float32, device=self.device) for k in keys]
        )
        values = distributed.mean_over_ranks(values).cpu() / n
        loss = float(values[0]) if self.steps else math.nan
        return loss, {k: float(v) for k, v in zip(keys, values[1:].tolist(), strict=True)}


class StepModule(nn.Module):
    """A training's model as a module returning ``(loss, logs)`` (``model(batch)``, or
    ``model(batch, phase)`` for one phase of several); what it holds is one module so DDP
    synchronises it all."""

    def __init__(self, step: Callable[..., StepOutput], *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.step = step

    def forward(self, batch: Batch, phase: str | None = None) -> tuple[Tensor, dict[str, Any]]:
        output = self.step(batch) if phase is None else self.step(batch, phase)
        return output.loss, output.logs


@dataclass
class Stepper:
    """One phase's optimizer, learning-rate schedule and gradient scaler."""

    name: str
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])


@dataclass
class Loop:
    """One training under way: what trains, on which batches, with which optimizers."""

    name: str
    """``stage_name`` of its log events (a stage of the method, or a protocol's job)."""
    number: int
    """``stage`` of its log events: 1, 2, ... for the method's stages, 0 otherwise."""
    module: nn.Module
    """``module(batch[, phase]) -> (loss, logs)``, DDP-wrapped when several processes train."""
    steppers: list[Stepper]
    """One per phase, in the order the phases run on every batch."""
    source: BatchSource
    prepare: Callable[[Batch], Batch]
    """Turns a loaded batch into the step's input (augmentations, the front-end)."""
    epochs: int
    accum: int = 1
    grad_clip: float = 0.0
    counts_globally: bool = True
    """Whether its optimizer steps count in the run's ``global_step`` (the method's stages)."""
    max_steps: int = 0
    step: int = 0
    """Optimizer steps taken so far."""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source) // self.accum

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first phase's optimizer (the only one of a one-phase training)."""
        return self.steppers[0].optimizer

    @property
    def schedule(self) -> Schedule:
        return self.steppers[0].schedule

    @property
    def done(self) -> bool:
        """Whether ``max_steps`` optimizer steps are taken."""
        return bool(self.max_steps) and self.step >= self.max_steps

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the loop besides the models: optimizer, schedule and
        scaler (of each phase, in order, when there are several)."""
        if len(self.steppers) == 1:
            return self.steppers[0].state()
        states = [stepper.state() for stepper in self.steppers]
        return {key: [state[key] for state in states] for key in states[0]}

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if len(self.steppers) == 1:
            self.steppers[0].load(state)
            return
        for i, stepper in enumerate(self.steppers):
            stepper.load({key: values[i] for key, values in state.items()})

    def learning_rates(self) -> dict[str, float]:
        """``lr`` (and per group) of a one-phase training; ``lr/<phase>`` ... of several."""
        if len(self.steppers) == 1:
            return learning_rates(self.optimizer)
        return {
            key.replace("lr", f"lr/{stepper.name}", 1): value
            for stepper in self.steppers
            for key, value in learning_rates(stepper.optimizer).items()
        }


@dataclass
class Progress:
    """Where a training stands, handed to its hooks after an optimizer step or an epoch."""

    loop: Loop
    epoch: int
    """The epoch under way (0-based)."""
    micro: int
    """Micro-batches of the epoch done (0 once the epoch is over)."""
    generator: torch.Generator
    """The generator that orders the batches."""
    epoch_generator: Tensor
    """Its state when the epoch began (a resumed epoch draws the same order again)."""
    sums: Accumulator
    window: Accumulator
    values: dict[str, float] = field(default_factory=dict)
    """After an epoch: what validation returned."""
    step_logs: dict[str, Tensor | float] = field(default_factory=dict)
    """After a step: the last micro-batch's loss (``loss/<phase>`` of each of several
    phases) and logs."""
    recent: Accumulator | None = None
    """The sums since the last ``step`` log event (``run.log_every``)."""
    flush_logs: Callable[[], None] = lambda: None
    """Writes the ``step`` events read so far but not yet logged (before a checkpoint
    records the log's length)."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What exact resume needs of the training: the loop's optimizers, schedules and
        scalers, the order generator and, inside an epoch, its start and sums."""
        state = {**self.loop.state(), "generator": self.generator.get_state()}
        if self.micro:
            state |= {
                "epoch_generator": self.epoch_generator,
                "sums": self.sums.state(),
                "window": self.window.state(),
            }
            if self.recent is not None:
                state["recent"] = self.recent.state()
        return state


@dataclass
class EarlyStop:
    """Counts epochs whose mean loss did not drop by more than ``min_delta`` below the best
    so far; :meth:`after` says when ``patience`` of them came in a row (0: never)."""

    patience: int
    min_delta: float
    best: float = math.inf
    stale: int = 0

    def after(self, loss: float) -> bool:
        if not self.patience:
            return False
        if loss < self.best - self.min_delta:
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
        return self.stale >= self.patience


@dataclass
class PendingSteps:
    """``step`` log events whose values are still on the device: taken every
    ``run.log_every`` optimizer steps without a host sync, read all at once (one transfer,
    one reduction over the ranks) when the loop reads its sums anyway (every
    ``run.sync_every`` steps, at the end of an epoch, before a checkpoint)."""

    log_event: Callable[..., None]
    events: list[tuple[list[str], Tensor, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list
    )

    def add(self, recent: Accumulator, host_values: dict[str, Any], where: dict[str, Any]) -> None:
        """Keep ``recent``'s means (on the device) with the values already on the host and
        the event's position, then reset ``recent``."""
        keys, values = recent.snapshot()
        self.events.append((keys, values, host_values, where))
        recent.reset()

    def flush(self) -> None:
        if not self.events:
            return
        sizes = [len(values) for _, values, _, _ in self.events]
        read = distributed.mean_over_ranks(torch.cat([v for _, v, _, _ in self.events])).cpu()
        for (keys, _, host_values, where), chunk in zip(
            self.events, read.split(sizes), strict=True
        ):
            loss, *logs = chunk.tolist()
            values = {"loss": loss, **dict(zip(keys, logs, strict=True))}
            self.log_event("step", values | host_values, **where)
        self.events.clear()


def check_finite(window: Accumulator, loop: Loop, epoch: int) -> None:
    """Stop a diverging training: reads the device-side count of non-finite losses."""
    bad = window.nonfinite()
    steps = window.steps
    window.reset()
    if bad:
        what = "training" if loop.number else f"{loop.name} training"
        raise HarnessError(
            f"{what} diverged: the loss was not finite in {bad} of the last {steps} "
            f"batches (epoch {epoch + 1}, optimizer step {loop.step}); "
            "try a lower run.lr, run.grad_clip, or run.precision=fp32"
        )
