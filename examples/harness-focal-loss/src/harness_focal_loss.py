"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) for harness.

FL(p_t) = -(1 - p_t)^gamma * log(p_t): well-classified clips are down-weighted,
so training focuses on hard ones (e.g. the rarer recording devices). gamma = 0
is plain cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from harness import hookimpl
from harness.api import Backbone, Batch, Encoded, Method, StepOutput, Task


def focal_loss(logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """Mean focal loss of class logits ``[B, C]`` against labels ``[B]``."""
    log_p = F.log_softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return (-(1.0 - log_p.exp()).pow(gamma) * log_p).mean()


class FocalLoss(Method):
    """Focal loss on the backbone's classification head."""

    name = "focal"
    description = "Focal loss: cross-entropy down-weighting easy clips (Lin et al., 2017)."

    @dataclass
    class Config:
        gamma: float = 2.0

        def __post_init__(self) -> None:
            if self.gamma < 0:
                raise ValueError(f"gamma must be non-negative, got {self.gamma}")

    def setup(self, backbone: Backbone, task: Task) -> None:
        self.head = backbone.build_head(task.num_classes)

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        loss = focal_loss(self.logits(backbone(batch.features)), batch.label, self.config.gamma)
        return StepOutput(loss, {"focal": loss.item()})


@hookimpl
def register_methods(register) -> None:
    register(FocalLoss)
