"""Full fine-tuning with layer-wise learning-rate decay (uaMix-MAE Table 4, after AudioMAE).

A copy of the trained backbone (every parameter trainable) gets a fresh
classification head and is fine-tuned on the labeled train split with AdamW,
layer-wise learning-rate decay (``lr * layer_decay ** depth from the top``, via
:meth:`harness.api.Backbone.param_groups`), linear warm-up and cosine decay;
the score is the accuracy (%) on the eval split. The run's own backbone is left
untouched. Defaults are small enough for a CPU; the paper follows AudioMAE's
recipe (e.g. 60 epochs on ESC-50), set ``epochs`` and ``lr`` accordingly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, Column, DataSplits, EvalContext, Method, Protocol, ProtocolResult
from harness.config import Domain, at_least, between, domain_map, non_negative
from harness.data import ClipAudio, batches, num_batches
from harness.errors import HarnessError, UsageError
from harness.progress import note, progress
from harness_plugins.protocols.linear import require_labeled_splits


def labeled_subset(audio: ClipAudio, who: str, split: str) -> ClipAudio:
    """The clips of ``audio`` that have a label (an error when none has)."""
    keep = torch.nonzero(audio.labels >= 0).flatten()
    if len(keep) == 0:
        raise UsageError(f"{who}: the '{split}' split has no labeled clips")
    if len(keep) == len(audio):
        return audio
    return ClipAudio(
        clips=[audio.clips[i] for i in keep.tolist()],
        wave=audio.wave[keep],
        labels=audio.labels[keep],
        devices=audio.devices[keep],
        sample_rate=audio.sample_rate,
    )


def optimizer_groups(
    model: Backbone, head: nn.Module, lr: float, layer_decay: float, weight_decay: float
) -> list[dict]:
    """The backbone's layer-wise groups plus the head at the full learning rate."""
    groups = model.param_groups(lr, layer_decay, weight_decay)
    groups.append(
        {
            "params": list(head.parameters()),
            "lr": lr,
            "weight_decay": weight_decay,
            "layer": model.num_layers + 1,
        }
    )
    for group in groups:
        group["base_lr"] = group["lr"]
    return groups


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    fraction = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))


class Finetune(Protocol):
    name = "finetune"
    description = (
        "Full fine-tuning of a copy of the backbone with a fresh head and layer-wise "
        "learning-rate decay; accuracy (%) on the eval split."
    )
    columns: ClassVar[list[Column]] = [
        Column("acc", "fine-tuning accuracy (%)", group="acc", higher_is_better=True)
    ]

    @dataclass
    class Config:
        epochs: int = 3
        batch_size: int = 16
        lr: float = 5e-4
        """Learning rate of the head and the top block; lower blocks get decayed rates."""
        layer_decay: float = 0.75
        weight_decay: float = 0.05
        warmup_fraction: float = 0.1
        """Share of the steps with a linearly rising learning rate."""

        domains = domain_map(
            epochs=at_least(1, "Fine-tuning epochs."),
            batch_size=at_least(1, "Fine-tuning batch size."),
            lr=Domain(gt=0, le=10, help="Peak learning rate."),
            layer_decay=Domain(gt=0, le=1, help="Layer-wise learning-rate decay."),
            weight_decay=non_negative("Weight decay."),
            warmup_fraction=between(0, 1, "Share of the steps with linear warmup.", open_high=True),
        )

        def __post_init__(self) -> None:
            if self.epochs < 1 or self.batch_size < 1:
                raise ValueError("epochs and batch_size must be at least 1")
            if self.lr <= 0:
                raise ValueError(f"lr must be positive, got {self.lr}")
            if not 0 < self.layer_decay <= 1:
                raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
            if not 0 <= self.warmup_fraction < 1:
                raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def check(self, splits: DataSplits, method: Method) -> None:
        require_labeled_splits(splits, self.name)

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        train = labeled_subset(ctx.audio("train"), self.name, "train")
        evaluation = labeled_subset(ctx.audio("eval"), self.name, "eval")
        num_classes = len(ctx.splits.classes)
        if num_classes < 2:
            raise UsageError(f"{self.name}: the data set has fewer than two classes")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            model, head, frontend = self.build(ctx.backbone, num_classes, ctx.torch_device)
            losses = self.train(model, head, frontend, train, ctx)
        acc = accuracy(model, head, frontend, evaluation, ctx.batch_size, ctx.torch_device)
        metrics = {"acc": 100 * acc, "train_loss": losses[-1]}
        table = "\n".join(
            [
                "| epochs | train clips | eval clips | final train loss | eval acc (%) |",
                "|---:|---:|---:|---:|---:|",
                f"| {self.config.epochs} | {len(train)} | {len(evaluation)} | "
                f"{losses[-1]:.4f} | {100 * acc:.2f} |",
            ]
        )
        return ProtocolResult(metrics, table)

    def build(
        self, backbone: Backbone, num_classes: int, device: torch.device
    ) -> tuple[Backbone, nn.Module, nn.Module]:
        model = copy.deepcopy(backbone).to(device)
        model.requires_grad_(True)
        head = model.build_head(num_classes).to(device)
        return model, head, model.frontend().to(device)

    def train(
        self,
        model: Backbone,
        head: nn.Module,
        frontend: nn.Module,
        audio: ClipAudio,
        ctx: EvalContext,
    ) -> list[float]:
        """Fine-tune in place; the mean training loss of each epoch."""
        cfg = self.config
        groups = optimizer_groups(model, head, cfg.lr, cfg.layer_decay, cfg.weight_decay)
        optimizer = torch.optim.AdamW(groups)
        steps_per_epoch = num_batches(len(audio), cfg.batch_size, drop_last=True)
        total = cfg.epochs * steps_per_epoch
        warmup = max(1, round(cfg.warmup_fraction * total))
        generator = torch.Generator().manual_seed(ctx.seed)
        step, epoch_losses = 0, []
        for epoch in range(cfg.epochs):
            model.train()
            head.train()
            frontend.train()
            losses = []
            batch_iter = batches(audio, cfg.batch_size, ctx.torch_device, generator, drop_last=True)
            desc = f"{self.name} epoch {epoch + 1}/{cfg.epochs}"
            for batch in progress(batch_iter, desc=desc, total=steps_per_epoch):
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr_factor(step, total, warmup)
                with torch.no_grad():
                    features = frontend(batch.wave)
                loss = F.cross_entropy(head(model(features)), batch.label)
                if not torch.isfinite(loss):
                    raise HarnessError(f"{self.name}: training diverged (loss {loss.item()})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
            epoch_losses.append(sum(losses) / len(losses))
            note(f"{self.name}: epoch {epoch + 1}/{cfg.epochs}, loss {epoch_losses[-1]:.4f}")
        return epoch_losses


@torch.no_grad()
def accuracy(
    model: Backbone,
    head: nn.Module,
    frontend: nn.Module,
    audio: ClipAudio,
    batch_size: int,
    device: torch.device,
) -> float:
    model.eval()
    head.eval()
    frontend.eval()
    correct = 0
    for batch in batches(audio, batch_size, device):
        logits: Tensor = head(model(frontend(batch.wave)))
        correct += int((logits.argmax(dim=-1) == batch.label).sum())
    return correct / len(audio)


@hookimpl
def register_protocols(register) -> None:
    register(Finetune)
