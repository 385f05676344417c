"""The one training loop of a run.

Every training in a run goes through :meth:`Engine.run_epoch`: the method's stages
(:class:`harness.run.experiment.Experiment`) and the heads that evaluation protocols fit through
:attr:`harness.api.EvalContext.train` (fine-tuning, the device probe). So all of them run
on the run's device, in its precision (autocast, a gradient scaler for fp16), under DDP
when several processes train, and report to ``metrics.jsonl`` and the loggers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from harness.api import Batch, FeatureData, StepOutput, TrainingJob, TrainingResult
from harness.data.loader import FeatureLoader, Loader
from harness.engine import distributed
from harness.engine.metrics_log import Clock, gpu_memory, learning_rates, timed
from harness.util.errors import HarnessError, UsageError
from harness.util.progress import progress

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class BatchSource(Protocol):
    """A split's batches: :class:`harness.data.loader.Loader` or
    :class:`harness.data.loader.FeatureLoader`."""

    def __len__(self) -> int: ...

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]: ...

    def close(self) -> None: ...


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
    """``step(batch) -> StepOutput`` as a module returning ``(loss, logs)``; what it holds
    (method and backbone, or a protocol's model) is one module so DDP synchronises it all."""

    def __init__(self, step: Callable[[Batch], StepOutput], *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.step = step

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        output = self.step(batch)
        return output.loss, output.logs


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel that averages gradients and leaves each rank's buffers (such
    as NNCLR's support queue) its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers' new name
        return nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # a method's step may leave a head unused
            broadcast_buffers=False,
        )


# -- learning-rate schedules ----------------------------------------------------


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


# -- the loop -------------------------------------------------------------------


@dataclass
class Loop:
    """One training: what trains, on which batches, with which optimizer and schedule."""

    name: str
    """``stage_name`` of its log events (a stage of the method, or a protocol's job)."""
    number: int
    """``stage`` of its log events: 1, 2, ... for the method's stages, 0 for protocol jobs."""
    module: nn.Module
    """``module(batch) -> (loss, logs)``, DDP-wrapped when several processes train."""
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    source: BatchSource
    prepare: Callable[[Batch], Batch]
    """Turns a loaded batch into the step's input (augmentations, the front-end)."""
    epochs: int
    accum: int = 1
    grad_clip: float = 0.0
    counts_globally: bool = True
    """Whether its optimizer steps count in the run's ``global_step`` (the method's stages)."""
    step: int = 0
    """Optimizer steps taken so far."""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source) // self.accum


AfterStep = Callable[[Loop, int, Accumulator, Accumulator], None]
"""Called after each optimizer step with the loop, the micro-batch index and both sums."""


