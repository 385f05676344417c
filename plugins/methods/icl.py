"""Inverse Contrastive Loss (Akash et al., AAAI 2021) for device-invariant embeddings.

As used by Schmidt & Peters, "Device generalization with inverse contrastive loss
and impulse response augmentation", equations (1)-(4)::

    L = L_CE + lambda_ICL * L_ICL
    L_ICL = E_pairs[ 1(c = c') f(z, z') + 1(c != c') g(z, z') ]
    g = d^2                       (pairs from different devices: pulled together)
    f = exp((alpha - d) / beta)   (pairs from the same device: pushed apart up to alpha)

over all ordered pairs of distinct clips in a batch, d the l2 distance ("the l2 norm for all
our experiments", Section 3) between the unit-norm clip embeddings (``method.normalize``,
the default). Clips of unknown device are left out of the pairs.

Device classes are the batch's :meth:`~harness.api.Batch.device_classes`: the recording
device, or the class a waveform augmentation gave a clip it altered. With the DIR
augmentations (``multidir``, ``vintage``) a convolved clip is a new device (recording
device x microphone, see :class:`harness.nn.impulse.ImpulseResponseAugmentation`), as in
Section 3: "augmentation leads to more device classes, which gives the contrastive learning
more positive and negative samples".

The paper does not say whether the latent is normalised ("l2 norm" names the metric). With
unit-norm embeddings distances lie in [0, 2], so ``alpha`` is a threshold on a bounded chord
distance (alpha >= 2 keeps every same-device pair inside the barrier) and ``g`` is at most 4.
``method.normalize = false`` is the literal reading on the raw embeddings: ``alpha`` is then
in the embedding's own scale and ``g`` grows with it; on the embedded benchmark the
cross-device pull ``g`` collapses the encoder's output to nearly one vector in the first epoch
(chance accuracy on every device, see docs/defaults.md), which the paper's Table 1 (lambda up
to 10, alpha up to 0.8, all training) rules out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from harness import hookimpl
from harness.api import Backbone, Batch, StepOutput, domain_map, non_negative, positive
from harness_plugins.methods._common import HeadCrossEntropy


def same_device_pairs(devices: Tensor) -> Tensor:
    """``[B, B]`` booleans: clips ``i`` and ``j`` share a (known) device class."""
    known = devices >= 0
    return (devices.unsqueeze(1) == devices.unsqueeze(0)) & known.unsqueeze(1) & known.unsqueeze(0)


def inverse_contrastive_loss(z: Tensor, devices: Tensor, alpha: float, beta: float) -> Tensor:
    """Mean of f over same-device pairs and g over cross-device pairs, all ordered pairs i != j."""
    known = devices >= 0
    z, devices = z[known], devices[known]
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    squared = (z.unsqueeze(1) - z.unsqueeze(0)).pow(2).sum(-1)
    distance = squared.clamp_min(1e-12).sqrt()
    same = same_device_pairs(devices)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    penalty = torch.where(same, torch.exp((alpha - distance) / beta), squared)
    return penalty[off_diagonal].mean()


class InverseContrastive(HeadCrossEntropy):
    """Cross-entropy plus lambda_ICL times the inverse contrastive loss over device classes."""

    name = "icl"
    description = (
        "Cross-entropy + lambda * inverse contrastive loss over device classes "
        "(recording devices and DIR-augmented devices)."
    )

    @dataclass
    class Config(HeadCrossEntropy.Config):
        alpha: float = 0.2
        """Threshold of the same-device barrier (Section 5.2: 0.2)."""
        beta: float = 1.0
        """Barrier strength (indicator function as beta -> 0; Section 5.2: 1)."""
        lambda_icl: float = 0.5
        """Weight of the ICL term (Section 5.2: 0.5)."""
        normalize: bool = True
        """Unit-norm embeddings before the distances (the paper leaves it open): distances lie
        in [0, 2], so alpha thresholds a bounded distance and g is at most 4; false: the raw
        embeddings (the paper's literal reading, collapses on the embedded benchmark)."""

        domains = domain_map(
            alpha=non_negative("Threshold of the same-device barrier."),
            beta=positive("Barrier strength (indicator function as beta -> 0)."),
            lambda_icl=non_negative("Weight of the ICL term in the training loss."),
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.beta <= 0:
                raise ValueError(f"beta must be positive, got {self.beta}")
            if self.lambda_icl < 0:
                raise ValueError(f"lambda_icl must be non-negative, got {self.lambda_icl}")

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        encoded = backbone(batch.features)
        ce = self.classification_loss(encoded, batch)
        z = F.normalize(encoded.embedding, dim=-1) if self.config.normalize else encoded.embedding
        devices = batch.device_classes()
        icl = inverse_contrastive_loss(z, devices, self.config.alpha, self.config.beta)
        loss = ce + self.config.lambda_icl * icl
        return StepOutput(loss, {"ce": ce.detach(), "icl": icl.detach()})


@hookimpl
def register_methods(register) -> None:
    register(InverseContrastive)
