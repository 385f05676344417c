"""TensorBoard logger: the run's training metrics as TensorBoard scalars.

Enable with ``--set run.loggers=tensorboard`` (needs the ``tensorboard`` extra:
``pip install 'audio-tuning-harness[tensorboard]'``). Event files go to
``<run folder>/tensorboard/``; watch a whole output folder with
``tensorboard --logdir runs`` (in-progress runs write under ``runs/.partial/``).
Each event's values become scalars ``<event>/<key>`` (``step/loss``,
``epoch/loss``, ``epoch/lr``, ...) at the run's global optimizer step; the trainings of
evaluation protocols (``stage`` 0) become ``<protocol>/<event>/<key>`` at their own step.
After evaluation, every evaluation metric becomes a scalar ``eval/<metric>`` at the last
global step, and the resolved configuration with those metrics one ``add_hparams`` entry
(TensorBoard's HPARAMS tab compares runs by them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Logger, UsageError
from harness_plugins.loggers._common import POSITION_KEYS

FOLDER = "tensorboard"


class TensorBoardLogger(Logger):
    """Writes every logged value as a TensorBoard scalar."""

    name = "tensorboard"
    description = "Training curves as TensorBoard event files in the run folder (tensorboard/)."

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "run.loggers names 'tensorboard' but the tensorboard package is not installed "
                "(pip install 'audio-tuning-harness[tensorboard]')"
            ) from None
        self._writer_cls = SummaryWriter
        self.writer = None
        self.last_step = 0

    def open(self, folder: Path, resume_step: int | None) -> None:
        # purge_step: TensorBoard drops what an interrupted run logged after its checkpoint
        purge = None if resume_step is None else resume_step + 1
        self.writer = self._writer_cls(log_dir=str(folder / FOLDER), purge_step=purge)

    def log(self, event: dict[str, Any]) -> None:
        if self.writer is None:
            return
        kind, step = event["event"], int(event["global_step"])
        self.last_step = max(self.last_step, step)
        if event.get("stage") == 0:  # a protocol's training (e.g. the device probe)
            kind, step = f"{event['stage_name']}/{kind}", int(event["step"])
        for key, value in event.items():
            if key not in POSITION_KEYS and isinstance(value, int | float):
                self.writer.add_scalar(f"{kind}/{key}", float(value), step)

    def log_results(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, self.last_step)
        # run_name ".": the hparams entry in this run's folder, not a timestamped sub-folder
        self.writer.add_hparams(
            hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name="."
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def register_loggers(register) -> None:
    register(TensorBoardLogger)
