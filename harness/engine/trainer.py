"""The one trainer of a run: :meth:`Engine.fit` runs every :class:`harness.api.Training`.

The method's stages (built by :mod:`harness.run.training`), the heads evaluation protocols
fit through :meth:`harness.api.EvalContext.fit` (fine-tuning, the device probe) and
trainings with several optimizers (the DIR generator's GAN) all go through it: the run's
device, its precision (autocast, a gradient scaler for fp16), DDP when several processes
train, gradient accumulation and clipping, schedules, exact resume, ``metrics.jsonl`` and
the loggers. Validation, model selection and checkpoints reach it as :class:`FitHooks`, so
the engine never imports the experiment. :meth:`Engine.infer` is the one inference call.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.api import Batch, OptimizerSettings, Phase, Training, TrainingResult, log_value_text
from harness.engine import distributed
from harness.engine.batches import BatchSource, batch_source, data_rows, prepare_batch
from harness.engine.loop import (
    Accumulator,
    EarlyStop,
    Loop,
    PendingSteps,
    Progress,
    StepModule,
    Stepper,
    check_finite,
)
from harness.engine.metrics_log import Clock, gpu_memory, timed
from harness.engine.schedules import build_schedule
from harness.util.errors import HarnessError, UsageError
from harness.util.progress import progress

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def build_optimizer(groups: list[dict], settings: OptimizerSettings) -> torch.optim.Optimizer:
    """Adam or AdamW over ``groups`` with ``settings`` as every group's defaults; each group
    remembers its ``base_lr`` for the schedules."""
    optimizer_cls = torch.optim.AdamW if settings.kind == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(
        groups,
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
    )
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def has_parameters(phase: Phase) -> bool:
    """Whether any group of ``phase`` holds a parameter."""
    return any(group["params"] for group in phase.param_groups)


@dataclass
class FitHooks:
    """What a training's owner adds to the loop (the engine calls, never imports, it)."""

    validate: Callable[[], dict[str, float]] | None = None
    """After every epoch: values for the epoch's event and line (``valid_loss``, when
    present, is what the plateau schedule watches)."""
    after_step: Callable[[Progress], None] | None = None
    """After every optimizer step (mid-epoch checkpoints, histories)."""
    after_epoch: Callable[[Progress], None] | None = None
    """After every epoch, once it is logged (model selection, checkpoints, health checks)."""
    log: Callable[[str], None] | None = None
    """Receives each epoch's run-log line (when the training's ``log_epochs`` is on)."""


@dataclass
class Resume:
    """Where an interrupted training continues (from a checkpoint of :class:`Progress`)."""

    epoch: int
    """Epochs finished."""
    step: int
    micro: int
    """Micro-batches of the interrupted epoch done (0: it continues at an epoch boundary)."""
    state: dict[str, Any]
    """:meth:`Progress.checkpoint_state` as saved."""


AfterStep = Callable[..., None]
"""What :meth:`Engine.run_epoch` calls after each optimizer step: the loop, the micro-batch
index, the epoch's, the check window's and the log window's sums, the last micro-batch's
losses and logs, and the call that writes the step events still pending."""


