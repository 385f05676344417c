"""MLflow logger: a run's training curves, parameters and evaluation metrics.

Enable with ``--set run.loggers=mlflow`` (needs the ``mlflow`` extra:
``pip install 'audio-tuning-harness[mlflow]'``). The tracking server is MLflow's usual
``MLFLOW_TRACKING_URI`` (a server, ``sqlite:///...``); unset, an SQLite file in the run
folder (``mlflow ui --backend-store-uri sqlite:///<run folder>/mlflow.db``; MLflow 3 keeps
its folder store only for old set-ups).
The experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``harness``), the MLflow run's name
the harness run id. Each event's values become metrics ``<event>/<key>`` (a protocol's
trainings ``<protocol>/<event>/<key>``) at the run's global optimizer step; after evaluation
the resolved configuration becomes the run's parameters and the evaluation metrics
``eval/<metric>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Logger, UsageError
from harness_plugins.loggers._common import event_values

DB_FILE = "mlflow.db"
MAX_PARAM_LENGTH = 6000
"""MLflow's limit on a parameter value's length."""


class MlflowLogger(Logger):
    """Logs every event as MLflow metrics of one MLflow run per harness run."""

    name = "mlflow"
    description = "Training curves, parameters and metrics to MLflow (mlflow.db in the run)."

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UsageError(
                "run.loggers names 'mlflow' but the mlflow package is not installed "
                "(pip install 'audio-tuning-harness[mlflow]')"
            ) from None
        self._client_cls, self._metric, self._param = MlflowClient, Metric, Param
        self.client = None
        self.run_id = ""
        self.last_step = 0

    def open(self, folder: Path, resume_step: int | None) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder.resolve()}/{DB_FILE}"
        self.client = self._client_cls(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "harness")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(
                name, artifact_location=(folder / "mlartifacts").resolve().as_uri()
            )
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"attributes.run_name = '{folder.name}'"
        )
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=folder.name).info.run_id
        self.last_step = resume_step or 0

    def log(self, event: dict[str, Any]) -> None:
        if self.client is None:
            return
        self.last_step = max(self.last_step, int(event["global_step"]))
        stamp = int(time.time() * 1000)
        metrics = [
            self._metric(key, value, stamp, self.last_step)
            for key, value in event_values(event).items()
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_results(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        stamp = int(time.time() * 1000)
        params = [self._param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in hparams.items()]
        for start in range(0, len(params), 100):  # MLflow takes 100 parameters a batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        results = [
            self._metric(f"eval/{key}", value, stamp, self.last_step)
            for key, value in metrics.items()
        ]
        self.client.log_batch(self.run_id, metrics=results)

    def close(self) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id)
            self.client = None


@hookimpl
def register_loggers(register) -> None:
    register(MlflowLogger)
