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
        *("--set", "run.sync_every=1", "--set", "run.log_every=1"),
        *("--set", "run.loggers=tensorboard"),
    )
    assert result.returncode == 0, result.stderr
    folder = finished(tmp_path / "runs")
    logged = events(folder)
    steps = [e for e in logged if e["event"] == "step"]
    epochs = [e for e in logged if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 1] and [e["stage"] for e in epochs] == [1, 2]
    # nnclr-tcutmix's StepOutput.logs keys, the loss, learning rates, throughput, data wait
    for event in steps + epochs:  # (the health probe's events carry their own values)
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
    assert result.stderr.strip() == (
        "harness: error: unknown logger 'nope'. Available: mlflow, tensorboard, wandb"
    )


def test_protocol_trainings_run_through_the_engine_and_reach_the_loggers(tmp_path):
    """The device probe and fine-tuning train through the core's loop: their steps and epochs
    are logged (stage 0, named by the protocol) beside the run's own, with their losses."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(
        *toy_run_args(tmp_path, "--epochs", "1", "--protocol", "device-probe,finetune"),
        *("--set", "protocol.finetune.epochs=2", "--set", "protocol.device-probe.max_epochs=3"),
        *("--set", "run.sync_every=1", "--set", "run.log_every=1"),
        *("--set", "run.loggers=tensorboard"),
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


# -- the pieces, in-process: the event file, RNG and module state --------------------------


class RecordingLogger:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.opened: list[tuple] = []
        self.closed = 0

    def open(self, folder, resume_step) -> None:
        self.opened.append((folder, resume_step))

    def log(self, event: dict) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1


def test_metrics_log_writes_nulls_for_non_finite_values_and_resumes_at_an_offset(tmp_path):
    from harness.engine.metrics_log import MetricsLog

    logger = RecordingLogger()
    log = MetricsLog(tmp_path / "a" / "b", [logger])
    assert log.offset() == 0
    log.open(None, None)
    log.log({"step": 1, "loss": float("nan"), "lr": 0.5, "name": "x"})
    cut = log.offset()
    log.log({"step": 2, "loss": float("inf")})
    path = tmp_path / "a" / "b" / "metrics.jsonl"
    assert cut == len('{"step": 1, "loss": null, "lr": 0.5, "name": "x"}\n')
    assert log.offset() == path.stat().st_size
    log.close()
    assert log.offset() == 0 and logger.closed == 1
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "loss": None, "lr": 0.5, "name": "x"},
        {"step": 2, "loss": None},
    ]
    assert logger.events[1] == {"step": 2, "loss": None}
    resumed = MetricsLog(tmp_path / "a" / "b", [logger])
    resumed.open(cut, 1)
    resumed.log({"step": 2, "loss": 1.0})
    resumed.close()
    assert path.read_text().splitlines()[1:] == ['{"step": 2, "loss": 1.0}']
    assert logger.opened[-1] == (tmp_path / "a" / "b", 1)
    fresh = MetricsLog(tmp_path / "c", [])
    fresh.open(123, None)  # an offset without a file: a new file
    fresh.log({"step": 1})
    fresh.close()
    assert (tmp_path / "c" / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_rng_state_survives_a_weights_only_checkpoint_and_replays_every_generator(tmp_path):
    import random

    import numpy as np
    import torch

    from harness.engine.resume import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    assert set(state) >= {"python", "numpy", "torch"}
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_module_state_keeps_public_scalars_buffers_and_trainable_flags():
    import torch
    from torch import nn

    from harness.engine.resume import Position, load_module_state, module_state

    class Queue(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pointer, self.label, self.full, self._cache = 0, "q", False, 5
            self.register_buffer("items", torch.zeros(2), persistent=False)

    model = nn.Sequential(nn.Linear(2, 2), Queue())
    model[0].bias.requires_grad_(False)
    model[1].pointer, model[1].items[:] = 7, torch.tensor([1.0, 2.0])
    state = module_state(model)
    assert state["scalars"] == {
        "0:in_features": 2, "0:out_features": 2, "1:pointer": 7, "1:label": "q", "1:full": False,
    }  # fmt: skip
    assert state["requires_grad"] == {"0.weight": True, "0.bias": False}
    assert set(state["buffers"]) == {"1.items"}

    restored = nn.Sequential(nn.Linear(2, 2), Queue())
    load_module_state(restored, state, "method")
    assert restored[1].pointer == 7 and restored[1].items.tolist() == [1.0, 2.0]
    assert not restored[0].bias.requires_grad
    torch.testing.assert_close(restored[0].weight, model[0].weight)
    assert Position(2, 3, 40, 5).as_dict() == {"stage": 2, "epoch": 3, "step": 40, "micro": 5}


def test_a_nested_non_finite_value_is_refused_not_written_as_a_bare_nan(tmp_path):
    from harness.engine.metrics_log import MetricsLog

    log = MetricsLog(tmp_path, [])
    log.open(None, None)
    log.log({"event": "epoch", "loss": float("nan")})
    with pytest.raises(ValueError):
        log.log({"event": "epoch", "nested": {"loss": float("inf")}})
    log.close()
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()


def test_clock_rates_by_hand(monkeypatch):
    from harness.engine import metrics_log

    now = [10.0]
    monkeypatch.setattr(metrics_log.time, "perf_counter", lambda: now[0])
    clock = metrics_log.Clock()
    assert (clock.started, clock.wait, clock.clips) == (10.0, 0.0, 0)
    clock.clips, clock.wait = 8, 1.0
    now[0] = 14.0
    assert clock.rates(world=2) == {"clips_per_s": 4.0, "data_wait": 0.25, "seconds": 4.0}
    clock.wait = 9.0
    assert clock.rates()["data_wait"] == 1.0  # capped: waits overlap on several ranks
    clock.reset()
    assert (clock.started, clock.wait, clock.clips) == (14.0, 0.0, 0)
    assert clock.rates() == {"clips_per_s": 0.0, "data_wait": 0.0, "seconds": 1e-9}


def test_timed_adds_each_items_wait_to_every_clock(monkeypatch):
    from harness.engine import metrics_log

    ticks = iter([0.0, 0.5, 1.0, 3.0, 3.0, 3.25, 4.0])
    monkeypatch.setattr(metrics_log.time, "perf_counter", lambda: next(ticks))
    a, b = metrics_log.Clock(), metrics_log.Clock()  # take ticks 0.0 and 0.5
    b.wait = 1.0
    assert list(metrics_log.timed(["x", "y"], [a, b])) == ["x", "y"]
    assert (a.wait, b.wait) == (2.25, 3.25)  # 1.0 -> 3.0 and 3.0 -> 3.25


def test_learning_rates_name_the_heads_lr_and_every_group():
    import torch

    from harness.engine.metrics_log import gpu_memory, learning_rates

    one = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert learning_rates(one) == {"lr": 0.5}
    groups = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (0.1, 0.2, 0.3)]
    )
    assert learning_rates(groups) == {
        "lr": 0.3, "lr/group0": 0.1, "lr/group1": 0.2, "lr/group2": 0.3,
    }  # fmt: skip
    assert gpu_memory(torch.device("cpu")) == {}
