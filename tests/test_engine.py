"""The training engine (harness.engine.trainer, its loop in harness.engine.loop) against
hand-computed references: gradient accumulation, clipping, schedules, log events, divergence
checks and protocol jobs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api import Batch, FeatureData, StepOutput, Training, TrainingJob
from harness.engine import trainer as engine_module
from harness.engine.batches import prepare_batch
from harness.engine.distributed import Ranks
from harness.engine.loop import Accumulator, Loop, StepModule, Stepper, check_finite
from harness.engine.schedules import (
    Schedule,
    WarmupCosine,
    WarmupPlateau,
    build_schedule,
    scale_lrs,
)
from harness.engine.trainer import Engine, FitHooks, build_optimizer, standalone
from harness.util.errors import HarnessError, UsageError

CPU = torch.device("cpu")
W0 = torch.tensor([0.5, -0.25, 1.0])


class ListSource:
    """A batch source over fixed batches that records how each pass was asked for."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.calls: list[tuple[int, int | None]] = []

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, generator=None, skip=0, worker_seed=None):
        self.calls.append((skip, worker_seed))
        return iter(self.batches[skip:])

    def close(self) -> None:
        pass


class Regression(nn.Module):
    """Squared error of ``wave @ weight`` against ``label``; logs twice the loss and 1.5."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(W0.clone())

    def forward(self, batch: Batch) -> StepOutput:
        loss = squared_error(batch, self.weight)
        return StepOutput(loss, {"double": loss.detach() * 2, "const": 1.5})


class RecordingSchedule(Schedule):
    def __init__(self) -> None:
        self.before: list[int] = []
        self.after: list[tuple[float, int]] = []

    def before_step(self, optimizer, step):
        self.before.append(step)

    def after_epoch(self, optimizer, loss, step):
        self.after.append((loss, step))


def squared_error(batch: Batch, weight: torch.Tensor) -> torch.Tensor:
    return ((batch.wave @ weight - batch.label) ** 2).mean()


def batches(n: int, size: int = 2, scale: float = 1.0, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            wave=torch.randn(size, 3, generator=g) * scale,
            label=torch.randn(size, generator=g),
            device=torch.zeros(size, dtype=torch.long),
            index=torch.arange(size),
        )
        for _ in range(n)
    ]


def reference_weights(data: list[Batch], accum: int, lr: float, clip: float = 0.0):
    """Plain SGD by hand: the mean gradient of ``accum`` batches per step, clipped to norm
    ``clip``; batches that do not fill a step are left out."""
    weight = W0.clone()
    usable = len(data) // accum * accum
    for start in range(0, usable, accum):
        grad = torch.zeros(3)
        for batch in data[start : start + accum]:
            w = weight.clone().requires_grad_()
            squared_error(batch, w).backward()
            grad += w.grad / accum
        if clip and grad.norm() > clip:
            grad = grad * clip / grad.norm()
        weight = weight - lr * grad
    return weight


class Events:
    def __init__(self) -> None:
        self.logged: list[tuple[str, dict, dict]] = []

    def __call__(self, kind, values, **where):
        self.logged.append((kind, values, where))

    def of(self, kind: str) -> list[tuple[dict, dict]]:
        return [(v, w) for k, v, w in self.logged if k == kind]


def make_loop(data, accum=1, clip=0.0, lr=0.1, number=1, name="train", epochs=3, prepared=None):
    model = Regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]

    def prepare(batch):
        if prepared is not None:
            prepared.append(batch)
        return batch

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loop = Loop(
        name=name,
        number=number,
        module=StepModule(model, model),
        steppers=[Stepper(name, optimizer, RecordingSchedule(), scaler)],
        source=ListSource(data),
        prepare=prepare,
        epochs=epochs,
        accum=accum,
        grad_clip=clip,
    )
    return loop, model


def run_one_epoch(loop, engine=None, epoch=0, skip=0, after_step=None):
    engine = engine or Engine(CPU, Ranks(), "fp32", 1, Events())
    sums, window = Accumulator(CPU), Accumulator(CPU)
    clock = engine.run_epoch(
        loop, epoch, torch.Generator(), sums, window, skip=skip, worker_seed=7,
        after_step=after_step,
    )  # fmt: skip
    return engine, sums, clock


# -- run_epoch ------------------------------------------------------------------------


@pytest.mark.parametrize(("accum", "n"), [(1, 3), (2, 5), (3, 7)])
def test_an_epoch_takes_one_sgd_step_per_accum_batches_and_drops_the_rest(accum, n):
    data = batches(n)
    seen: list[Batch] = []
    loop, model = make_loop(data, accum=accum, prepared=seen)
    engine, sums, clock = run_one_epoch(loop)
    steps = n // accum
    assert torch.allclose(model.weight.detach(), reference_weights(data, accum, 0.1), atol=1e-6)
    assert loop.step == steps and engine.global_step == steps
    assert seen == data[: steps * accum]  # the batches after the last full step: left out
    assert loop.schedule.before == list(range(steps))  # once per optimizer step
    assert sums.steps == steps * accum and clock.clips == 2 * steps * accum
    assert loop.source.calls == [(0, 7)]
    assert all(p.grad is None for p in model.parameters())  # zeroed after the last step


def test_gradients_are_clipped_to_the_norm_over_all_groups():
    data = batches(4, scale=20.0)
    loop, model = make_loop(data, accum=2, clip=0.5)
    run_one_epoch(loop)
    clipped = reference_weights(data, 2, 0.1, clip=0.5)
    assert torch.allclose(model.weight.detach(), clipped, atol=1e-6)
    assert not torch.allclose(clipped, reference_weights(data, 2, 0.1), atol=1e-3)


def test_a_protocol_job_does_not_count_in_the_global_step():
    loop, _ = make_loop(batches(4))
    loop.counts_globally = False
    engine, _, _ = run_one_epoch(loop)
    assert (loop.step, engine.global_step) == (4, 0)


def test_step_events_carry_the_window_means_and_where_they_happened():
    data = batches(6)
    events = Events()
    engine = Engine(CPU, Ranks(), "fp32", 2, events)  # an event every second step
    loop, _ = make_loop(data, accum=1, number=2, name="top")
    run_one_epoch(loop, engine, epoch=1)
    weight = W0.clone()
    losses = []
    for batch in data:  # the losses as the model saw them, step by step
        w = weight.clone().requires_grad_()
        loss = squared_error(batch, w)
        loss.backward()
        losses.append(float(loss.detach()))
        weight = weight - 0.1 * w.grad
    steps = events.of("step")
    assert [w for _, w in steps] == [
        {"stage": 2, "stage_name": "top", "epoch": 2, "step": s, "global_step": s}
        for s in (2, 4, 6)
    ]
    for (values, _), pair in zip(steps, (losses[0:2], losses[2:4], losses[4:6]), strict=True):
        assert values["loss"] == pytest.approx(sum(pair) / 2, rel=1e-5)
        assert values["double"] == pytest.approx(sum(pair), rel=1e-5)
        assert values["const"] == pytest.approx(1.5)
        assert values["lr"] == pytest.approx(0.1)
        assert round(values["clips_per_s"] * values["seconds"]) == 4  # 2 batches of 2 clips


def test_a_resumed_epoch_skips_the_batches_done_and_keeps_the_step_grid():
    data = batches(6)
    loop, model = make_loop(data, accum=2)
    loop.step = 1
    after: list[tuple[int, int]] = []
    _, sums, _ = run_one_epoch(
        loop, skip=2, after_step=lambda lp, micro, *rest: after.append((lp.step, micro))
    )
    assert loop.source.calls == [(2, 7)]
    assert loop.schedule.before == [1, 2]  # micro-batches 2 and 4 start steps 1 and 2
    assert after == [(2, 3), (3, 5)]
    assert sums.steps == 4
    expected = reference_weights(data[2:], 2, 0.1)
    assert torch.allclose(model.weight.detach(), expected, atol=1e-6)


def test_the_progress_bar_names_the_epoch_and_protocol_jobs_their_name(monkeypatch):
    shown: list[tuple[str, int]] = []

    def fake_progress(items, desc, total=None, **kw):
        shown.append((desc, total))
        return iter(items)

    monkeypatch.setattr(engine_module, "progress", fake_progress)
    run_one_epoch(make_loop(batches(2), epochs=3)[0], epoch=1)
    run_one_epoch(make_loop(batches(2), number=0, name="probe", epochs=4)[0])
    assert shown == [("epoch 2/3", 2), ("probe epoch 1/4", 2)]


def test_a_non_finite_loss_stops_the_epoch_with_where_it_happened():
    data = batches(3)
    data[1].label = torch.tensor([math.inf, 0.0])
    loop, _ = make_loop(data)
    with pytest.raises(HarnessError) as raised:
        run_one_epoch(loop)
    assert str(raised.value).startswith(
        "training diverged: the loss was not finite in 1 of the last 1 batches "
        "(epoch 1, optimizer step 2)"
    )


# -- end_epoch --------------------------------------------------------------------------


def test_end_epoch_logs_the_mean_loss_and_steps_the_schedule_on_the_watched_value():
    events = Events()
    engine = Engine(CPU, Ranks(), "fp32", 1, events)
    loop, _ = make_loop(batches(1), number=0, name="probe", epochs=5)
    loop.step = 9
    sums = Accumulator(CPU)
    sums.add(torch.tensor(1.0), {"acc": 50.0})
    sums.add(torch.tensor(3.0), {"acc": 70.0})
    clock = engine_module.Clock()
    clock.clips = 6
    loss, logs, line = engine.end_epoch(loop, 2, sums, clock, 0.0, {"valid_loss": 0.25})
    assert (loss, logs) == (2.0, {"acc": 60.0})
    (values, where), = events.of("epoch")  # fmt: skip
    assert where == {"stage": 0, "stage_name": "probe", "epoch": 3, "step": 9}
    assert {k: values[k] for k in ("loss", "acc", "valid_loss", "lr")} == {
        "loss": 2.0, "acc": 60.0, "valid_loss": 0.25, "lr": 0.1,
    }  # fmt: skip
    assert round(values["clips_per_s"] * values["seconds"]) == 6
    assert loop.schedule.after == [(2.0, 9)]
    assert line.startswith(
        "probe epoch 3/5: loss 2.0000, acc 60.0000, valid_loss 0.2500, lr 1.00e-01, "
    )
    assert line.endswith("s")
    engine.end_epoch(loop, 0, sums, clock, 0.0, None, watch=0.75)
    assert loop.schedule.after[-1] == (0.75, 9)
    loop.number = 1
    assert engine.end_epoch(loop, 0, sums, clock, 0.0)[2].startswith("epoch 1/5: loss 2.0000")


# -- Accumulator --------------------------------------------------------------------------


def test_accumulator_sums_finite_losses_counts_the_others_and_averages_logs():
    sums = Accumulator(CPU)
    assert sums.steps == 0 and math.isnan(sums.means()[0])
    for loss, logs in [
        (2.0, {"b": torch.tensor(1.0), "a": 4}),
        (math.nan, {"b": torch.tensor(3.0), "a": 2}),
        (math.inf, {"b": 0.5, "a": 0}),
        (-math.inf, {"b": 0.5, "a": 0}),
        (6.0, {"b": 1.0, "a": 2}),
    ]:
        sums.add(torch.tensor(loss), logs)
    assert sums.steps == 5 and sums.bad.dtype == torch.long
    assert sums.nonfinite() == 3
    loss, logs = sums.means()
    assert loss == pytest.approx(8.0 / 5)  # non-finite losses add nothing, but count
    assert list(logs) == ["a", "b"] and logs == pytest.approx({"a": 8 / 5, "b": 6 / 5})
    restored = Accumulator(CPU)
    restored.load(sums.state())
    assert restored.means() == (loss, logs) and restored.nonfinite() == 3
    sums.reset()
    assert (sums.steps, float(sums.loss), int(sums.bad), sums.logs) == (0, 0.0, 0, {})


def test_check_finite_names_the_job_and_resets_the_window():
    window = Accumulator(CPU)
    for loss in (1.0, math.nan, 2.0, math.inf):
        window.add(torch.tensor(loss), {})
    loop, _ = make_loop(batches(1), number=0, name="finetune")
    loop.step = 12
    with pytest.raises(HarnessError) as raised:
        check_finite(window, loop, 4)
    assert str(raised.value).startswith(
        "finetune training diverged: the loss was not finite in 2 of the last 4 batches "
        "(epoch 5, optimizer step 12); "
    )
    assert window.steps == 0 and window.nonfinite() == 0
    check_finite(window, loop, 4)  # an empty window passes


# -- schedules ----------------------------------------------------------------------------


def adam_groups(*lrs: float) -> torch.optim.Optimizer:
    params = [nn.Parameter(torch.zeros(1)) for _ in lrs]
    optimizer = torch.optim.Adam(
        [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    )
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def test_scale_lrs_multiplies_every_groups_base_lr():
    optimizer = adam_groups(0.1, 0.4)
    scale_lrs(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.025, 0.1]


def test_warmup_is_linear_to_the_base_lr_then_the_plateau_watches_the_loss():
    optimizer = adam_groups(0.8)
    schedule = WarmupPlateau(optimizer, warmup_steps=4, patience=0, factor=0.5)
    lrs = []
    for step in range(6):
        schedule.before_step(optimizer, step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    schedule.after_epoch(optimizer, 1.0, 3)  # still warming up: the plateau is not stepped
    assert schedule.plateau.last_epoch == 0
    schedule.after_epoch(optimizer, 1.0, 4)  # first plateau step: sets the best
    schedule.after_epoch(optimizer, 1.0, 5)  # patience 0: no improvement halves the lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4)
    state = schedule.state_dict()
    again = WarmupPlateau(adam_groups(0.8), 4, 0, 0.5)
    again.load_state_dict(state)
    assert again.plateau.best == 1.0 and again.plateau.last_epoch == 2


def test_plateau_patience_and_factor_reach_reduce_lr_on_plateau():
    schedule = WarmupPlateau(adam_groups(0.1), 0, patience=3, factor=0.2)
    assert (schedule.plateau.patience, schedule.plateau.factor) == (3, 0.2)


def test_warmup_cosine_factors_by_hand():
    schedule = WarmupCosine(total=10, warmup=2)
    assert [schedule.factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert schedule.factor(2) == pytest.approx(1.0)
    assert schedule.factor(6) == pytest.approx(0.5)
    assert schedule.factor(10) == pytest.approx(0.0, abs=1e-12)
    assert WarmupCosine(total=4, warmup=0).warmup == 1


# -- engine settings ----------------------------------------------------------------------


def test_precision_sets_autocast_and_the_scaler():
    fp32 = Engine(CPU, Ranks(), "fp32", 1, Events())
    bf16 = Engine(CPU, Ranks(), "bf16", 1, Events())
    with fp32.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with bf16.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not fp32.scaler().is_enabled() and not bf16.scaler().is_enabled()
    assert fp32.global_step == 0
    module = nn.Linear(1, 1)
    assert fp32.wrap(module) is module


def test_the_standalone_engine_is_one_fp32_process():
    engine = standalone(CPU)
    assert (engine.device, engine.ranks, engine.precision, engine.sync_every) == (
        CPU, Ranks(), "fp32", 1,
    )  # fmt: skip
    engine.log_event("step", {"loss": 1.0}, stage=1)  # logs nothing, accepts anything


def test_step_module_holds_its_parts_and_returns_loss_and_logs():
    model = Regression()
    module = StepModule(model, model)
    assert list(module.parts) == [model]
    assert [name for name, _ in module.named_parameters()] == ["parts.0.weight"]
    loss, logs = module(batches(1)[0])
    assert loss.ndim == 0 and set(logs) == {"double", "const"}


# -- protocol jobs (Engine.fit) ---------------------------------------------------------


class Head(nn.Module):
    def __init__(self, dim: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, classes)

    def forward(self, batch: Batch) -> StepOutput:
        return StepOutput(nn.functional.cross_entropy(self.linear(batch.features), batch.label))


def feature_job(**overrides) -> Training:
    g = torch.Generator().manual_seed(3)
    data = FeatureData(torch.randn(8, 4, generator=g), torch.arange(8) % 3)
    torch.manual_seed(11)
    settings = dict(name="probe", model=Head(), data=data, epochs=4, batch_size=8, lr=0.05, seed=5)
    return TrainingJob(**(settings | overrides))


def by_hand(job: Training, optimizer_cls, factors=None) -> dict[str, torch.Tensor]:
    """Full-batch training of a copy of the job's head: the batch order within an epoch
    does not change a mean loss."""
    head = Head()
    head.load_state_dict(job.model.state_dict())
    settings = job.phases[0].optimizer
    optimizer = optimizer_cls(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    batch = Batch(wave=torch.zeros(8, 0), label=job.data.labels, device=torch.zeros(8),
                  index=torch.arange(8), features=job.data.features)  # fmt: skip
    for step in range(job.epochs):
        if factors is not None:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * factors[step]
        optimizer.zero_grad()
        head(batch).loss.backward()
        optimizer.step()
    return head.state_dict()


@pytest.mark.parametrize(
    ("optimizer", "cls", "decay"),
    [("adam", torch.optim.Adam, 0.0), ("adamw", torch.optim.AdamW, 0.3)],
)
def test_a_feature_job_trains_like_the_optimizer_by_hand(optimizer, cls, decay):
    job = feature_job(optimizer=optimizer, weight_decay=decay)
    expected = by_hand(job, cls)
    result = standalone(CPU).fit(job)
    for key, value in job.model.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert result.steps == 4 and result.epochs == 4 and not job.model.training


def test_a_cosine_job_warms_up_then_decays_by_hand():
    job = feature_job(schedule="cosine", warmup_fraction=0.5, epochs=4)
    # total 4 steps, warm-up round(0.5 * 4) = 2: factors 1/2, 1, then cos over 2 steps
    factors = [0.5, 1.0, 1.0, 0.5]
    expected = by_hand(job, torch.optim.Adam, factors)
    standalone(CPU).fit(job)
    for key, value in job.model.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key


def test_the_one_optimizer_builder_and_the_schedule_settings():
    job = feature_job(optimizer="adamw", weight_decay=0.2, lr=0.03)
    (phase,) = job.phases
    optimizer = build_optimizer(phase.param_groups, phase.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["base_lr"], group["weight_decay"]) == (0.03, 0.03, 0.2)
    assert (group["betas"], group["eps"]) == ((0.9, 0.999), 1e-8)
    plain = feature_job().phases[0]
    assert type(build_optimizer(plain.param_groups, plain.optimizer)) is torch.optim.Adam
    cosine_job = feature_job(schedule="cosine", warmup_fraction=0.25, epochs=3)
    cosine = build_schedule(cosine_job, optimizer, 4)
    assert isinstance(cosine, WarmupCosine) and (cosine.total, cosine.warmup) == (12, 3)
    assert type(build_schedule(feature_job(), optimizer, 4)) is Schedule


def test_patience_stops_after_that_many_epochs_without_a_drop():
    # lr 0 on identical rows: every epoch has exactly the same loss, so epochs 2.. are stale
    same = FeatureData(torch.ones(8, 4), torch.zeros(8, dtype=torch.long))
    for patience, epochs in [(1, 2), (2, 3), (3, 4)]:
        job = feature_job(data=same, lr=0.0, epochs=10, patience=patience)
        result = standalone(CPU).fit(job)
        assert result.epochs == epochs and len(set(result.epoch_losses)) == 1
    # a real drop smaller than min_delta still counts as stale
    result = standalone(CPU).fit(feature_job(lr=1e-6, epochs=10, patience=1, min_delta=1.0))
    assert result.epochs == 2
    assert standalone(CPU).fit(feature_job(lr=0.05, epochs=6, patience=2)).epochs == 6


def test_a_job_logs_its_epochs_only_when_asked_and_keeps_the_global_rng():
    lines: list[str] = []
    events = Events()
    engine = Engine(CPU, Ranks(), "fp32", 1, events)
    job = feature_job(epochs=2)  # seeds the global RNG to build its head
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    engine.fit(job, FitHooks(log=lines.append))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert [line.split(":")[0] for line in lines] == ["probe epoch 1/2", "probe epoch 2/2"]
    engine.fit(feature_job(epochs=2, log_epochs=False), FitHooks(log=lines.append))
    engine.fit(feature_job(epochs=1))  # no log function: nothing to call
    assert len(lines) == 2
    assert engine.global_step == 0
    assert [w["stage"] for _, w in events.of("epoch")] == [0] * 5
    assert {w["stage_name"] for _, w in events.of("step")} == {"probe"}


def test_a_job_is_seeded_by_its_seed():
    def weights(seed):
        job = feature_job(batch_size=2, seed=seed)
        standalone(CPU).fit(job)
        return job.model.linear.weight.detach().clone()

    assert torch.equal(weights(5), weights(5))
    assert not torch.equal(weights(5), weights(6))  # another batch order


def test_a_job_without_clips_is_a_usage_error():
    empty = FeatureData(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(UsageError, match="^probe: no training batch"):
        standalone(CPU).fit(feature_job(data=empty))


def test_a_jobs_frontend_makes_the_features_in_training_mode_without_gradient():
    calls: list[tuple[bool, bool]] = []

    class Frontend(nn.Module):
        def forward(self, wave):
            calls.append((self.training, torch.is_grad_enabled()))
            return torch.ones(len(wave), 4)

    frontend = Frontend().eval()
    result = standalone(CPU).fit(feature_job(frontend=frontend, epochs=2))
    assert calls == [(True, False), (True, False)] and result.epochs == 2
    batch = batches(1)[0]
    assert prepare_batch(batch, None).features is None
    assert torch.equal(prepare_batch(batch, Frontend(), train=True).features, torch.ones(2, 4))


def test_a_job_drops_the_short_last_batch_only_when_asked():
    g = torch.Generator().manual_seed(0)
    ten = FeatureData(torch.randn(10, 4, generator=g), torch.arange(10) % 3)
    dropped = standalone(CPU).fit(feature_job(data=ten, batch_size=4, epochs=2))
    kept = standalone(CPU).fit(feature_job(data=ten, batch_size=4, epochs=2, drop_last=False))
    assert (dropped.steps, kept.steps) == (4, 6)
