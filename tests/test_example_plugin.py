"""The example third-party plugin's loss against a hand-computed value."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SOURCE = (
    Path(__file__).resolve().parents[1] / "examples/harness-focal-loss/src/harness_focal_loss.py"
)


@pytest.fixture(scope="module")
def focal():
    spec = importlib.util.spec_from_file_location("example_focal", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_focal"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["example_focal"]


def test_focal_loss_hand_computed(focal):
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    loss = focal.focal_loss(logits, torch.tensor([0]), gamma=2.0)
    assert loss.item() == pytest.approx(-(0.25**2) * math.log(0.75), rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy(focal):
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert focal.focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(expected.item())
