"""Helpers shared by the method plugins: the cross-entropy classifier that ``ce`` and ``icl``
build on, and the mixing helpers of ``mixup-ls`` and the contrastive mixing methods in
``nnclr.py`` (:func:`mixup`, :func:`smooth_labels`, :func:`soft_cross_entropy`,
:func:`sample_lambda`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import Backbone, Batch, Encoded, Method, Task, between, domain_map

__all__ = [
    "HeadCrossEntropy",
    "mixup",
    "sample_lambda",
    "smooth_labels",
    "soft_cross_entropy",
]


class HeadCrossEntropy(Method):
    """Cross-entropy (with optional label smoothing) on the backbone's classification head;
    subclasses add a name and a ``training_step``."""

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
        """Cross-entropy of the head's logits against the batch labels."""
        return F.cross_entropy(
            self.logits(encoded), batch.label, label_smoothing=self.config.label_smoothing
        )


def sample_lambda(alpha: float) -> float:
    """One mixing coefficient ``lam ~ Beta(alpha, alpha)`` from torch's global generator."""
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


def mixup(x: Tensor, lam: float, perm: Tensor) -> Tensor:
    """``lam * x + (1 - lam) * x[perm]`` along the batch axis."""
    return lam * x + (1.0 - lam) * x[perm]


def smooth_labels(targets: Tensor, smoothing: float) -> Tensor:
    """Label smoothing of probability rows: ``(1 - eps) * y + eps / C`` (torch's convention)."""
    return (1.0 - smoothing) * targets + smoothing / targets.shape[-1]


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_c targets[c] * log_softmax(logits)[c]``."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
