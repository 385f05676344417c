"""metrics.jsonl and the logger hook: every StepOutput.logs key, read back by TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, toy_run_args
from tests.test_resume import NNCLR, finished


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_metrics_jsonl_holds_every_log_key_and_tensorboard_reads_it_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(
        *toy_run_args(tmp_path, *NNCLR, "--epochs", "2"),
        *("--set", "run.sync_every=1", "--set", "run.loggers=tensorboard"),
    )
    assert result.returncode == 0, result.stderr
    folder = finished(tmp_path / "runs")
    logged = events(folder)
    steps = [e for e in logged if e["event"] == "step"]
    epochs = [e for e in logged if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 1] and [e["stage"] for e in epochs] == [1, 2]
    # nnclr-tcutmix's StepOutput.logs keys, the loss, learning rates, throughput, data wait
    for event in logged:
        assert {"loss", "lambda", "queue_filled", "lr", "clips_per_s", "data_wait"} <= set(event)
        assert 0 <= event["data_wait"] <= 1 and event["clips_per_s"] > 0
    assert [e["global_step"] for e in steps] == list(range(1, len(steps) + 1))
    for epoch in epochs:  # sync_every=1: an epoch's mean loss is the mean of its steps'
        own = [s["loss"] for s in steps if (s["stage"], s["epoch"]) == (epoch["stage"], 1)]
        assert epoch["loss"] == pytest.approx(sum(own) / len(own), rel=1e-6)
        assert epoch["queue_filled"] == pytest.approx(
            sum(s["queue_filled"] for s in steps if s["stage"] == epoch["stage"]) / len(own)
        )
    log = (folder / "log.txt").read_text()
    assert f"epoch 1/1: loss {epochs[0]['loss']:.4f}" in log
    assert not any((tmp_path / "runs" / ".partial").glob("*"))  # removed when finished
    reader = EventAccumulator(str(folder / "tensorboard"))
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    assert {"step/loss", "step/lambda", "step/queue_filled", "epoch/loss", "epoch/lr"} <= tags
    read = [(s.step, s.value) for s in reader.Scalars("epoch/loss")]
    assert [step for step, _ in read] == [e["global_step"] for e in epochs]
    assert [v for _, v in read] == pytest.approx([e["loss"] for e in epochs], rel=1e-6)
    # harness plot curves draws them (by run folder here; by run id through the store)
    png = tmp_path / "curves.png"
    store = str(tmp_path / "runs" / "results.sqlite")
    drawn = run_cli("plot", "curves", "--run", folder.name, "--store", store, "--output", str(png))
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "curves" in drawn.stdout
    bad = run_cli("plot", "curves", "--run", str(folder), "--metrics", "loss,nope")
    assert bad.returncode == 2 and "nope not logged" in bad.stderr


def test_unknown_logger_is_a_one_line_error(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1", "--set", "run.loggers=nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == "harness: error: unknown logger 'nope'. Available: tensorboard"


def test_protocol_trainings_run_through_the_engine_and_reach_the_loggers(tmp_path):
    """The device probe and fine-tuning train through the core's loop: their steps and epochs
    are logged (stage 0, named by the protocol) beside the run's own, with their losses."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(
        *toy_run_args(tmp_path, "--epochs", "1", "--protocol", "device-probe,finetune"),
        *("--set", "protocol.finetune.epochs=2", "--set", "protocol.device-probe.max_epochs=3"),
        *("--set", "run.sync_every=1", "--set", "run.loggers=tensorboard"),
    )
    assert result.returncode == 0, result.stderr
    folder = finished(tmp_path / "runs")
    logged = events(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    by_name: dict[str, list[dict]] = {}
    for event in logged:
        by_name.setdefault(event["stage_name"], []).append(event)
    assert set(by_name) == {"train", "device-probe", "finetune"}
    for name in ("device-probe", "finetune"):
        assert {e["stage"] for e in by_name[name]} == {0}
        assert {e["event"] for e in by_name[name]} == {"step", "epoch"}
        assert all({"loss", "lr", "clips_per_s"} <= set(e) for e in by_name[name])
    probe_epochs = [e for e in by_name["device-probe"] if e["event"] == "epoch"]
    assert len(probe_epochs) == metrics["device-probe/epochs"]
    finetune_epochs = [e for e in by_name["finetune"] if e["event"] == "epoch"]
    assert [e["epoch"] for e in finetune_epochs] == [1, 2]
    assert finetune_epochs[-1]["loss"] == pytest.approx(metrics["finetune/train_loss"])
    # the run's own global step does not move while protocols train
    train_steps = [e["global_step"] for e in by_name["train"] if e["event"] == "step"]
    assert {e["global_step"] for e in by_name["finetune"]} == {max(train_steps)}
    reader = EventAccumulator(str(folder / "tensorboard"))
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    assert {"finetune/epoch/loss", "device-probe/step/loss", "epoch/loss"} <= tags
    assert len(reader.Scalars("epoch/loss")) == 1  # the protocols' epochs are not mixed in
