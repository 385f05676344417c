"""The method's step in a run: its stages as :class:`harness.api.Training` specs through the
engine's one trainer, with validation, model selection and checkpoints as the trainer's
hooks, and exact resume from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.api import (
    Backbone,
    Batch,
    Method,
    OptimizerSettings,
    Phase,
    RunSettings,
    Stage,
    StepOutput,
    Training,
    log_value_text,
)
from harness.data.loader import Loader
from harness.data.shards import ShardLoader
from harness.engine.ema import WeightAverage
from harness.engine.loop import Progress
from harness.engine.resume import Position, load_module_state, set_rng_state
from harness.engine.trainer import Engine, FitHooks, Resume, has_parameters
from harness.run.checkpoints import Checkpoints
from harness.run.components import RunParts
from harness.run.health import HealthProbe
from harness.util.errors import UsageError


class MethodStep(nn.Module):
    """The method's training step on the backbone, as the model of a :class:`Training`."""

    def __init__(self, method: Method, backbone: Backbone) -> None:
        super().__init__()
        self.method = method
        self.backbone = backbone

    def forward(self, batch: Batch) -> StepOutput:
        return self.method.training_step(batch, self.backbone)


def stage_phase(stage: Stage, backbone: Backbone, method: Method, run: RunSettings) -> Phase:
    """The optimizer phase of ``stage``: what it trains (freezing the backbone's blocks it
    leaves out) with the run's Adam settings at the stage's learning rate."""
    if stage.backbone_blocks is None:
        params = [p for p in [*backbone.parameters(), *method.parameters()] if p.requires_grad]
        groups: list[dict] = [{"params": params}]
    else:
        if stage.backbone_blocks == 0:
            backbone.requires_grad_(False)
        else:
            backbone.freeze_all_but_top(stage.backbone_blocks)
        groups = backbone.param_groups(stage.lr, stage.layer_decay, run.weight_decay)
        groups.append({"params": [p for p in method.parameters() if p.requires_grad]})
    settings = OptimizerSettings("adam", stage.lr, run.betas, run.eps, run.weight_decay)
    return Phase(stage.name, groups, settings)


def describe_blocks(blocks: int | None) -> str:
    if blocks is None:
        return "as set up"
    return "none (backbone frozen)" if blocks == 0 else f"top {blocks}"


