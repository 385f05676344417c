"""Weights & Biases logger: a run's training curves, configuration and evaluation metrics.

Enable with ``--set run.loggers=wandb`` (needs the ``wandb`` extra:
``pip install 'audio-tuning-harness[wandb]'``). W&B is configured as usual through its
environment variables: ``WANDB_PROJECT`` (default ``harness``), ``WANDB_ENTITY``,
``WANDB_MODE=offline`` (no network; ``wandb sync <run folder>/wandb/offline-run-*`` uploads
later). Its files go to ``<run folder>/wandb/``. Each event's values are logged as
``<event>/<key>`` (``step/loss``, ``epoch/lr``, ...; a protocol's trainings as
``<protocol>/<event>/<key>``) at the run's global optimizer step; after evaluation the
resolved configuration becomes the W&B run's config and the evaluation metrics its summary
(``eval/<metric>``). The W&B run's id is the harness run id, so a resumed run continues it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Logger, UsageError
from harness_plugins.loggers._common import event_values


class WandbLogger(Logger):
    """Logs every event to a Weights & Biases run (online or, with WANDB_MODE, offline)."""

    name = "wandb"
    description = "Training curves, config and metrics to Weights & Biases (wandb/ in the run)."

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        try:
            import wandb
        except ImportError:
            raise UsageError(
                "run.loggers names 'wandb' but the wandb package is not installed "
                "(pip install 'audio-tuning-harness[wandb]')"
            ) from None
        self._wandb = wandb
        self.run = None
        self.last_step = 0

    def open(self, folder: Path, resume_step: int | None) -> None:
        self.last_step = resume_step or 0
        self.run = self._wandb.init(
            project=os.environ.get("WANDB_PROJECT", "harness"),
            dir=str(folder),
            id=folder.name,
            name=folder.name,
            resume="allow",
            reinit="create_new",
        )

    def log(self, event: dict[str, Any]) -> None:
        if self.run is None:
            return
        # W&B steps must not go back: a protocol's training logs at the run's last step
        self.last_step = max(self.last_step, int(event["global_step"]))
        self.run.log(event_values(event), step=self.last_step)

    def log_results(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.run is None:
            return
        self.run.config.update(hparams, allow_val_change=True)
        self.run.summary.update({f"eval/{k}": v for k, v in metrics.items()})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


@hookimpl
def register_loggers(register) -> None:
    register(WandbLogger)
