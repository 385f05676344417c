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
    Domain,
    EvalContext,
    ProtocolResult,
    SplitAudio,
    StepOutput,
    TrainingJob,
    UsageError,
    at_least,
    between,
    domain_map,
    non_negative,
)
from harness_plugins.protocols._common import LabeledProtocol, accuracy_column, one_row_table


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


class Finetune(LabeledProtocol):
    name = "finetune"
    description = (
        "Full fine-tuning of a copy of the backbone with a fresh head and layer-wise "
        "learning-rate decay; accuracy (%) on the eval split."
    )
    columns: ClassVar[list[Column]] = [accuracy_column("fine-tuning")]

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

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        train = ctx.labeled_audio("train", self.name)
        evaluation = ctx.labeled_audio("eval", self.name)
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
        acc = accuracy(ctx, classifier, frontend, evaluation)
        metrics = {"acc": 100 * acc, "train_loss": final_loss}
        table = one_row_table(
            {
                "epochs": f"{cfg.epochs}",
                "train clips": f"{len(train)}",
                "eval clips": f"{len(evaluation)}",
                "final train loss": f"{final_loss:.4f}",
                "eval acc (%)": f"{100 * acc:.2f}",
            }
        )
        return ProtocolResult(metrics, table)


def accuracy(
    ctx: EvalContext, classifier: Classifier, frontend: nn.Module, audio: SplitAudio
) -> float:
    """Share of ``audio``'s clips the classifier labels right (through the run's inference)."""
    classifier.to(ctx.torch_device).eval()
    logits = ctx.infer(lambda batch: classifier.logits(batch.features), audio, frontend)
    return int((logits.argmax(dim=-1) == audio.labels).sum()) / len(audio)


@hookimpl
def register_protocols(register) -> None:
    register(Finetune)
