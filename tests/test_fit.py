"""The one trainer (Engine.fit) and the one inference call (Engine.infer) against hand-computed
references: a two-phase (GAN-like) training, a protocol job and a method stage giving the same
updates, and inference in data order through the batch preparation of training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from harness.api import (
    Batch,
    Clip,
    DataSplits,
    EvalContext,
    FeatureData,
    Method,
    OptimizerSettings,
    Phase,
    RunSettings,
    Stage,
    StepOutput,
    Task,
    Training,
    TrainingJob,
)
from harness.api.testing import TinyBackbone
from harness.data.loader import ClipAudio
from harness.engine.distributed import Ranks
from harness.engine.loop import Progress
from harness.engine.trainer import Engine, FitHooks, standalone, standalone_services
from harness.run.training import MethodStep, stage_phase

CPU = torch.device("cpu")


class Pair(nn.Module):
    """Two scalars: phase ``lead`` fits ``a * x`` to ``y``; phase ``follow`` pulls ``b``
    towards the (just updated) ``a``, its gradient reaching ``a`` too."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(-1.0))

    def lead(self, batch: Batch) -> torch.Tensor:
        return ((self.a * batch.features - batch.wave) ** 2).mean()

    def follow(self) -> torch.Tensor:
        return (self.b - self.a) ** 2

    def forward(self, batch: Batch, phase: str) -> StepOutput:
        if phase == "lead":
            return StepOutput(self.lead(batch))
        return StepOutput(self.follow(), {"gap": (self.b - self.a).detach()})


class FixedBatches:
    """The same batches in the same order every epoch."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.closed = False

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, generator=None, skip=0, worker_seed=None):
        return iter(self.batches[skip:])

    def close(self) -> None:
        self.closed = True


def pair_batches() -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(3):
        x = torch.randn(4, generator=g)
        out.append(
            Batch(
                wave=2.0 * x + 0.1,
                label=torch.zeros(4, dtype=torch.long),
                device=torch.zeros(4, dtype=torch.long),
                index=torch.arange(4),
                features=x,
            )
        )
    return out


def test_two_phases_step_one_optimizer_each_in_turn_like_the_loop_by_hand():
    batches = pair_batches()
    model = Pair()
    lead = OptimizerSettings("adam", 0.1, betas=(0.5, 0.999))
    follow = OptimizerSettings("adam", 0.05)
    spec = Training(
        name="pair",
        model=model,
        data=FixedBatches(batches),
        epochs=2,
        batch_size=4,
        phases=[
            Phase("lead", [{"params": [model.a]}], lead),
            Phase("follow", [{"params": [model.b]}], follow),
        ],
        own_rng=False,
    )
    steps: list[dict] = []
    result = standalone(CPU).fit(spec, FitHooks(after_step=lambda p: steps.append(p.step_logs)))

    ref = Pair()
    opt_a = torch.optim.Adam([ref.a], lr=0.1, betas=(0.5, 0.999))
    opt_b = torch.optim.Adam([ref.b], lr=0.05)
    for _ in range(2):
        for batch in batches:
            opt_a.zero_grad()
            ref.lead(batch).backward()
            opt_a.step()
            opt_b.zero_grad()
            ref.follow().backward()  # also reaches ref.a: the next lead step must not see it
            opt_b.step()
    assert torch.equal(model.a.detach(), ref.a.detach())
    assert torch.equal(model.b.detach(), ref.b.detach())
    assert result.steps == 6 and result.epochs == 2
    assert not spec.data.closed  # a source handed in stays open for its owner
    assert set(steps[0]) == {"loss/lead", "loss/follow", "gap"}
    assert len(steps) == 6


def test_the_first_adam_step_of_each_phase_moves_its_parameter_by_its_lr():
    # Adam's first step is lr * g / (|g| + eps): -lr * sign(g) up to eps
    batches = pair_batches()[:1]
    model = Pair()
    x, y = batches[0].features, batches[0].wave
    grad_a = float((2 * (0.5 * x - y) * x).mean())
    spec = Training(
        name="pair", model=model, data=FixedBatches(batches), epochs=1, batch_size=4,
        phases=[Phase("lead", [{"params": [model.a]}], OptimizerSettings("adam", 0.1)),
                Phase("follow", [{"params": [model.b]}], OptimizerSettings("adam", 0.05))],
        own_rng=False,
    )  # fmt: skip
    standalone(CPU).fit(spec)
    a = 0.5 - 0.1 * (1.0 if grad_a > 0 else -1.0)
    # follow's gradient 2 * (b - a_new) with b = -1 < a_new: negative, so b rises by 0.05
    assert float(model.a.detach()) == pytest.approx(a, abs=1e-6)
    assert float(model.b.detach()) == pytest.approx(-1.0 + 0.05, abs=1e-6)


def test_a_two_phase_loop_checkpoints_each_phases_optimizer():
    batches = pair_batches()
    model = Pair()
    spec = Training(
        name="pair", model=model, data=FixedBatches(batches), epochs=1, batch_size=4,
        phases=[Phase("lead", [{"params": [model.a]}]), Phase("follow", [{"params": [model.b]}])],
        own_rng=False, max_steps=2,
    )  # fmt: skip
    states: list[dict] = []

    def keep(progress: Progress) -> None:
        states.append(progress.checkpoint_state())

    result = standalone(CPU).fit(spec, FitHooks(after_epoch=keep))
    assert result.steps == 2  # max_steps ends the epoch early
    (state,) = states
    assert len(state["optimizer"]) == 2 and len(state["scaler"]) == 2
    assert [s["state"][0]["step"].item() for s in state["optimizer"]] == [2, 2]


class Linear(Method):
    """Cross-entropy of a linear head on the backbone's embedding."""

    name = "linear-test"

    def setup(self, backbone, task) -> None:
        self.head = nn.Linear(backbone.embed_dim, task.num_classes)

    def training_step(self, batch: Batch, backbone) -> StepOutput:
        logits = self.head(backbone(batch.features).embedding)
        return StepOutput(nn.functional.cross_entropy(logits, batch.label))


