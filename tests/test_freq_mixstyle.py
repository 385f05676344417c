"""Freq-MixStyle: the mixed per-frequency statistics, identities, probability and layouts."""

from __future__ import annotations

import math

import pytest
import torch

from harness.api import Batch, Task
from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness.util.errors import UsageError
from harness_plugins.augmentations.freq_mixstyle import (
    FreqMixStyle,
    frequency_statistics,
    mix_frequency_statistics,
)


def make(time_axis: int = -1, **config) -> FreqMixStyle:
    aug = FreqMixStyle(FreqMixStyle.Config(**config))
    aug.setup(Task(classes=["x"], devices=[], sample_rate=32000, time_axis=time_axis))
    return aug


def dummy_batch(n: int) -> Batch:
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(wave=torch.zeros(n, 10), label=zeros, device=zeros, index=zeros)


def test_registered_with_baseline_defaults():
    entry = load_plugins()["augmentation"].get("freq-mixstyle")
    assert entry.cls is FreqMixStyle
    assert FreqMixStyle.stage == "features"
    cfg = FreqMixStyle.Config()
    assert (cfg.p, cfg.alpha, cfg.eps) == (0.4, 0.4, 1e-6)


def test_hand_computed_two_examples():
    # one frequency bin, four frames; unbiased variances 5/3 and 16/3
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]], [[[10.0, 10.0, 14.0, 14.0]]]], dtype=torch.float64)
    lam = torch.tensor([0.25, 1.0], dtype=torch.float64)
    out = mix_frequency_statistics(x, lam, torch.tensor([1, 0]), freq_axis=-2, eps=1e-12)
    mixed_mean = 0.25 * 2.5 + 0.75 * 12.0  # 9.625
    mixed_std = 0.25 * math.sqrt(5 / 3) + 0.75 * math.sqrt(16 / 3)
    expected0 = mixed_mean + (x[0] - 2.5) / math.sqrt(5 / 3) * mixed_std
    torch.testing.assert_close(out[0], expected0)
    torch.testing.assert_close(out[1], x[1])  # lambda 1 keeps its own statistics
    assert out[0].mean().item() == pytest.approx(9.625)
    assert out[0].std().item() == pytest.approx(mixed_std)


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_output_statistics_are_the_mixed_statistics(time_axis: int):
    gen = torch.Generator().manual_seed(0)
    batch, channels, freq, frames = 6, 2, 16, 50
    mean = torch.randn(batch, 1, freq, 1, generator=gen) * 3
    std = torch.rand(batch, 1, freq, 1, generator=gen) * 2 + 0.5
    x = (mean + std * torch.randn(batch, channels, freq, frames, generator=gen)).double()
    if time_axis == -2:
        x = x.transpose(-1, -2)
    freq_axis = -2 if time_axis == -1 else -1
    lam = torch.rand(batch, generator=gen).double()
    perm = torch.randperm(batch, generator=gen)
    out = mix_frequency_statistics(x, lam, perm, freq_axis, eps=1e-6)

    mu, sigma = frequency_statistics(x, freq_axis, eps=0.0)
    out_mu, out_sigma = frequency_statistics(out, freq_axis, eps=0.0)
    w = lam.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out_mu, w * mu + (1 - w) * mu[perm])
    # the eps inside the normalisation shrinks the std by sqrt(var / (var + eps)) ~ 1 - 1e-6
    torch.testing.assert_close(out_sigma, w * sigma + (1 - w) * sigma[perm], rtol=1e-5, atol=1e-6)
    assert mu.shape == ((batch, 1, freq, 1) if time_axis == -1 else (batch, 1, 1, freq))


def test_statistics_are_per_frequency_over_time_and_channels():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    mu, sigma = frequency_statistics(x, -2, eps=0.0)
    manual = x.permute(0, 2, 1, 3).reshape(2, 4, 15)
    torch.testing.assert_close(mu[:, 0, :, 0], manual.mean(dim=-1))
    torch.testing.assert_close(sigma[:, 0, :, 0], manual.std(dim=-1))


def test_lambda_one_is_identity():
    x = torch.randn(8, 1, 128, 40)
    out = mix_frequency_statistics(x, torch.ones(8), torch.randperm(8), freq_axis=-2)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_layouts_agree():
    x = torch.randn(5, 1, 32, 20)
    lam, perm = torch.rand(5), torch.randperm(5)
    mel = mix_frequency_statistics(x, lam, perm, freq_axis=-2)
    fbank = mix_frequency_statistics(x.transpose(-1, -2).contiguous(), lam, perm, freq_axis=-1)
    torch.testing.assert_close(fbank.transpose(-1, -2), mel)


def test_p_zero_is_identity():
    aug = make(p=0.0)
    x = torch.randn(4, 1, 16, 10)
    for _ in range(50):
        assert aug(x, dummy_batch(4)) is x


def test_forward_mixes_with_drawn_weights_and_permutation():
    aug = make(time_axis=-2, p=1.0, alpha=0.3)
    x = torch.randn(8, 1, 30, 16)
    torch.manual_seed(7)
    out = aug(x, dummy_batch(8))
    torch.manual_seed(7)
    torch.rand(())  # the per-batch coin
    lam, perm = aug.draw(8, x.device)
    torch.testing.assert_close(out, mix_frequency_statistics(x, lam, perm, freq_axis=-1))
    assert sorted(perm.tolist()) == list(range(8))
    assert not torch.allclose(out, x)


def test_batches_are_mixed_with_probability_p():
    torch.manual_seed(0)
    aug = make(p=0.4)
    x = torch.randn(4, 1, 8, 6)
    mixed = sum(aug(x, dummy_batch(4)) is not x for _ in range(1000))
    assert 0.35 < mixed / 1000 < 0.45


def test_lambda_follows_beta_alpha_alpha():
    torch.manual_seed(0)
    lam, _ = make(alpha=0.4).draw(20000, torch.device("cpu"))
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1389 for a = 0.4
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1 / (4 * 1.8), abs=0.005)
    assert lam.min().item() >= 0.0 and lam.max().item() <= 1.0


@pytest.mark.parametrize(("key", "value"), [("p", "1.5"), ("alpha", "0"), ("eps", "-1")])
def test_bad_config_is_a_usage_error(key: str, value: str):
    with pytest.raises(UsageError, match=key):
        build_dataclass(FreqMixStyle.Config, {key: value}, "aug.freq-mixstyle")
