"""The linear-probe and fine-tuning protocols on hand-built evaluation contexts."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.api import Backbone, Clip, DataSplits, Encoded, EvalContext, Task
from harness.data.embeddings import Embedder
from harness.data.loader import ClipAudio
from harness.engine.schedules import WarmupCosine
from harness.engine.trainer import standalone_services
from harness.util.errors import UsageError
from harness_plugins.protocols.fewshot import Fewshot
from harness_plugins.protocols.finetune import Finetune, optimizer_groups
from harness_plugins.protocols.linear import Linear

SAMPLE_RATE = 8000
TONES = (300.0, 1000.0, 2500.0)


class LogSpectrum(nn.Module):
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(256, device=wave.device)
        spec = torch.stft(wave, 256, hop_length=128, window=window, return_complex=True).abs()
        return torch.log1p(spec).unsqueeze(1)  # [B, 1, F, T]


class SmallBackbone(Backbone):
    """A stem, two residual blocks and a norm on the time-averaged log spectrum."""

    name = "small"
    description = "test backbone"
    sample_rate = SAMPLE_RATE
    stem_prefixes = ("stem",)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.embed_dim = 16
        self.stem = nn.Linear(129, 16)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(2)])
        self.norm = nn.LayerNorm(16)

    def frontend(self) -> nn.Module:
        return LogSpectrum()

    def forward(self, features: torch.Tensor) -> Encoded:
        x = self.stem(features.squeeze(1).mean(-1))
        for block in self.blocks:
            x = x + block(x)
        x = self.norm(x)
        return Encoded(x, x.unsqueeze(1))


def tones(count: int, seed: int) -> ClipAudio:
    """Noisy sine tones of three classes, 0.25 s each."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % len(TONES)
    t = torch.arange(SAMPLE_RATE // 4) / SAMPLE_RATE
    freqs = torch.tensor(TONES)[labels, None] * (1 + 0.02 * torch.randn(count, 1, generator=gen))
    phase = 2 * math.pi * torch.rand(count, 1, generator=gen)
    wave = torch.sin(2 * math.pi * freqs * t + phase) + 0.3 * torch.randn(
        count, len(t), generator=gen
    )
    clips = [
        Clip(path=Path(f"/nonexistent/{seed}/{i}.wav"), label=int(y)) for i, y in enumerate(labels)
    ]
    return ClipAudio(clips, wave, labels, torch.full((count,), -1), SAMPLE_RATE)


def audio_context(train: ClipAudio, evaluation: ClipAudio, backbone: Backbone, seed: int = 0):
    classes = [f"{int(f)}Hz" for f in TONES]
    splits = DataSplits(classes, train.clips, evaluation.clips, clip_seconds=0.25)
    audio = {"train": train, "eval": evaluation}

    def unused(split):
        raise AssertionError("not used")

    return EvalContext(
        backbone=backbone,
        method=None,
        task=Task(classes, [], SAMPLE_RATE),
        splits=splits,
        torch_device=torch.device("cpu"),
        batch_size=16,
        seed=seed,
        audio=audio.__getitem__,
        predict=unused,
        embed=unused,
        **standalone_services(torch.device("cpu"), 16),
    )


def embedding_context(
    embeddings: dict[str, torch.Tensor], labels: dict[str, list[int]], paths=None
):
    """A context whose ``embed`` returns the given embeddings; records calls in ``.calls``."""
    calls: list[str] = []
    clips = {
        split: [
            Clip(path=(paths or {}).get(split, [Path(f"/x/{split}/{i}")] * len(ys))[i], label=y)
            for i, y in enumerate(ys)
        ]
        for split, ys in labels.items()
    }
    classes = [f"c{i}" for i in range(max(max(ys, default=0) for ys in labels.values()) + 1)]

    def embed(split):
        calls.append(split)
        return embeddings[split]

    def unused(split):
        raise AssertionError("not used")

    backbone = SmallBackbone()
    splits = DataSplits(classes, clips["train"], clips["eval"], clip_seconds=1.0)
    ctx = EvalContext(
        backbone=backbone,
        method=None,
        task=Task(classes, [], SAMPLE_RATE),
        splits=splits,
        torch_device=torch.device("cpu"),
        batch_size=16,
        seed=0,
        audio=unused,
        predict=unused,
        embed=Embedder(splits, backbone, embed).cached,
        **standalone_services(torch.device("cpu"), 16),
    )
    return ctx, calls


def blobs(per_class: int, classes: int, seed: int, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    centers = 3 * torch.eye(classes, 8)
    return centers[labels] + spread * torch.randn(len(labels), 8, generator=gen), labels


# -- linear probe -------------------------------------------------------------


def test_linear_probe_on_separable_embeddings_is_perfect():
    train_x, train_y = blobs(20, 4, seed=0)
    eval_x, eval_y = blobs(10, 4, seed=1)
    ctx, _ = embedding_context(
        {"train": train_x, "eval": eval_x}, {"train": train_y.tolist(), "eval": eval_y.tolist()}
    )
    result = Linear(Linear.Config(cache=False)).evaluate(ctx)
    assert result.metrics["acc"] == 100.0
    assert result.metrics["train_acc"] == 100.0


def test_linear_probe_on_random_labels_is_near_chance():
    gen = torch.Generator().manual_seed(0)
    train_x, eval_x = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    train_y = torch.randint(0, 4, (400,), generator=gen)
    eval_y = torch.randint(0, 4, (400,), generator=gen)
    ctx, _ = embedding_context(
        {"train": train_x, "eval": eval_x}, {"train": train_y.tolist(), "eval": eval_y.tolist()}
    )
    result = Linear(Linear.Config(cache=False)).evaluate(ctx)
    assert abs(result.metrics["acc"] - 25.0) < 7.5  # 3 binomial std of 400 draws at p = 0.25


def test_linear_probe_needs_a_labeled_train_split():
    ctx, calls = embedding_context(
        {"train": torch.zeros(4, 8), "eval": torch.zeros(4, 8)},
        {"train": [-1] * 4, "eval": [0, 1, 0, 1]},
    )
    with pytest.raises(UsageError, match="linear: the 'train' split has no labeled clips"):
        Linear(Linear.Config(cache=False)).evaluate(ctx)
    assert calls == []  # the unlabeled pool is not embedded


def test_linear_probe_reuses_embeddings_cached_by_the_fewshot_protocol(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    train_x, train_y = blobs(20, 5, seed=0)
    eval_x, eval_y = blobs(20, 5, seed=1)
    paths = {}
    for split, count in (("train", len(train_y)), ("eval", len(eval_y))):
        (tmp_path / split).mkdir()
        paths[split] = [tmp_path / split / f"{i}.wav" for i in range(count)]
        for path in paths[split]:
            path.write_bytes(b"x")
    labels = {"train": train_y.tolist(), "eval": eval_y.tolist()}
    first, first_calls = embedding_context({"train": train_x, "eval": eval_x}, labels, paths)
    Fewshot(Fewshot.Config(episodes=20)).evaluate(first)
    assert first_calls == ["eval"]
    second, second_calls = embedding_context({"train": train_x, "eval": eval_x}, labels, paths)
    second.backbone.load_state_dict(first.backbone.state_dict())
    Linear(Linear.Config()).evaluate(second)
    assert second_calls == ["train"]


# -- fine-tuning --------------------------------------------------------------


def finetune(**options) -> Finetune:
    options = {"epochs": 6, "batch_size": 10, "lr": 1e-2, "layer_decay": 0.75} | options
    return Finetune(Finetune.Config(**options))


def test_finetune_learns_the_task_and_leaves_the_run_backbone_alone():
    torch.manual_seed(0)
    backbone = SmallBackbone()
    backbone.blocks[0].requires_grad_(False)  # e.g. frozen by progressive retraining
    before = copy.deepcopy(backbone.state_dict())
    ctx = audio_context(tones(60, seed=0), tones(30, seed=1), backbone)
    result = finetune().evaluate(ctx)
    assert result.metrics["acc"] >= 90.0
    assert result.metrics["train_loss"] < math.log(3)  # below the loss of uniform guessing
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not any(p.requires_grad for p in backbone.blocks[0].parameters())


def test_finetune_is_deterministic_given_the_seed():
    torch.manual_seed(0)
    backbone = SmallBackbone()
    ctx = audio_context(tones(30, seed=0), tones(15, seed=1), backbone, seed=3)
    first = finetune(epochs=2).evaluate(ctx).metrics
    torch.manual_seed(123)  # the global RNG state must not matter
    again = finetune(epochs=2).evaluate(ctx).metrics
    assert first == again


def test_optimizer_groups_apply_layer_wise_decay():
    model, head = SmallBackbone(), nn.Linear(16, 3)
    groups = optimizer_groups(model, head, lr=1.0, layer_decay=0.5, weight_decay=0.1)
    lr_of = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in lr_of
            lr_of[id(param)] = group["lr"]
    assert lr_of[id(model.stem.weight)] == 0.125  # layer 0: 0.5 ** 3
    assert lr_of[id(model.blocks[0][0].weight)] == 0.25
    assert lr_of[id(model.blocks[1][0].weight)] == 0.5
    assert lr_of[id(model.norm.weight)] == 1.0
    assert lr_of[id(head.weight)] == 1.0
    everything = [*model.parameters(), *head.parameters()]
    assert {id(p) for p in everything} == set(lr_of)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert [WarmupCosine(10, 2).factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert WarmupCosine(10, 2).factor(2) == pytest.approx(1.0)
    assert WarmupCosine(10, 2).factor(6) == pytest.approx(0.5)
    assert WarmupCosine(10, 2).factor(10) == pytest.approx(0.0)
    assert np.all(np.diff([WarmupCosine(10, 2).factor(s) for s in range(2, 11)]) <= 0)


def test_finetune_needs_labeled_train_clips():
    train = tones(6, seed=0)
    train.labels[:] = -1
    ctx = audio_context(train, tones(6, seed=1), SmallBackbone())
    with pytest.raises(UsageError, match="finetune: the 'train' split has no labeled clips"):
        finetune().evaluate(ctx)