class MethodTraining:
    """Trains the run's method in its stages (one stage with the run's settings by default)."""

    def __init__(
        self,
        parts: RunParts,
        engine: Engine,
        checkpoints: Checkpoints,
        validate: Callable[[], dict[str, float]],
    ) -> None:
        self.parts, self.engine, self.checkpoints = parts, engine, checkpoints
        self.validate = validate
        self.run = parts.cfg.run
        self.best: dict[str, Any] | None = None
        """The best epoch's weights and validation value (``run.select=best``)."""
        self._rng_pending = False
        self.health = HealthProbe(parts, engine)
        """The representation-health probe after every epoch."""
        self.ema: WeightAverage | None = None
        """The moving average of the weights (``run.ema``), made when training starts."""

    def stages(self) -> list[Stage]:
        run = self.run
        return self.parts.method.stages(self.parts.backbone, run) or [
            Stage("train", run.epochs, run.lr, run.batch_size)
        ]

    def train(self) -> None:
        """Every stage not finished before an interruption, then ``run.select``."""
        stages = self.stages()
        generator = torch.Generator().manual_seed(self.run.seed)
        self.checkpoints.stages = [(s.name, s.epochs) for s in stages]
        if self.run.ema:
            models = {"backbone": self.parts.backbone, "method": self.parts.method}
            self.ema = WeightAverage(models, self.run.ema)
        start = self.resume_position()
        if start is not None:
            generator.set_state(self.checkpoints.resume_state["generator"])
            self._rng_pending = True
        self.checkpoints.open_metrics(stages[0])  # open until close: protocols' trainings log
        for number, stage in enumerate(stages, 1):
            if start is not None and (
                number < start.stage
                or (number == start.stage and start.epoch >= stage.epochs and not start.micro)
            ):
                continue  # finished before the interruption
            if len(stages) > 1 or stage.note:
                self.parts.log(
                    f"stage {number}/{len(stages)} '{stage.name}': {stage.epochs} epochs, "
                    f"lr {stage.lr:.2e}, batch {stage.batch_size}, "
                    f"backbone blocks trained: {describe_blocks(stage.backbone_blocks)}"
                    + (f"; {stage.note}" if stage.note else "")
                )
            self.parts.method.begin_stage(stage)
            resumed = start is not None and number == start.stage
            self.train_stage(stage, generator, number, resumed)
        self.load_best()

    def resume_position(self) -> Position | None:
        """The checkpoint's position, after restoring the model and method from it."""
        state = self.checkpoints.resume_state
        if state is None:
            return None
        parts = self.parts
        load_module_state(parts.backbone, state["backbone"], "backbone")
        load_module_state(parts.method, state["method"], "method")
        parts.log.lines[:0] = [line for line in state["log"] if line not in parts.log.lines]
        self.engine.global_step = int(state.get("global_step", 0))
        self.best = state.get("best")
        self.health.load(state.get("health"))
        if self.ema is not None:
            self.ema.load(state["ema"])
        position = Position(**state["position"])
        parts.log(
            f"resumed from {self.checkpoints.folder} at stage {position.stage}, "
            f"epoch {position.epoch}, step {position.step}"
        )
        return position

    def train_stage(
        self, stage: Stage, generator: torch.Generator, number: int = 1, resumed: bool = False
    ) -> None:
        """One stage through the engine (from its checkpoint when ``resumed``)."""
        parts = self.parts
        phase = stage_phase(stage, parts.backbone, parts.method, self.run)
        if not has_parameters(phase):
            # e.g. a parameter-free backbone (logmel-stats) under a method without heads
            parts.log(f"stage '{stage.name}': no trainable parameters, nothing to train; skipped")
            return
        loader = parts.loader("train", stage.batch_size, train=True)
        accum = self.run.grad_accum
        if len(loader) // accum == 0:
            raise UsageError(
                f"run.grad_accum {accum} exceeds the {len(loader)} batches of an epoch"
            )
        state = self.checkpoints.resume_state or {}
        resume = None
        if resumed:
            position = Position(**state["position"])
            resume = Resume(position.epoch, position.step, position.micro, state)
        if self._rng_pending:  # the first stage trained after a resume
            set_rng_state(state["rng"])
            self._rng_pending = False
        spec = self.stage_training(stage, number, phase, loader, generator)
        self.engine.fit(spec, self.hooks(stage), resume)

    def stage_training(
        self,
        stage: Stage,
        number: int,
        phase: Phase,
        loader: Loader | ShardLoader,
        generator: torch.Generator,
    ) -> Training:
        """The :class:`Training` of stage ``number``: the method's step on the run's
        training batches, warm-up then ``run.schedule``, the run's accumulation and clipping."""
        run, parts = self.run, self.parts
        return Training(
            name=stage.name,
            model=MethodStep(parts.method, parts.backbone),
            data=loader,
            epochs=stage.epochs,
            batch_size=stage.batch_size,
            phases=[phase],
            schedule=run.schedule,
            warmup_epochs=run.warmup_epochs,
            warmup_fraction=min(1.0, run.warmup_epochs / max(1, stage.epochs)),
            plateau_patience=run.plateau_patience,
            plateau_factor=run.plateau_factor,
            accum=run.grad_accum,
            grad_clip=run.grad_clip,
            prepare=lambda batch: parts.prepare(batch, train=True),
            train_modules=(parts.backbone, parts.method),
            seed=run.seed,
            own_rng=False,
            order=generator,
            number=number,
            counts_globally=True,
        )

    def hooks(self, stage: Stage) -> FitHooks:
        """Validation (the plateau then watches its loss), the health probe, model selection
        and checkpoints after every epoch; checkpoints also every
        ``run.checkpoint_every_steps`` optimizer steps."""
        every = self.run.checkpoint_every_steps

        def after_step(progress: Progress) -> None:
            if self.ema is not None:
                self.ema.update()
            loop = progress.loop
            if not every or loop.step % every:
                return
            if progress.micro >= loop.steps_per_epoch * loop.accum:
                return
            self.save(Position(loop.number, progress.epoch, loop.step, progress.micro), stage,
                      progress)  # fmt: skip

        def after_epoch(progress: Progress) -> None:
            loop = progress.loop
            self.health.check(loop.number, loop.name, progress.epoch + 1, loop.step)
            self.consider_best(progress.values, loop.number, progress.epoch + 1)
            self.save(Position(loop.number, progress.epoch + 1, loop.step, 0), stage, progress)

        return FitHooks(
            validate=self.validate if self.parts.has_valid else None,
            after_step=after_step if every or self.ema is not None else None,
            after_epoch=after_epoch,
            log=self.parts.log,
        )

    def save(self, position: Position, stage: Stage, progress: Progress) -> None:
        models = {"backbone": self.parts.backbone, "method": self.parts.method}
        progress.flush_logs()  # the checkpoint records the log's length
        self.checkpoints.save(
            position,
            stage,
            models,
            self.best,
            health=self.health.state(),
            **({"ema": self.ema.state()} if self.ema is not None else {}),
            **progress.checkpoint_state(),
        )

    def consider_best(self, valid: dict[str, float], stage: int, epoch: int) -> None:
        """Keep this epoch's weights if its ``run.select_metric`` is the best so far."""
        run = self.run
        if run.select != "best" or not valid:
            return
        value = valid[run.select_metric]
        best = self.best
        if best is not None:
            better = (
                value < best["value"]
                if run.select_metric == "valid_loss"
                else value > best["value"]
            )
            if not better:
                return
        self.best = {
            "value": value,
            "stage": stage,
            "epoch": epoch,
            "backbone": detached(self.parts.backbone),
            "method": detached(self.parts.method),
        }

    def load_best(self) -> None:
        best = self.best
        if best is None:
            return
        self.parts.backbone.load_state_dict(best["backbone"])
        self.parts.method.load_state_dict(best["method"])
        self.parts.log(
            f"selected the weights of stage {best['stage']} epoch {best['epoch']} "
            f"({self.run.select_metric} {log_value_text(self.run.select_metric, best['value'])})"
        )


def detached(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``module``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
