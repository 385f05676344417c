"""Supervised MixUp with label smoothing, checked against torch's cross-entropy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Backbone, Encoded, Task
from harness.registry.config import build_dataclass
from harness.util.errors import UsageError
from harness_plugins.methods._common import mixup, sample_lambda, smooth_labels, soft_cross_entropy
from harness_plugins.methods.mixup_ls import MixupLs


class TinyBackbone(Backbone):
    """A linear map of the time-averaged features ``[B, 1, 6, T]`` (tests only)."""

    name = "tiny"
    description = "test backbone"
    sample_rate = 8000

    def __init__(self) -> None:
        super().__init__(None)
        self.embed_dim = 8
        self.stem = nn.Linear(6, 8)
        self.blocks = nn.ModuleList()

    def forward(self, features: Tensor) -> Encoded:
        x = torch.tanh(self.stem(features.mean(-1).squeeze(1)))
        return Encoded(x, x.unsqueeze(1))


def test_smoothed_soft_cross_entropy_equals_torch_label_smoothing() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 5), torch.randint(5, (7,))
    targets = smooth_labels(F.one_hot(labels, 5).float(), 0.1)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(soft_cross_entropy(logits, targets), expected)
    torch.testing.assert_close(targets.sum(1), torch.ones(7))
    assert targets.max().item() == pytest.approx(0.9 + 0.1 / 5)


def test_mixed_targets_give_the_lambda_weighted_sum_of_two_losses() -> None:
    torch.manual_seed(1)
    logits, labels = torch.randn(6, 4), torch.randint(4, (6,))
    perm, lam = torch.randperm(6), 0.3
    targets = mixup(smooth_labels(F.one_hot(labels, 4).float(), 0.2), lam, perm)
    expected = lam * F.cross_entropy(logits, labels, label_smoothing=0.2) + (
        1 - lam
    ) * F.cross_entropy(logits, labels[perm], label_smoothing=0.2)
    torch.testing.assert_close(soft_cross_entropy(logits, targets), expected)


def test_lambda_follows_beta_alpha_alpha() -> None:
    torch.manual_seed(2)
    draws = torch.tensor([sample_lambda(0.4) for _ in range(4000)])
    assert ((draws >= 0) & (draws <= 1)).all()
    assert draws.mean().item() == pytest.approx(0.5, abs=0.02)
    # Beta(a, a) has variance 1 / (4 (2a + 1)) = 0.1389 for a = 0.4
    assert draws.var().item() == pytest.approx(1 / (4 * 1.8), rel=0.06)


def test_training_step_mixes_features_and_targets_with_one_lambda() -> None:
    backbone = TinyBackbone()
    method = MixupLs(MixupLs.Config(alpha=0.5, smoothing=0.1))
    method.setup(backbone, Task(["a", "b", "c"], [], 8000))
    batch = SimpleNamespace(features=torch.randn(5, 1, 6, 10), label=torch.tensor([0, 1, 2, 0, 1]))
    torch.manual_seed(3)
    output = method.training_step(batch, backbone)
    torch.manual_seed(3)
    lam = sample_lambda(0.5)
    perm = torch.randperm(5)
    logits = method.logits(backbone(mixup(batch.features, lam, perm)))
    expected = lam * F.cross_entropy(logits, batch.label, label_smoothing=0.1) + (
        1 - lam
    ) * F.cross_entropy(logits, batch.label[perm], label_smoothing=0.1)
    torch.testing.assert_close(output.loss, expected)
    assert output.logs["lambda"] == pytest.approx(lam)
    output.loss.backward()
    assert backbone.stem.weight.grad.abs().sum() > 0
    assert logits.shape == (5, 3)


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="alpha"):
        build_dataclass(MixupLs.Config, {"alpha": "-1"}, "method")
    with pytest.raises(UsageError, match="smoothing"):
        build_dataclass(MixupLs.Config, {"smoothing": "1"}, "method")