class Engine:
    """Runs :class:`harness.api.Training` specs for one run's device, precision and ranks."""

    def __init__(
        self,
        device: torch.device,
        ranks: distributed.Ranks,
        precision: str,
        sync_every: int,
        log_event: Callable[..., None],
        workers: int = 0,
        log_every: int | None = None,
    ) -> None:
        self.device, self.ranks = device, ranks
        self.precision, self.sync_every = precision, sync_every
        self.log_every = log_every or sync_every
        """Optimizer steps between ``step`` log events (read every ``sync_every`` steps)."""
        self.log_event = log_event
        self.workers = workers
        """Data-loading worker processes of the batch sources the engine builds."""
        self.global_step = 0
        """Optimizer steps of the method's stages over all stages."""

    def autocast(self):
        dtype = AMP_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def wrap(self, module: nn.Module) -> nn.Module:
        return wrap_ddp(module, self.device) if self.ranks.active else module

    # -- training ---------------------------------------------------------------

    def fit(
        self,
        spec: Training,
        hooks: FitHooks | None = None,
        resume: Resume | None = None,
    ) -> TrainingResult:
        """Train ``spec.model`` in place (from ``resume`` on), calling ``hooks``; with
        ``spec.own_rng`` the global RNGs are seeded with ``spec.seed`` for the training and
        restored after it."""
        hooks = hooks or FitHooks()
        if not spec.own_rng:
            return self._fit(spec, hooks, resume)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(spec.seed)
            return self._fit(spec, hooks, resume)

    def _fit(self, spec: Training, hooks: FitHooks, resume: Resume | None) -> TrainingResult:
        spec.model.to(self.device)
        source = batch_source(
            spec.data,
            spec.batch_size,
            self.device,
            self.ranks,
            spec.drop_last,
            self.workers,
            spec.sampling,
        )
        try:
            return self.train_epochs(spec, self.loop(spec, source), hooks, resume)
        finally:
            if source is not spec.data:  # a source handed in stays open for its owner
                source.close()

    def loop(self, spec: Training, source: BatchSource) -> Loop:
        """The loop of ``spec`` over ``source``: its module, optimizers and schedules."""
        if len(source) == 0:
            raise UsageError(f"{spec.name}: no training batch (fewer clips than its batch size)")
        steps_per_epoch = len(source) // spec.accum
        if steps_per_epoch == 0:
            raise UsageError(
                f"{spec.name}: {spec.accum} micro-batches per step exceed the "
                f"{len(source)} batches of an epoch"
            )
        steppers = []
        for phase in spec.phases:
            optimizer = build_optimizer(phase.param_groups, phase.optimizer)
            schedule = build_schedule(spec, optimizer, steps_per_epoch)
            steppers.append(Stepper(phase.name, optimizer, schedule, self.scaler()))
        frontend = spec.frontend.to(self.device) if spec.frontend is not None else None
        return Loop(
            name=spec.name,
            number=spec.number,
            module=self.wrap(StepModule(spec.model, spec.model)),
            steppers=steppers,
            source=source,
            prepare=spec.prepare or (lambda batch: prepare_batch(batch, frontend, train=True)),
            epochs=spec.epochs,
            accum=spec.accum,
            grad_clip=spec.grad_clip,
            counts_globally=spec.counts_globally,
            max_steps=spec.max_steps,
        )

    def train_epochs(
        self, spec: Training, loop: Loop, hooks: FitHooks, resume: Resume | None
    ) -> TrainingResult:
        """The epochs of ``spec`` (from ``resume`` on): train, validate, log, hooks, stop
        early on ``patience`` or ``max_steps``."""
        generator = spec.order or torch.Generator().manual_seed(spec.seed)
        modules = spec.train_modules or (spec.model,)
        first_epoch, skip = 0, 0
        if resume is not None:
            loop.load(resume.state)
            first_epoch, loop.step, skip = resume.epoch, resume.step, resume.micro
        losses: list[float] = []
        stale = EarlyStop(spec.patience, spec.min_delta)
        for epoch in range(first_epoch, spec.epochs):
            for module in modules:
                module.train()
            sums, window = Accumulator(self.device), Accumulator(self.device)
            recent = Accumulator(self.device)
            if skip:  # resumed inside this epoch: the same order, the batches done skipped
                generator.set_state(resume.state["epoch_generator"])
                sums.load(resume.state["sums"])
                window.load(resume.state["window"])
                recent.load(resume.state.get("recent", resume.state["window"]))
            started = time.perf_counter()
            epoch_generator = generator.get_state()
            clock = self.run_epoch(
                loop,
                epoch,
                generator,
                sums,
                window,
                skip=skip,
                worker_seed=epoch_worker_seed(spec, epoch),
                after_step=step_hook(hooks, epoch, generator, epoch_generator),
                recent=recent,
            )
            skip = 0
            values = hooks.validate() if hooks.validate is not None else {}
            if spec.validate is not None:
                values = {**values, **spec.validate()}
            loss, _, line = self.end_epoch(
                loop, epoch, sums, clock, started, values, values.get("valid_loss")
            )
            losses.append(loss)
            if hooks.log is not None and spec.log_epochs:
                hooks.log(line)
            if hooks.after_epoch is not None:
                hooks.after_epoch(
                    Progress(loop, epoch, 0, generator, epoch_generator, sums, window, values)
                )
            if stale.after(loss) or loop.done:
                break
        for module in modules:
            module.eval()
        return TrainingResult(losses, loop.step)

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
        recent: Accumulator | None = None,
    ) -> Clock:
        """One pass over ``loop.source`` (its first ``skip`` micro-batches left out): every
        phase's forward in autocast and backward through its scaler, each phase's optimizer
        step every ``loop.accum`` micro-batches, a ``step`` log event every ``log_every``
        steps (their values read from the device, and the loss checked, every
        ``sync_every`` steps). Returns the epoch's clock; the losses are in ``sums``."""
        where = {"stage": loop.number, "stage_name": loop.name, "epoch": epoch + 1}
        recent = recent if recent is not None else Accumulator(self.device)
        pending = PendingSteps(self.log_event)
        epoch_clock, window_clock = Clock(), Clock()
        usable = loop.steps_per_epoch * loop.accum
        batch_iter = loop.source.epoch(generator, skip=skip, worker_seed=worker_seed)
        batch_iter = timed(batch_iter, [epoch_clock, window_clock])
        desc = f"{'' if loop.number else loop.name + ' '}epoch {epoch + 1}/{loop.epochs}"
        for micro, batch in enumerate(
            progress(batch_iter, desc=desc, total=len(loop.source)), start=skip
        ):
            if loop.done:
                break
            if micro >= usable:
                continue  # micro-batches that would not fill an optimizer step
            last = (micro + 1) % loop.accum == 0
            if micro % loop.accum == 0:
                for stepper in loop.steppers:
                    stepper.schedule.before_step(stepper.optimizer, loop.step)
            prepared = loop.prepare(batch)
            epoch_clock.clips += prepared.wave.shape[0]
            window_clock.clips += prepared.wave.shape[0]
            loss, logs = self.micro_step(loop, prepared, first=micro % loop.accum == 0, last=last)
            sums.add(loss, logs)
            window.add(loss, logs)
            recent.add(loss, logs)
            if not last:
                continue
            loop.step += 1
            if loop.counts_globally:
                self.global_step += 1
            if loop.step % self.log_every == 0:
                host_values = (
                    loop.learning_rates()
                    | window_clock.rates(self.ranks.world)
                    | gpu_memory(self.device)
                )
                position = where | {"step": loop.step, "global_step": self.global_step}
                pending.add(recent, host_values, position)
                window_clock.reset()
            if loop.step % self.sync_every == 0:
                pending.flush()
                check_finite(window, loop, epoch)
            if after_step is not None:
                after_step(loop, micro, sums, window, logs, recent, pending.flush)
        pending.flush()
        check_finite(window, loop, epoch)
        return epoch_clock

    def micro_step(
        self, loop: Loop, batch: Batch, first: bool, last: bool
    ) -> tuple[Tensor, dict[str, Any]]:
        """Every phase on one micro-batch: forward, backward, and at the ``last`` micro-batch
        of an accumulation window the phase's optimizer step. Returns the loss (the sum over
        several phases, each also logged as ``loss/<phase>``) and the logs."""
        several = len(loop.steppers) > 1
        total: Tensor | None = None
        logs: dict[str, Any] = {}
        for stepper in loop.steppers:
            if first:  # another phase's backward may have reached these parameters
                stepper.optimizer.zero_grad(set_to_none=True)
            sync = loop.module.no_sync() if self.ranks.active and not last else nullcontext()
            with sync:
                with self.autocast():
                    loss, step_logs = (
                        loop.module(batch, stepper.name) if several else loop.module(batch)
                    )
                stepper.scaler.scale(loss.float() / loop.accum).backward()
            if last:
                self.optimizer_step(loop, stepper)
            logs |= step_logs
            if several:
                logs[f"loss/{stepper.name}"] = loss.detach()
            total = loss if total is None else total + loss.detach()
        return total, logs

    def optimizer_step(self, loop: Loop, stepper: Stepper) -> None:
        """Clip (when set), step through the scaler and clear the phase's gradients."""
        optimizer, scaler = stepper.optimizer, stepper.scaler
        if loop.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], loop.grad_clip
            )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

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
        """Log the ``epoch`` event, step the schedules on ``watch`` (default: the mean loss)
        and return the mean loss, the mean logs and the run-log line of the epoch."""
        mean_loss, logs = sums.means()
        extra = extra or {}
        self.log_event(
            "epoch",
            {"loss": mean_loss, **logs, **extra, **loop.learning_rates()}
            | clock.rates(self.ranks.world)
            | gpu_memory(self.device),
            stage=loop.number,
            stage_name=loop.name,
            epoch=epoch + 1,
            step=loop.step,
        )
        for stepper in loop.steppers:
            stepper.schedule.after_epoch(
                stepper.optimizer, mean_loss if watch is None else watch, loop.step
            )
        details = "".join(f", {k} {log_value_text(k, v)}" for k, v in (logs | extra).items())
        prefix = f"{loop.name} " if not loop.number else ""
        line = (
            f"{prefix}epoch {epoch + 1}/{loop.epochs}: loss {mean_loss:.4f}{details}, "
            f"lr {loop.optimizer.param_groups[-1]['lr']:.2e}, {time.perf_counter() - started:.1f}s"
        )
        return mean_loss, logs, line

    # -- inference --------------------------------------------------------------

    @torch.no_grad()
    def infer(
        self,
        forward: Callable[[Batch], Tensor],
        data: Any,
        batch_size: int,
        frontend: nn.Module | None = None,
        desc: str = "",
        rows: int | None = None,
    ) -> Tensor:
        """``forward`` of every batch of ``data`` (in order, without gradient, in the run's
        precision), its rows stacked in data order as float32 on the CPU; under DDP each
        process computes its share and all receive every row.

        ``data``: a split's audio (batches of waveforms: ``frontend`` makes their features
        in evaluation mode, see :func:`prepare_batch`), :class:`harness.api.FeatureData`,
        or a batch source of ``rows`` clips. ``forward`` sets no modes: put the models in
        evaluation mode first."""
        source = batch_source(data, batch_size, self.device, self.ranks, workers=self.workers)
        total = data_rows(data) if rows is None else rows
        if frontend is not None:
            frontend.to(self.device)
        outputs, indices = [], []
        batches = source.epoch()
        if desc:
            batches = progress(batches, desc=desc, total=len(source))
        try:
            for batch in batches:
                prepared = prepare_batch(batch, frontend)
                with self.autocast():
                    outputs.append(forward(prepared).float())
                indices.append(batch.index)
        finally:
            if source is not data:
                source.close()
        local = torch.cat(outputs) if outputs else torch.zeros(0)
        if not self.ranks.active:
            return local.cpu()
        if not outputs:  # this rank got no clips: the shape still has to match
            raise HarnessError(f"{desc or 'inference'}: fewer clips than processes")
        return distributed.gather_rows(local, torch.cat(indices), total, self.device)


