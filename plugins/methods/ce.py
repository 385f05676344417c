"""Cross-entropy: the supervised baseline every other method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from harness import hookimpl
from harness.api import Backbone, Batch, Encoded, Method, StepOutput, Task, between, domain_map


class CrossEntropy(Method):
    """Scene classification with the backbone's classification head."""

    name = "ce"
    description = "Cross-entropy on the backbone's classification head (baseline)."

    @dataclass
    class Config:
        label_smoothing: float = 0.0

        domains = domain_map(
            label_smoothing=between(0, 1, "Label-smoothing epsilon.", open_high=True),
        )

        def __post_init__(self) -> None:
            if not 0.0 <= self.label_smoothing < 1.0:
                raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def setup(self, backbone: Backbone, task: Task) -> None:
        self.head = backbone.build_head(task.num_classes)

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def classification_loss(self, encoded: Encoded, batch: Batch) -> Tensor:
        return F.cross_entropy(
            self.logits(encoded), batch.label, label_smoothing=self.config.label_smoothing
        )

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        loss = self.classification_loss(backbone(batch.features), batch)
        return StepOutput(loss, {"ce": loss.detach()})


@hookimpl
def register_methods(register) -> None:
    register(CrossEntropy)
