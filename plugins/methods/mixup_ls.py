"""Supervised MixUp with label smoothing (Zhang et al., ICLR 2018; Szegedy et al., CVPR 2016).

Each training batch is mixed with a shuffled copy of itself, ``x = lam * x_i + (1 - lam) * x_j``
with one ``lam ~ Beta(alpha, alpha)`` per batch, on the backbone's features; the targets are the
label-smoothed one-hot labels mixed with the same ``lam``. The loss is the soft cross-entropy of
the classifier's logits against those targets.

The mixing helpers live in ``_common.py``, shared with the contrastive mixing methods in
``nnclr.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    Batch,
    Encoded,
    Method,
    StepOutput,
    Task,
    between,
    domain_map,
    positive,
)
from harness_plugins.methods._common import mixup, sample_lambda, smooth_labels, soft_cross_entropy

__all__ = ["MixupLs"]


class MixupLs(Method):
    """Cross-entropy on MixUp-mixed features against mixed, label-smoothed targets."""

    name = "mixup-ls"
    description = "Supervised MixUp (Beta(alpha, alpha) on features) with label smoothing."

    @dataclass
    class Config:
        alpha: float = 0.3
        """Beta(alpha, alpha) concentration of the mixing coefficient."""
        smoothing: float = 0.1
        """Label-smoothing epsilon (0 disables it)."""

        domains = domain_map(
            alpha=positive("Beta(alpha, alpha) of the mixing coefficient."),
            smoothing=between(0, 1, "Label-smoothing epsilon.", open_high=True),
        )

        def __post_init__(self) -> None:
            if self.alpha <= 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}")
            if not 0 <= self.smoothing < 1:
                raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")

    def setup(self, backbone: Backbone, task: Task) -> None:
        self.num_classes = task.num_classes
        self.head: nn.Module = backbone.build_head(task.num_classes)

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        lam = sample_lambda(self.config.alpha)
        perm = torch.randperm(batch.features.shape[0], device=batch.features.device)
        one_hot = F.one_hot(batch.label, self.num_classes).float()
        targets = mixup(smooth_labels(one_hot, self.config.smoothing), lam, perm)
        logits = self.head(backbone(mixup(batch.features, lam, perm)))
        loss = soft_cross_entropy(logits.float(), targets)
        return StepOutput(loss, {"lambda": lam})

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)


@hookimpl
def register_methods(register) -> None:
    register(MixupLs)
