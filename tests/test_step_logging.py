"""``run.log_every``: a ``step`` event every N optimizer steps whose values are read from the
device only every ``run.sync_every`` steps (no added host sync), each the exact mean of its
own steps' losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.api import Batch, Phase, RunSettings, StepOutput, Training
from harness.engine import loop as loop_module
from harness.engine.distributed import Ranks
from harness.engine.trainer import Engine, FitHooks

CPU = torch.device("cpu")


class Scale(nn.Module):
    """Fits ``w * x`` to ``y``; logs its loss again as ``mse`` (a log key)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.2))

    def forward(self, batch: Batch) -> StepOutput:
        loss = ((self.w * batch.features - batch.wave) ** 2).mean()
        return StepOutput(loss, {"mse": loss.detach()})


class Batches:
    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, generator=None, skip=0, worker_seed=None):
        return iter(self.batches[skip:])

    def close(self) -> None:
        pass


def batches(n: int) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.randn(4, generator=g)
        out.append(Batch(wave=3.0 * x, label=torch.zeros(4, dtype=torch.long),
                         device=torch.zeros(4, dtype=torch.long), index=torch.arange(4),
                         features=x))  # fmt: skip
    return out


def train(log_every: int, sync_every: int, steps: int = 12):
    """Events and, interleaved, the optimizer steps after which they arrived."""
    timeline: list[tuple[str, int]] = []
    events: list[dict] = []
    step_losses: list[float] = []

    def log_event(kind: str, values: dict, **where) -> None:
        events.append({"event": kind, **where, **values})
        timeline.append((kind, where["step"]))

    def after_step(progress) -> None:
        step_losses.append(float(progress.step_logs["mse"]))
        timeline.append(("optimizer step", progress.loop.step))

    engine = Engine(CPU, Ranks(), "fp32", sync_every, log_event, log_every=log_every)
    model = Scale()
    spec = Training(name="scale", model=model, data=Batches(batches(steps)), epochs=1,
                    batch_size=4, phases=[Phase("main", [{"params": [model.w]}])],
                    own_rng=False, counts_globally=True)  # fmt: skip
    engine.fit(spec, FitHooks(after_step=after_step))
    return timeline, events, step_losses


def test_a_step_event_every_log_every_steps_holds_the_mean_of_its_steps():
    _, events, losses = train(log_every=3, sync_every=6)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [3, 6, 9, 12]
    assert [e["global_step"] for e in steps] == [3, 6, 9, 12]
    for event in steps:
        window = losses[event["step"] - 3 : event["step"]]
        assert event["loss"] == pytest.approx(sum(window) / 3, rel=1e-6)
        assert event["mse"] == pytest.approx(sum(window) / 3, rel=1e-6)
        assert event["lr"] > 0 and event["clips_per_s"] > 0


def test_step_events_are_read_only_at_the_sync_points():
    timeline, _, _ = train(log_every=2, sync_every=4, steps=8)
    # the events of steps 2 and 4 arrive together after the 4th optimizer step, not before
    assert timeline[:6] == [
        ("optimizer step", 1), ("optimizer step", 2), ("optimizer step", 3),
        ("step", 2), ("step", 4), ("optimizer step", 4),
    ]  # fmt: skip
    assert timeline[-4:] == [("step", 6), ("step", 8), ("optimizer step", 8), ("epoch", 8)]


def test_the_device_is_read_once_per_sync_window_however_often_it_logs():
    reads: list[int] = []
    real = loop_module.distributed.mean_over_ranks

    def counting(value):
        reads.append(value.numel())
        return real(value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_module.distributed, "mean_over_ranks", counting)
        train(log_every=1, sync_every=6, steps=12)
    # two reads of six events each (loss and mse: 2 values each), then the epoch's means
    assert reads == [12, 12, 2]


def test_log_every_defaults_to_ten_and_is_checked():
    from harness.registry.config import UNHASHED_RUN_KEYS

    assert RunSettings().log_every == 10
    assert "log_every" in UNHASHED_RUN_KEYS  # logging more often never changes the run
    assert RunSettings.domains["log_every"].problem(0)
    assert not RunSettings.domains["log_every"].problem(1)