class Engine:
    """Runs epochs of :class:`Loop` objects for one run's device, precision and ranks."""

    def __init__(
        self,
        device: torch.device,
        ranks: distributed.Ranks,
        precision: str,
        sync_every: int,
        log_event: Callable[..., None],
    ) -> None:
        self.device, self.ranks = device, ranks
        self.precision, self.sync_every = precision, sync_every
        self.log_event = log_event
        self.global_step = 0
        """Optimizer steps of the method's stages over all stages."""

    def autocast(self):
        dtype = AMP_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def wrap(self, module: nn.Module) -> nn.Module:
        return wrap_ddp(module, self.device) if self.ranks.active else module

    def fit(
        self, job: TrainingJob, workers: int = 0, log: Callable[[str], None] | None = None
    ) -> TrainingResult:
        """Train a protocol's job (:attr:`harness.api.EvalContext.train`) in place; its
        initialisation and data order are seeded by ``job.seed``, the global RNGs kept."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(job.seed)
            return self._fit(job, workers, log)

    def _fit(
        self, job: TrainingJob, workers: int, log: Callable[[str], None] | None
    ) -> TrainingResult:
        job.model.to(self.device)
        groups = job.param_groups or [
            {"params": [p for p in job.model.parameters() if p.requires_grad]}
        ]
        optimizer = job_optimizer(job, groups)
        source = self.job_source(job, workers)
        try:
            return self._fit_loop(job, optimizer, source, log)
        finally:
            source.close()

    def _fit_loop(
        self,
        job: TrainingJob,
        optimizer: torch.optim.Optimizer,
        source: BatchSource,
        log: Callable[[str], None] | None,
    ) -> TrainingResult:
        if len(source) == 0:
            raise UsageError(f"{job.name}: no training batch (fewer clips than its batch size)")
        frontend = job.frontend.to(self.device).train() if job.frontend is not None else None
        loop = Loop(
            name=job.name,
            number=0,
            module=self.wrap(StepModule(job.model, job.model)),
            optimizer=optimizer,
            schedule=job_schedule(job, len(source)),
            scaler=self.scaler(),
            source=source,
            prepare=lambda batch: with_features(batch, frontend),
            epochs=job.epochs,
            counts_globally=False,
        )
        generator = torch.Generator().manual_seed(job.seed)
        losses: list[float] = []
        best, stale = math.inf, 0
        for epoch in range(job.epochs):
            job.model.train()
            sums, window = Accumulator(self.device), Accumulator(self.device)
            started = time.perf_counter()
            clock = self.run_epoch(loop, epoch, generator, sums, window, worker_seed=job.seed)
            loss, _, line = self.end_epoch(loop, epoch, sums, clock, started)
            losses.append(loss)
            if log is not None and job.log_epochs:
                log(line)
            if job.patience:
                best, stale = (loss, 0) if loss < best - job.min_delta else (best, stale + 1)
                if stale >= job.patience:
                    break
        job.model.eval()
        return TrainingResult(losses, loop.step)

    def job_source(self, job: TrainingJob, workers: int) -> BatchSource:
        """The job's batches (this rank's share): waveforms of a split, or features."""
        ranks = self.ranks
        if isinstance(job.data, FeatureData):
            return FeatureLoader(
                job.data, job.batch_size, self.device, job.drop_last, ranks.rank, ranks.world
            )
        return Loader(
            job.data,
            job.batch_size,
            self.device,
            drop_last=job.drop_last,
            workers=workers,
            rank=ranks.rank,
            world=ranks.world,
        )

    def run_epoch(
        self,
        loop: Loop,
        epoch: int,
        generator: torch.Generator,
        sums: Accumulator,
        window: Accumulator,
        skip: int = 0,
        worker_seed: int | None = None,
        after_step: AfterStep | None = None,
    ) -> Clock:
        """One pass over ``loop.source`` (its first ``skip`` micro-batches left out): forward
        in autocast, backward through the scaler, an optimizer step every ``loop.accum``
        micro-batches, a ``step`` log event every ``sync_every`` steps. Returns the epoch's
        clock; the losses are in ``sums``."""
        where = {"stage": loop.number, "stage_name": loop.name, "epoch": epoch + 1}
        epoch_clock, window_clock = Clock(), Clock()
        accum, optimizer, scaler = loop.accum, loop.optimizer, loop.scaler
        usable = loop.steps_per_epoch * accum
        batch_iter = loop.source.epoch(generator, skip=skip, worker_seed=worker_seed)
        batch_iter = timed(batch_iter, [epoch_clock, window_clock])
        desc = f"{'' if loop.number else loop.name + ' '}epoch {epoch + 1}/{loop.epochs}"
        for micro, batch in enumerate(
            progress(batch_iter, desc=desc, total=len(loop.source)), start=skip
        ):
            if micro >= usable:
                continue  # micro-batches that would not fill an optimizer step
            last = (micro + 1) % accum == 0
            if micro % accum == 0:
                loop.schedule.before_step(optimizer, loop.step)
            prepared = loop.prepare(batch)
            epoch_clock.clips += prepared.wave.shape[0]
            window_clock.clips += prepared.wave.shape[0]
            sync = loop.module.no_sync() if self.ranks.active and not last else nullcontext()
            with sync:
                with self.autocast():
                    loss, logs = loop.module(prepared)
                scaler.scale(loss.float() / accum).backward()
            sums.add(loss, logs)
            window.add(loss, logs)
            if not last:
                continue
            if loop.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], loop.grad_clip
                )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loop.step += 1
            if loop.counts_globally:
                self.global_step += 1
            if loop.step % self.sync_every == 0:
                loss_now, logs_now = window.means()
                check_finite(window, loop, epoch)
                self.log_event(
                    "step",
                    {"loss": loss_now, **logs_now, **learning_rates(optimizer)}
                    | window_clock.rates(self.ranks.world)
                    | gpu_memory(self.device),
                    **where,
                    step=loop.step,
                )
                window_clock.reset()
            if after_step is not None:
                after_step(loop, micro, sums, window)
        check_finite(window, loop, epoch)
        return epoch_clock

    def end_epoch(
        self,
        loop: Loop,
        epoch: int,
        sums: Accumulator,
        clock: Clock,
        started: float,
        extra: dict[str, float] | None = None,
        watch: float | None = None,
    ) -> tuple[float, dict[str, float], str]:
        """Log the ``epoch`` event, step the schedule on ``watch`` (default: the mean loss)
        and return the mean loss, the mean logs and the run-log line of the epoch."""
        mean_loss, logs = sums.means()
        extra = extra or {}
        self.log_event(
            "epoch",
            {"loss": mean_loss, **logs, **extra, **learning_rates(loop.optimizer)}
            | clock.rates(self.ranks.world)
            | gpu_memory(self.device),
            stage=loop.number,
            stage_name=loop.name,
            epoch=epoch + 1,
            step=loop.step,
        )
        loop.schedule.after_epoch(loop.optimizer, mean_loss if watch is None else watch, loop.step)
        details = "".join(f", {k} {v:.4f}" for k, v in (logs | extra).items())
        prefix = f"{loop.name} " if not loop.number else ""
        line = (
            f"{prefix}epoch {epoch + 1}/{loop.epochs}: loss {mean_loss:.4f}{details}, "
            f"lr {loop.optimizer.param_groups[-1]['lr']:.2e}, {time.perf_counter() - started:.1f}s"
        )
        return mean_loss, logs, line


def standalone(device: torch.device) -> Engine:
    """An engine outside a run (one process, fp32, nothing logged): notebooks and tests."""
    return Engine(device, distributed.Ranks(), "fp32", 1, lambda *args, **kwargs: None)


def job_optimizer(job: TrainingJob, groups: list[dict]) -> torch.optim.Optimizer:
    """Adam or AdamW over ``groups``; each group remembers its ``base_lr`` for schedules."""
    optimizer_cls = torch.optim.AdamW if job.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(groups, lr=job.lr, weight_decay=job.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def job_schedule(job: TrainingJob, steps_per_epoch: int) -> Schedule:
    if job.schedule == "cosine":
        total = job.epochs * steps_per_epoch
        return WarmupCosine(total, round(job.warmup_fraction * total))
    return Schedule()


def with_features(batch: Batch, frontend: nn.Module | None) -> Batch:
    """A job's batch with ``frontend`` features of its waveforms (computed without gradient,
    the front-end in training mode as in the run's own training)."""
    if frontend is not None:
        with torch.no_grad():
            batch.features = frontend(batch.wave)
    return batch


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