def method_and_backbone() -> tuple[Method, TinyBackbone]:
    torch.manual_seed(4)
    backbone = TinyBackbone()
    method = Linear(None)
    method.setup(backbone, Task(["x", "y", "z"], [], 8000))
    return method, backbone


def test_a_protocol_job_and_a_method_stage_give_the_same_updates():
    g = torch.Generator().manual_seed(1)
    data = FeatureData(torch.randn(12, 1, 16, 5, generator=g), torch.arange(12) % 3)
    stage = Stage("all", 3, 0.01, 4)
    events: list[tuple] = []
    engine = Engine(CPU, Ranks(), "fp32", 1, lambda kind, values, **where: events.append(where))

    method, backbone = method_and_backbone()
    job = TrainingJob("job", MethodStep(method, backbone), data, 3, 4, lr=0.01, seed=7)
    engine.fit(job)
    as_job = {k: v.clone() for k, v in backbone.state_dict().items()}

    method, backbone = method_and_backbone()
    phase = stage_phase(stage, backbone, method, RunSettings(weight_decay=0.0))
    stage_spec = Training(
        name="all", model=MethodStep(method, backbone), data=data, epochs=3, batch_size=4,
        phases=[phase], schedule="plateau", train_modules=(backbone, method), seed=7,
        own_rng=False, order=torch.Generator().manual_seed(7), number=1, counts_globally=True,
    )  # fmt: skip
    engine.fit(stage_spec)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, as_job[key]), key
    assert engine.global_step == 9  # only the stage counts: 3 epochs of 3 steps
    assert {w["stage"] for w in events[:12]} == {0} and {w["stage"] for w in events[12:]} == {1}


# -- the one inference call ---------------------------------------------------------------


def test_infer_returns_the_rows_in_data_order_in_chunks_of_the_batch_size():
    features = torch.arange(14.0).reshape(7, 2)
    sizes: list[int] = []

    def forward(batch: Batch) -> torch.Tensor:
        sizes.append(len(batch.features))
        return batch.features.sum(dim=1, keepdim=True).double()

    out = standalone(CPU).infer(forward, FeatureData(features, torch.zeros(7)), 3)
    assert sizes == [3, 3, 1] and out.dtype == torch.float32
    assert out.flatten().tolist() == [1.0, 5.0, 9.0, 13.0, 17.0, 21.0, 25.0]


class Halve(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        self.modes.append((self.training, torch.is_grad_enabled()))
        return wave[:, :2] / 2


def clip_audio(n: int = 5) -> ClipAudio:
    clips = [Clip(Path(f"/x/{i}.wav"), i % 2, "a") for i in range(n)]
    wave = torch.arange(4.0 * n).reshape(n, 4)
    return ClipAudio(clips, wave, torch.arange(n) % 2, torch.zeros(n, dtype=torch.long), 8000)


def test_infer_makes_waveform_features_with_the_frontend_in_evaluation_mode():
    frontend = Halve().train()
    out = standalone(CPU).infer(lambda b: b.features, clip_audio(), 2, frontend)
    assert torch.equal(out, torch.arange(20.0).reshape(5, 4)[:, :2] / 2)
    assert frontend.modes == [(False, False)] * 3


def context(audio: ClipAudio) -> EvalContext:
    splits = DataSplits(["p", "q"], audio.clips, audio.clips, clip_seconds=4 / 8000)
    return EvalContext(
        backbone=TinyBackbone(), method=None, task=Task(["p", "q"], ["a"], 8000),
        splits=splits, torch_device=CPU, batch_size=2, seed=0,
        audio=lambda split: audio, predict=None, embed=None,
        **standalone_services(CPU, 2),
    )  # fmt: skip


def test_the_contexts_windows_and_labeled_clips_go_through_the_inference_call():
    audio = clip_audio(3)
    audio.labels[1] = -1
    ctx = context(audio)
    windows = ctx.windowed_audio("eval", 3)  # one window of 3 samples per 4-sample clip
    assert windows.wave.tolist() == [[0.0, 1.0, 2.0], [4.0, 5.0, 6.0], [8.0, 9.0, 10.0]]
    halves = ctx.windowed_audio("eval", 2)
    assert len(halves) == 6 and halves.labels.tolist() == [0, 0, -1, -1, 0, 0]
    firsts = ctx.infer(lambda b: b.features[:, :1], halves, Halve())
    assert firsts.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    labeled = ctx.labeled_audio("eval", "probe")
    assert [c.path.name for c in labeled.clips] == ["0.wav", "2.wav"]
    assert labeled.wave[:, 0].tolist() == [0.0, 8.0] and labeled.labels.tolist() == [0, 0]
    assert ctx.labeled_audio("train", "probe") is not audio
    audio.labels[:] = 0
    assert ctx.labeled_audio("train", "probe") is audio  # all labeled: the split itself


def test_the_api_reaches_the_trainer_without_importing_the_engine():
    import subprocess
    import sys

    code = (
        "import sys; from harness.api import EvalContext, Training, TrainingJob; "
        "print(sorted(m for m in sys.modules if m.startswith(('harness.engine', 'harness.run'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
