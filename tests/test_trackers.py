"""Experiment trackers through the logger hook, read back with their own libraries:
TensorBoard (evaluation metrics and ``add_hparams``), W&B (offline mode) and MLflow (its SQLite
file store in the run folder), all three in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, toy_run_args
from tests.test_resume import finished


def logged(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    for package in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(package)
    tmp_path = tmp_path_factory.mktemp("tracked")
    result = run_cli(
        *toy_run_args(tmp_path, "--epochs", "2", "--batch-size", "4"),
        *("--set", "run.log_every=2", "--set", "run.loggers=tensorboard,wandb,mlflow"),
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": ""},
    )
    assert result.returncode == 0, result.stderr
    return finished(tmp_path / "runs")


def test_tensorboard_gets_evaluation_metrics_and_hparams(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics = json.loads((tracked_run / "metrics.json").read_text())
    reader = EventAccumulator(str(tracked_run / "tensorboard"))
    reader.Reload()
    for key, value in metrics.items():
        (scalar,) = reader.Scalars(f"eval/{key}")
        assert scalar.value == pytest.approx(value, rel=1e-6)
    content = reader.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = info.session_start_info.hparams
    assert hparams["run.epochs"].number_value == 2
    assert hparams["backbone.name"].string_value == "toy"
    steps = [e for e in logged(tracked_run) if e["event"] == "step"]
    assert [s.step for s in reader.Scalars("step/loss")] == [e["global_step"] for e in steps]


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file: a 7-byte ``:W&B`` header, then
    LevelDB-log records (4-byte checksum, 2-byte length, 1-byte type) in 32 KiB blocks."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pieces = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def items(entries) -> dict:
    """W&B's key/value entries (a key with ``/`` comes as a one-element ``nested_key``)."""
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_wandb_offline_run_holds_curves_config_and_summary(tracked_run):
    (offline,) = (tracked_run / "wandb").glob("offline-run-*")
    assert offline.name.endswith(tracked_run.name)  # the W&B run id is the harness run id
    (run_file,) = offline.glob("*.wandb")
    history, summary, config = [], {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(items(record.history.item))
        elif kind == "summary":
            summary |= items(record.summary.update)
        elif kind == "config":
            config |= items(record.config.update)
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    for key, value in metrics.items():
        assert summary[f"eval/{key}"] == pytest.approx(value, rel=1e-6)
    epochs = [e for e in logged(tracked_run) if e["event"] == "epoch"]
    logged_epochs = [(h["_step"], h["epoch/loss"]) for h in history if "epoch/loss" in h]
    assert [step for step, _ in logged_epochs] == [e["global_step"] for e in epochs]
    assert [v for _, v in logged_epochs] == pytest.approx([e["loss"] for e in epochs], rel=1e-6)
    assert config["run.epochs"] == 2 and config["backbone.name"] == "toy"


def test_mlflow_file_store_holds_curves_params_and_metrics(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("harness")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == tracked_run.name and run.info.status == "FINISHED"
    assert run.data.params["run.epochs"] == "2" and run.data.params["method.name"] == "ce"
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    for key, value in metrics.items():
        assert run.data.metrics[f"eval/{key}"] == pytest.approx(value, rel=1e-6)
    epochs = [e for e in logged(tracked_run) if e["event"] == "epoch"]
    history = client.get_metric_history(run.info.run_id, "epoch/loss")
    assert [m.step for m in history] == [e["global_step"] for e in epochs]
    assert [m.value for m in history] == pytest.approx([e["loss"] for e in epochs], rel=1e-6)
