"""Full fine-tuning with layer-wise learning-rate decay (uaMix-MAE Table 4, after AudioMAE).

A copy of the trained backbone (every parameter trainable) gets a fresh
classification head and is fine-tuned on the labeled train split with AdamW,
layer-wise learning-rate decay (``lr * layer_decay ** depth from the top``, via
:meth:`harness.api.Backbone.param_groups`), linear warm-up and cosine decay;
the score is the accuracy (%) on the eval split. The run's own backbone is left
untouched. The training runs through the core's engine (:meth:`EvalContext.fit`), so it
uses the run's device, precision and processes and appears in ``metrics.jsonl`` as
``stage_name = "finetune"``. Defaults are small enough for a CPU; the paper follows AudioMAE's
recipe (e.g. 60 epochs on ESC-50), set ``epochs`` and ``lr`` accordingly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    Batch,
    Column,
    DataSplits,
    Domain,
    EvalContext,
    Method,
    Protocol,
    ProtocolResult,
    StepOutput,
    TrainingJob,
    UsageError,
    at_least,
    between,
    domain_map,
    non_negative,
)
from harness.data.embeddings import labeled_subset, require_labeled_splits
from harness.data.loader import ClipAudio, batches


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
    return groups


class Classifier(nn.Module):
    """The fine-tuned backbone and its head; one training step is cross-entropy on a batch."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: Batch) -> StepOutput:
        return StepOutput(F.cross_entropy(self.logits(batch.features), batch.label))

    def logits(self, features: Tensor) -> Tensor:
        return self.head(self.backbone(features))


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
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            model = copy.deepcopy(ctx.backbone)  # the run's own backbone stays as it is
            model.requires_grad_(True)
            classifier = Classifier(model, model.build_head(num_classes))
        frontend = model.frontend()
        result = ctx.fit(
            TrainingJob(
                name=self.name,
                model=classifier,
                data=train,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                optimizer="adamw",
                weight_decay=cfg.weight_decay,
                param_groups=optimizer_groups(
                    model, classifier.head, cfg.lr, cfg.layer_decay, cfg.weight_decay
                ),
                schedule="cosine",
                warmup_fraction=cfg.warmup_fraction,
                frontend=frontend,
                seed=ctx.seed,
            )
        )
        final_loss = result.epoch_losses[-1]
        acc = accuracy(classifier, frontend, evaluation, ctx.batch_size, ctx.torch_device)
        metrics = {"acc": 100 * acc, "train_loss": final_loss}
        table = "\n".join(
            [
                "| epochs | train clips | eval clips | final train loss | eval acc (%) |",
                "|---:|---:|---:|---:|---:|",
                f"| {cfg.epochs} | {len(train)} | {len(evaluation)} | "
                f"{final_loss:.4f} | {100 * acc:.2f} |",
            ]
        )
        return ProtocolResult(metrics, table)


@torch.no_grad()
def accuracy(
    classifier: Classifier,
    frontend: nn.Module,
    audio: ClipAudio,
    batch_size: int,
    device: torch.device,
) -> float:
    classifier.to(device).eval()
    frontend = frontend.to(device).eval()
    correct = 0
    for batch in batches(audio, batch_size, device):
        logits = classifier.logits(frontend(batch.wave))
        correct += int((logits.argmax(dim=-1) == batch.label).sum())
    return correct / len(audio)


@hookimpl
def register_protocols(register) -> None:
    register(Finetune)