def step_hook(
    hooks: FitHooks, epoch: int, generator: torch.Generator, epoch_generator: Tensor
) -> AfterStep | None:
    """``hooks.after_step`` as :meth:`Engine.run_epoch` calls it, for one epoch."""
    if hooks.after_step is None:
        return None
    after = hooks.after_step

    def after_step(
        loop: Loop,
        micro: int,
        sums: Accumulator,
        window: Accumulator,
        logs: dict[str, Any],
        recent: Accumulator | None = None,
        flush_logs: Callable[[], None] = lambda: None,
    ) -> None:
        after(Progress(loop, epoch, micro + 1, generator, epoch_generator, sums, window,
                       step_logs=logs, recent=recent, flush_logs=flush_logs))  # fmt: skip

    return after_step


def epoch_worker_seed(spec: Training, epoch: int) -> int:
    """The data-loading workers' seed for one epoch: a function of (seed, stage, epoch) only,
    so a resumed epoch seeds its workers as the uninterrupted training did."""
    return (spec.seed * 1_000_003 + spec.number * 10_007 + epoch) % 2**63


def standalone(device: torch.device) -> Engine:
    """An engine outside a run (one process, fp32, nothing logged): notebooks and tests."""
    return Engine(device, distributed.Ranks(), "fp32", 1, lambda *args, **kwargs: None)


def standalone_services(device: torch.device, batch_size: int) -> dict[str, Callable]:
    """``train`` and ``infer`` of an :class:`harness.api.EvalContext` outside a run (one
    process, fp32, nothing logged): ``EvalContext(..., **standalone_services(device, 16))``."""
    engine = standalone(device)

    def infer(
        forward: Callable[[Batch], Tensor], data: Any, frontend: nn.Module | None = None
    ) -> Tensor:
        return engine.infer(forward, data, batch_size, frontend)

    return {"train": engine.fit, "infer": infer}
