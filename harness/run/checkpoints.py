"""The in-progress folder of a run (``OUT/.partial/<run id>/``): checkpoints for exact
resume, ``state.json`` and the training metrics (``metrics.jsonl`` and the loggers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from harness.api import Stage
from harness.engine import distributed
from harness.engine.metrics_log import MetricsLog, flat_hparams
from harness.engine.resume import (
    FORMAT,
    Position,
    module_state,
    rank_file,
    rng_state,
    save_atomic,
    start_partial,
    write_state,
)
from harness.registry.config import RunConfig
from harness.run.components import RunLog
from harness.util.faults import checkpoint


class Checkpoints:
    """Writes a run's in-progress folder (nothing when it has none) and its metrics."""

    def __init__(
        self,
        cfg: RunConfig,
        ranks: distributed.Ranks,
        log: RunLog,
        global_step: Callable[[], int],
    ) -> None:
        self.cfg, self.ranks, self.log = cfg, ranks, log
        self.global_step = global_step
        """The run's optimizer steps over all stages so far (the engine's count)."""
        self.folder: Path | None = None
        """The in-progress folder checkpoints go to (None: no checkpoints)."""
        self.resume_state: dict[str, Any] | None = None
        """This process's checkpoint when the run resumes (None: a fresh start)."""
        self.created = ""
        """When the run was first started (ISO 8601), for ``state.json``."""
        self.stages: list[tuple[str, int]] = []
        """Name and epochs of each of the method's stages."""
        self.metrics: MetricsLog | None = None
        """``metrics.jsonl`` and the loggers (the main process of a run with a folder)."""

    def open_metrics(self, first_stage: Stage) -> None:
        """Start (or continue) the in-progress folder's ``metrics.jsonl`` and loggers."""
        folder = self.folder
        if folder is None or not self.ranks.is_main:
            return
        state = self.resume_state
        if state is None:  # a fresh start: the folder exists before the first checkpoint
            start_partial(folder, self.cfg.as_dict())
            write_state(folder, self.state_info(first_stage, Position(), checkpointed=False))
        self.metrics = MetricsLog(folder, [c.build() for c in self.cfg.loggers])
        if state is None:
            self.metrics.open(None, None)
        else:
            self.metrics.open(int(state.get("metrics_offset", 0)), self.global_step())

    def log_event(self, kind: str, values: dict[str, float], **where: Any) -> None:
        """One training event into ``metrics.jsonl`` and the loggers (when they are open)."""
        if self.metrics is not None:
            # an event read from the device later than it happened carries its own step
            global_step = where.pop("global_step", None)
            if global_step is None:
                global_step = self.global_step()
            self.metrics.log({"event": kind, **where, "global_step": global_step, **values})

    def log_results(self, metrics: dict[str, float]) -> None:
        """The resolved configuration and the evaluation metrics to the loggers."""
        if self.metrics is not None:
            self.metrics.results(flat_hparams(self.cfg.as_dict()), metrics)

    def save(
        self,
        position: Position,
        stage: Stage,
        models: dict[str, nn.Module],
        best: dict[str, Any] | None,
        **state: Any,
    ) -> None:
        """Write this rank's checkpoint (and, on rank 0, ``state.json``) atomically."""
        folder = self.folder
        if folder is None:
            return
        if self.ranks.is_main and not (folder / "config.json").is_file():
            start_partial(folder, self.cfg.as_dict())
        distributed.barrier()
        payload = {
            "format": FORMAT,
            "config_hash": self.cfg.config_hash(),
            "world": self.ranks.world,
            "position": position.as_dict(),
            **{name: module_state(module) for name, module in models.items()},
            "rng": rng_state(),
            "log": list(self.log.lines),
            "global_step": self.global_step(),
            "best": best,
            "metrics_offset": self.metrics.offset() if self.metrics is not None else 0,
            **state,
        }
        save_atomic(payload, rank_file(folder, self.ranks.rank))
        if self.ranks.is_main:
            write_state(folder, self.state_info(stage, position))
        checkpoint(f"checkpoint {position.stage}:{position.epoch}:{position.micro}")

    def state_info(
        self, stage: Stage, position: Position, checkpointed: bool = True
    ) -> dict[str, Any]:
        """What ``state.json`` says about the in-progress run."""
        cfg = self.cfg
        return {
            "run_id": self.folder.name if self.folder else "",
            "created": self.created,
            "config_hash": cfg.config_hash(),
            "backbone": cfg.backbone.name,
            "method": cfg.method.name,
            "dataset": cfg.dataset.name,
            "world": self.ranks.world,
            "stages": len(self.stages),
            "stage_name": stage.name,
            "stage_epochs": stage.epochs,
            "checkpoint": checkpointed,
            "global_step": self.global_step(),
            **position.as_dict(),
        }

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
