"""A tiny backbone and data set for fast tests of the core (loaded with --plugin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    Clip,
    Dataset,
    DataSplits,
    Encoded,
    Method,
    Stage,
    StepOutput,
)
from harness.util.errors import DataError

RATE = 8000
DEVICES = ["a", "b", "s4"]


class ToyFrontend(nn.Module):
    """Log power in 16 frequency bands, as a [B, 1, 16, frames] image."""

    def forward(self, wave: Tensor) -> Tensor:
        frames = wave.unfold(-1, 256, 128)
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2)[..., :128]
        bands = power.reshape(*power.shape[:-1], 16, 8).mean(-1)
        return torch.log(bands + 1e-6).transpose(-1, -2).unsqueeze(1)


class ToyBackbone(Backbone):
    name = "toy"
    description = "Two linear blocks over mean band energies (tests only)."
    sample_rate = RATE
    stem_prefixes = ("stem",)

    @dataclass
    class Config:
        dim: int = 16

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.embed_dim = config.dim
        self.stem = nn.Linear(16, config.dim)
        self.blocks = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(2))
        self.norm = nn.LayerNorm(config.dim)

    def frontend(self) -> nn.Module:
        return ToyFrontend()

    def forward(self, features: Tensor) -> Encoded:
        x = self.stem(features.mean(-1).squeeze(1))
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        x = self.norm(x)
        return Encoded(embedding=x, tokens=x.unsqueeze(1))


class ToyTones(Dataset):
    """Three classes of tones at different pitches, recorded by three 'devices' (gains)."""

    name = "toy-tones"
    description = "Pure tones per class, written as WAV files under root (tests only)."

    @dataclass
    class Config:
        root: str = ""
        per_class: int = 12

    def load(self) -> DataSplits:
        root = Path(self.config.root)
        if not root.is_dir():
            raise DataError(f"toy data root not found: {root}")
        rng = np.random.default_rng(0)
        clips = {"train": [], "eval": []}
        for label, freq in enumerate((300.0, 900.0, 2500.0)):
            for i in range(self.config.per_class):
                device = DEVICES[i % 3]
                split = "eval" if i % 4 == 0 or device == "s4" else "train"
                path = root / f"tone{label}-{i}-{device}.wav"
                if not path.exists():
                    t = np.arange(RATE // 2) / RATE
                    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
                    sf.write(path, wave.astype(np.float32), RATE)
                clips[split].append(Clip(path, label, device))
        return DataSplits(["low", "mid", "high"], clips["train"], clips["eval"], 0.5, DEVICES, root)


@hookimpl
def register_backbones(register) -> None:
    register(ToyBackbone)


@hookimpl
def register_datasets(register) -> None:
    register(ToyTones)


class Interrupting(Method):
    """Raises KeyboardInterrupt on its second step, like Ctrl-C during training (tests only)."""

    name = "interrupting"
    description = "Cross-entropy that is interrupted on step 2 (tests only)."

    def setup(self, backbone: Backbone, task) -> None:
        self.head = backbone.build_head(task.num_classes)
        self.steps = 0

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def training_step(self, batch, backbone: Backbone) -> StepOutput:
        self.steps += 1
        if self.steps == 2:
            raise KeyboardInterrupt
        logits = self.logits(backbone(batch.features))
        return StepOutput(nn.functional.cross_entropy(logits, batch.label))


class Staged(Method):
    """Cross-entropy in two stages: the head alone, then the top block (tests only)."""

    name = "staged"
    description = "Head-only stage, then the top block at half the lr (tests only)."

    def setup(self, backbone: Backbone, task) -> None:
        self.head = backbone.build_head(task.num_classes)
        self.begun: list[str] = []

    def stages(self, backbone: Backbone, run) -> list[Stage]:
        return [
            Stage("head", 1, run.lr, run.batch_size, backbone_blocks=0, note="head only"),
            Stage("top", 2, run.lr / 2, run.batch_size, backbone_blocks=1),
        ]

    def begin_stage(self, stage: Stage) -> None:
        self.begun.append(stage.name)

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def training_step(self, batch, backbone: Backbone) -> StepOutput:
        loss = nn.functional.cross_entropy(self.logits(backbone(batch.features)), batch.label)
        return StepOutput(loss, {"stage_steps": 1.0})


class Collapsing(Method):
    """Makes the toy encoder constant: each step sets its last norm to output one vector for
    every clip and trains only the head on it (tests of the health probe only)."""

    name = "collapsing"
    description = "Sets the toy backbone's output to one vector (tests only)."

    def setup(self, backbone: Backbone, task) -> None:
        self.head = backbone.build_head(task.num_classes)

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def training_step(self, batch, backbone: Backbone) -> StepOutput:
        norm = backbone.norm
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.fill_(0.5)
        encoded = backbone(batch.features)
        frozen = Encoded(embedding=encoded.embedding.detach(), tokens=encoded.tokens.detach())
        return StepOutput(nn.functional.cross_entropy(self.logits(frozen), batch.label))


@hookimpl
def register_methods(register) -> None:
    register(Interrupting)
    register(Staged)
    register(Collapsing)
