"""Training metrics as they happen: ``metrics.jsonl`` and the loggers of ``run.loggers``.

One JSON object per line: a ``step`` event every ``run.log_every`` optimizer steps and
an ``epoch`` event after every epoch (fields: :class:`harness.api.Logger`). The file
lives in the run's in-progress folder while it trains and moves into the run folder
with it; a resumed run cuts it back to the length its checkpoint recorded, so no event
appears twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from harness.api import Logger
from harness.util.errors import HarnessError, naming

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends events to ``folder/metrics.jsonl`` and hands them to the loggers."""

    def __init__(self, folder: Path, loggers: list[Logger]) -> None:
        self.folder = folder
        self.loggers = loggers
        self.file = None

    def open(self, offset: int | None, resume_step: int | None) -> None:
        """Start the file (``offset`` None), or continue it cut to ``offset`` bytes."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / METRICS_FILE
            if offset is None or not path.exists():
                self.file = path.open("w")
            else:
                self.file = path.open("r+")
                self.file.truncate(offset)
                self.file.seek(offset)
        except OSError as err:
            raise HarnessError(f"cannot write {self.folder / METRICS_FILE}: {err}") from None
        for logger in self.loggers:
            logger.open(self.folder, resume_step)

    def offset(self) -> int:
        return self.file.tell() if self.file is not None else 0

    def log(self, event: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in event.items()}  # fmt: skip
        if self.file is not None:
            self.file.write(json.dumps(clean, allow_nan=False) + "\n")
            self.file.flush()
        for logger in self.loggers:
            logger.log(clean)

    def results(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's configuration and evaluation metrics to every logger (not to the file:
        ``metrics.json`` of the run folder holds them)."""
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        for logger in self.loggers:
            logger.log_results(hparams, finite)

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            with naming(file.name):
                file.close()
        for logger in self.loggers:
            logger.close()


class Clock:
    """Wall time, time spent waiting for batches, and clips seen since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.wait = 0.0
        self.clips = 0

    def rates(self, world: int = 1) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {
            "clips_per_s": self.clips * world / elapsed,
            "data_wait": min(1.0, self.wait / elapsed),
            "seconds": elapsed,
        }


def timed(batches: Iterable, clocks: list[Clock]) -> Iterator:
    """``batches``, adding the time each one took to arrive to every clock's ``wait``."""
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        waited = time.perf_counter() - started
        for clock in clocks:
            clock.wait += waited
        yield item


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration as ``section.key`` -> number, boolean or string (lists and
    None as text), what experiment trackers accept as hyperparameters."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flat_hparams(value, f"{name}.")
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr`` (the last group's, the heads') and ``lr/group<i>`` for every group."""
    groups = optimizer.param_groups
    rates = {"lr": float(groups[-1]["lr"])}
    if len(groups) > 1:
        rates |= {f"lr/group{i}": float(g["lr"]) for i, g in enumerate(groups)}
    return rates


def gpu_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}
