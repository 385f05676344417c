"""The inverse contrastive loss against a hand-computed example."""

import math

import pytest
import torch

from harness_plugins.methods.icl import inverse_contrastive_loss


def test_icl_matches_hand_computed_pairs():
    # Three embeddings on a line: z0=0, z1=3, z2=4 (1-D); devices a, a, b.
    z = torch.tensor([[0.0], [3.0], [4.0]])
    devices = torch.tensor([0, 0, 1])
    alpha, beta = 0.2, 1.0
    # Ordered pairs i != j: (0,1),(1,0) same device -> f = exp((alpha - 3)/beta)
    # (0,2),(2,0) different -> g = 16; (1,2),(2,1) different -> g = 1.
    expected = (2 * math.exp(alpha - 3.0) + 2 * 16.0 + 2 * 1.0) / 6
    loss = inverse_contrastive_loss(z, devices, alpha, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_icl_barrier_strength_scales_exponent():
    z = torch.tensor([[0.0, 0.0], [0.6, 0.8]])  # distance 1
    devices = torch.tensor([2, 2])
    loss = inverse_contrastive_loss(z, devices, alpha=0.4, beta=0.5)
    assert loss.item() == pytest.approx(math.exp((0.4 - 1.0) / 0.5), rel=1e-6)


def test_icl_ignores_unknown_devices_and_has_finite_gradients():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    devices = torch.tensor([0, 1, -1])
    loss = inverse_contrastive_loss(z, devices, alpha=0.2, beta=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)  # identical cross-device pair: g = 0
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize(("devices", "apart"), [([0, 0], True), ([0, 1], False)])
def test_icl_gradient_direction(devices, apart):
    """Same-device pairs are pushed apart, cross-device pairs pulled together."""
    z = torch.tensor([[0.0], [0.5]], requires_grad=True)
    inverse_contrastive_loss(z, torch.tensor(devices), alpha=1.0, beta=1.0).backward()
    step = -z.grad[:, 0]  # gradient-descent direction
    distance_change = step[1] - step[0]
    assert (distance_change > 0) == apart
