"""The plugin's own tests, written with harness.testing (run: pytest tests/)."""

import math

import pytest
import torch
from harness_focal_loss import FocalLoss, focal_loss

from harness.testing import TinyBackbone, make_batch, make_task, training_step


def test_focal_loss_hand_computed():
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    loss = focal_loss(logits, torch.tensor([0]), gamma=2.0)
    assert loss.item() == pytest.approx(-(0.25**2) * math.log(0.75), rel=1e-6)


def test_gamma_zero_is_cross_entropy():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(expected.item())


def test_one_training_step_trains_the_backbone_and_the_head():
    task = make_task(num_classes=3)
    backbone = TinyBackbone()
    batch = make_batch(task, backbone, batch_size=6, seed=0)
    out = training_step(FocalLoss, backbone, task, batch, gamma=2.0)
    assert out.logs["focal"] == pytest.approx(out.loss.item())
    assert backbone.stem.weight.grad is not None


def test_negative_gamma_is_rejected():
    with pytest.raises(ValueError, match="gamma must be non-negative"):
        FocalLoss.Config(gamma=-1.0)
