"""NNCLR + unsupervised mixing (uaMix-MAE): loss, queue, masks, virtual labels, stages."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from harness.api import Backbone, Encoded, Stage, Task
from harness.api.settings import RunSettings
from harness.engine.trainer import build_optimizer as build
from harness.registry.config import build_dataclass
from harness.run.experiment import Experiment
from harness.run.training import stage_phase
from harness.util.errors import UsageError
from harness_plugins.backbones.audiomae import AudioMAE
from harness_plugins.methods import nnclr
from harness_plugins.methods._masked_autoencoder import MaskedAutoencoder
from harness_plugins.methods.nnclr import (
    Box,
    FifoQueue,
    MixConfig,
    MixupLsConfig,
    Nnclr,
    NnclrConfig,
    NnclrMixupLs,
    NnclrTCutMix,
    NnclrTfCutMix,
    ViewSettings,
    augment_view,
    band_width,
    box_mask,
    time_band,
    time_freq_box,
    topk_neighbours,
    virtual_labels,
)
from tests.conftest import run_cli, toy_run_args

TAU = 0.5


class TinyBackbone(Backbone):
    """Four residual linear blocks over the time-averaged features ``[B, 1, F, T]``."""

    name = "tiny"
    description = "test backbone"
    sample_rate = 8000
    stem_prefixes = ("stem",)

    @dataclass
    class Config:
        bins: int = 6
        dim: int = 8
        depth: int = 4

    def __init__(self, config: Config | None = None) -> None:
        config = config or self.Config()
        super().__init__(config)
        self.embed_dim = config.dim
        self.stem = nn.Linear(config.bins, config.dim)
        self.blocks = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, features: Tensor) -> Encoded:
        x = self.stem(features.mean(-1).squeeze(1))
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        x = self.norm(x)
        return Encoded(x, x.unsqueeze(1))


def make_method(cls: type = Nnclr, **options) -> Nnclr:
    defaults = {"proj_hidden": 16, "pred_hidden": 16, "out_dim": 2, "queue_size": 3}
    method = cls(build_dataclass(cls.Config, defaults | options, "method"))
    method.setup(TinyBackbone(), Task(["a"], [], 8000))
    return method


def unit(rows: list[list[float]]) -> Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# -- the loss against hand-computed values ----------------------------------------

QUEUE = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]


def softplus_neg(margin: float) -> float:
    """``-log(e^a / (e^a + e^b))`` for ``a - b = margin``."""
    return math.log1p(math.exp(-margin))


def hand_method(**options) -> Nnclr:
    method = make_method(tau=TAU, exclude_self=False, **options)
    method.queue.enqueue(torch.tensor(QUEUE), torch.arange(3))
    return method


def test_loss_matches_hand_computed_equation_1() -> None:
    method = hand_method(symmetric=False)
    z_anchor = unit([[0.9, 0.1], [0.2, 0.8]])  # nearest queue entries: [1, 0] and [0, 1]
    p_positive = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits: row 0 = [1, 0.6] / 0.5 = [2, 1.2]; row 1 = [0, 0.8] / 0.5 = [0, 1.6]
    expected = (softplus_neg(2 - 1.2) + softplus_neg(1.6 - 0)) / 2
    loss = method.contrastive_loss(z_anchor, p_positive, z_anchor, p_positive, torch.eye(2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_symmetric_loss_adds_the_swapped_views_by_hand() -> None:
    method = hand_method(symmetric=True)
    z_anchor = unit([[0.9, 0.1], [0.2, 0.8]])
    p_positive = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z_positive = unit([[0.1, 0.9], [-0.9, 0.1]])  # nearest: [0, 1] and [-1, 0]
    p_anchor = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # swapped logits: row 0 = [1, 0] / 0.5 = [2, 0] (positive: column 0);
    # row 1 = [0, -1] / 0.5 = [0, -2] (positive: column 1, so the margin is -2)
    forward = (softplus_neg(0.8) + softplus_neg(1.6)) / 2
    swapped = (softplus_neg(2.0) + softplus_neg(-2.0)) / 2
    loss = method.contrastive_loss(z_anchor, p_anchor, z_positive, p_positive, torch.eye(2))
    assert loss.item() == pytest.approx((forward + swapped) / 2, rel=1e-6)


def test_soft_virtual_labels_weight_the_log_probabilities_by_hand() -> None:
    method = hand_method(symmetric=False)
    z_anchor = unit([[0.9, 0.1], [0.2, 0.8]])
    p_positive = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    targets = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    lse0, lse1 = math.log(math.exp(2) + math.exp(1.2)), math.log(1 + math.exp(1.6))
    expected = ((lse0 - 0.7 * 2 - 0.3 * 1.2) + (lse1 - 0.8 * 1.6)) / 2
    loss = method.contrastive_loss(z_anchor, p_positive, z_anchor, p_positive, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_k_greater_than_one_uses_the_normalized_mean_of_the_k_nearest() -> None:
    method = hand_method(k=2)
    support = method.queue.neighbours(unit([[0.9, 0.1]]), k=2)
    torch.testing.assert_close(support, unit([[1.0, 1.0]]))


# -- against lightly's NNCLR building blocks ----------------------------------------


def lightly_one_direction(nn_support: Tensor, predicted: Tensor) -> Tensor:
    """Equation 1 with lightly's NTXentLoss, one anchor at a time.

    In its memory-bank mode NTXentLoss scores row ``i`` as cross-entropy over
    ``[out0_i . out1_i, out0_i . bank_k ...]`` (no in-batch terms); with ``out0`` the
    neighbour of anchor ``i``, ``out1`` its positive and the bank holding the other
    positives of the batch this is exactly equation 1. (Its in-batch mode also puts
    ``out0 . out0`` terms in the denominator, which equation 1 does not have.)
    """
    from lightly.loss import NTXentLoss

    size, dim = predicted.shape
    normed = F.normalize(predicted, dim=-1)
    losses = []
    for i in range(size):
        criterion = NTXentLoss(temperature=TAU, memory_bank_size=(size - 1, dim))
        criterion.memory_bank.bank = torch.cat([normed[:i], normed[i + 1 :]])
        losses.append(criterion(nn_support[i : i + 1], predicted[i : i + 1]))
    return torch.stack(losses).mean()


def test_k1_no_mixing_equals_lightly_nn_memory_bank_and_ntxent() -> None:
    from lightly.models.modules import NNMemoryBankModule

    torch.manual_seed(0)
    size, dim, queue_size = 8, 16, 40
    method = make_method(tau=TAU, out_dim=dim, queue_size=queue_size, exclude_self=False)
    for _ in range(6):  # 6 batches into 40 slots: wraps around
        method.queue.enqueue(F.normalize(torch.randn(size, dim), dim=-1), torch.arange(size))
    reference_bank = NNMemoryBankModule(size=(queue_size, dim))
    reference_bank.bank = method.queue.items.clone()

    z_anchor, z_positive = F.normalize(torch.randn(2, size, dim), dim=-1)
    p_anchor, p_positive = torch.randn(2, size, dim)
    nn_anchor = reference_bank(z_anchor, update=False)
    nn_positive = reference_bank(z_positive, update=False)
    torch.testing.assert_close(method.queue.neighbours(z_anchor), nn_anchor)

    expected = (
        lightly_one_direction(nn_anchor, p_positive) + lightly_one_direction(nn_positive, p_anchor)
    ) / 2
    eye = torch.eye(size)
    loss = method.contrastive_loss(z_anchor, p_anchor, z_positive, p_positive, eye)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    method.config.symmetric = False
    one_way = method.contrastive_loss(z_anchor, p_anchor, z_positive, p_positive, eye)
    torch.testing.assert_close(one_way, lightly_one_direction(nn_anchor, p_positive))


# -- queue ------------------------------------------------------------------------


def test_queue_is_fifo_wraps_around_and_keeps_every_entry_of_a_batch() -> None:
    queue = FifoQueue(size=10, dim=1)
    assert queue.ordered()[0].shape == (0, 1)
    for first in range(0, 12, 3):
        ids = torch.arange(first, first + 3)
        queue.enqueue(ids[:, None].float(), ids)
        seen = first + 3
        oldest = max(0, seen - 10)
        items, kept_ids = queue.ordered()
        assert kept_ids.tolist() == list(range(oldest, seen))
        assert items[:, 0].tolist() == [float(i) for i in range(oldest, seen)]
    assert queue.filled == 10
    assert queue.pointer == 2  # 12 entries into 10 slots
    assert sorted(queue.ids.tolist()) == list(range(2, 12))


def test_queue_refuses_a_batch_larger_than_itself() -> None:
    with pytest.raises(UsageError, match="queue_size"):
        FifoQueue(size=4, dim=2).enqueue(torch.zeros(5, 2), torch.arange(5))


def test_lookup_skips_own_clip_and_falls_back_to_the_query() -> None:
    queue = FifoQueue(size=4, dim=2)
    query = unit([[1.0, 0.1], [0.0, 1.0]])
    torch.testing.assert_close(queue.neighbours(query), query)  # empty queue
    queue.enqueue(unit([[1.0, 0.0], [0.8, 0.6]]), torch.tensor([7, 9]))
    support = queue.neighbours(query, query_ids=torch.tensor([7, 3]))
    torch.testing.assert_close(support[0], unit([[0.8, 0.6]])[0])  # own entry 7 skipped
    torch.testing.assert_close(support[1], unit([[0.8, 0.6]])[0])
    only_own = queue.neighbours(query[:1], query_ids=torch.tensor([7]), k=2)
    torch.testing.assert_close(only_own, unit([[0.8, 0.6]]))
    queue_all_own = FifoQueue(size=2, dim=2)
    queue_all_own.enqueue(unit([[1.0, 0.0]]), torch.tensor([5]))
    torch.testing.assert_close(
        queue_all_own.neighbours(query[:1], query_ids=torch.tensor([5])), query[:1]
    )


def test_topk_neighbours_agree_with_euclidean_distance_on_unit_vectors() -> None:
    torch.manual_seed(1)
    bank, query = (
        F.normalize(torch.randn(500, 32), dim=-1),
        F.normalize(torch.randn(20, 32), dim=-1),
    )
    nearest = torch.cdist(query, bank).topk(3, largest=False).indices
    assert torch.equal(topk_neighbours(query, bank, 3), nearest)


# -- T-CutMix / TF-CutMix boxes and masks ------------------------------------------


def test_time_band_width_position_and_full_frequency_span() -> None:
    torch.manual_seed(2)
    for lam in (0.0, 0.19, 0.5, 0.91, 1.0):
        for _ in range(50):
            box = time_band(100, 7, lam)
            assert (box.f0, box.f1) == (0, 7)
            assert 0 <= box.t0 < 100
            assert box.t1 - box.t0 == min(round(100 * math.sqrt(1 - lam)), 100 - box.t0)


def test_time_band_starts_are_uniform_over_all_frames() -> None:
    torch.manual_seed(3)
    frames, draws = 20, 20000
    starts = [time_band(frames, 4, 0.5).t0 for _ in range(draws)]
    counts = np.bincount(starts, minlength=frames)
    assert counts.shape == (frames,)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_band_width_follows_t_sqrt_one_minus_beta() -> None:
    from harness_plugins.methods._common import sample_lambda

    torch.manual_seed(4)
    frames, alpha = 100_000, 0.7
    fractions = np.array([band_width(frames, sample_lambda(alpha)) / frames for _ in range(4000)])

    def cdf(x: np.ndarray) -> np.ndarray:  # P(sqrt(1 - lam) <= x) = P(lam >= 1 - x^2)
        return stats.beta.sf(1 - np.clip(x, 0, 1) ** 2, alpha, alpha)

    assert stats.kstest(fractions, cdf).pvalue > 1e-3


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_box_mask_puts_the_band_on_the_time_axis(time_axis: int) -> None:
    shape = torch.Size((2, 1, 5, 12)) if time_axis == -1 else torch.Size((2, 1, 12, 5))
    mask = box_mask(shape, time_axis, Box(3, 7, 0, 5)).expand(shape)
    per_frame = mask.movedim(time_axis, -1)[0, 0]  # [F, T]
    assert per_frame.all(0).tolist() == [3 <= t < 7 for t in range(12)]
    assert torch.equal(per_frame.any(0), per_frame.all(0))  # full frequency span
    box = box_mask(shape, time_axis, Box(3, 7, 1, 4)).expand(shape).movedim(time_axis, -1)[0, 0]
    assert box.sum() == 4 * 3 and box[1:4, 3:7].all()


def test_time_freq_box_has_sides_sqrt_one_minus_lambda_and_matches_area() -> None:
    torch.manual_seed(5)
    for _ in range(200):
        box = time_freq_box(64, 32, 0.75)
        assert box.t1 - box.t0 == min(32, 64 - box.t0)
        assert box.f1 - box.f0 == min(16, 32 - box.f0)
        area = (box.t1 - box.t0) * (box.f1 - box.f0)
        assert box.kept_fraction(64, 32) == pytest.approx(1 - area / (64 * 32))


def test_virtual_labels_mix_the_one_hot_rows() -> None:
    perm = torch.tensor([2, 0, 1, 3])
    labels = virtual_labels(perm, 0.7)
    expected = torch.tensor([[0.7, 0, 0.3, 0], [0.3, 0.7, 0, 0], [0, 0.3, 0.7, 0], [0, 0, 0, 1.0]])
    torch.testing.assert_close(labels, expected)
    smoothed = virtual_labels(perm, 0.7, smoothing=0.2)
    torch.testing.assert_close(smoothed, 0.8 * expected + 0.05)
    torch.testing.assert_close(smoothed.sum(0), torch.ones(4))  # Y^T rows sum to one too


def clip_index_features(size: int, time_axis: int) -> Tensor:
    """Clip ``b`` is the constant ``b`` over ``[1, F=5, T=16]`` (or ``[1, 16, 5]``)."""
    shape = (size, 1, 5, 16) if time_axis == -1 else (size, 1, 16, 5)
    return torch.arange(size, dtype=torch.float32).reshape(size, 1, 1, 1).expand(shape).clone()


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_t_cutmix_replaces_a_time_band_over_all_bins_and_labels_by_its_area(
    time_axis: int,
) -> None:
    torch.manual_seed(6)
    method = make_method(NnclrTCutMix, alpha=1.0, label_weight="area")
    x = clip_index_features(6, time_axis)
    own = torch.arange(6)[:, None]
    for _ in range(30):
        mixed, targets, lam = method.mix(x, time_axis)
        per_frame = mixed.movedim(time_axis, -1)[:, 0]  # [B, F, T]
        assert torch.equal(per_frame, per_frame[:, :1].expand_as(per_frame))  # all bins alike
        source = per_frame[:, 0].long()  # [B, T]: the clip each frame comes from
        band = (source != own).any(0)
        assert lam == pytest.approx(1 - band.sum().item() / 16)
        if not band.any():
            torch.testing.assert_close(targets, torch.eye(6))
            continue
        frames = band.nonzero().flatten()
        assert frames.max() - frames.min() + 1 == frames.numel()  # one contiguous band
        partner = source[:, frames[0]]
        assert sorted(partner.tolist()) == list(range(6))
        assert torch.equal(source, torch.where(band, partner[:, None], own))
        torch.testing.assert_close(targets, virtual_labels(partner, lam))


@pytest.mark.parametrize(("label_weight", "weight"), [("lambda", 0.75), ("area", 0.5)])
def test_t_cutmix_equation_3_weights_on_a_hand_computed_mask(
    monkeypatch, label_weight: str, weight: float
) -> None:
    """lambda = 0.75: w_t = 16 sqrt(0.25) = 8 frames from s_t = 2, i.e. frames 2-9 replaced.

    Equation 3 weights the anchor by the sampled lambda (0.75); the area option by the share
    of the input left unreplaced, 1 - 8/16 = 0.5.
    """
    method = make_method(NnclrTCutMix, label_weight=label_weight)
    monkeypatch.setattr(nnclr, "sample_lambda", lambda alpha: 0.75)
    monkeypatch.setattr(torch, "randint", lambda *args, **kw: torch.tensor(2))
    monkeypatch.setattr(torch, "randperm", lambda *args, **kw: torch.tensor([1, 2, 0]))
    x = clip_index_features(3, -1)  # clip b is the constant b over [1, 5, 16]
    mixed, targets, lam = method.mix(x, -1)
    monkeypatch.undo()
    expected_frames = torch.tensor(
        [
            [0.0] * 2 + [1.0] * 8 + [0.0] * 6,
            [1.0] * 2 + [2.0] * 8 + [1.0] * 6,
            [2.0] * 2 + [0.0] * 8 + [2.0] * 6,
        ]
    )
    torch.testing.assert_close(mixed[:, 0], expected_frames[:, None, :].expand(3, 5, 16))
    w = weight
    expected = torch.tensor([[w, 1 - w, 0.0], [0.0, w, 1 - w], [1 - w, 0.0, w]])
    torch.testing.assert_close(targets, expected)
    assert lam == weight


def test_tf_cutmix_replaces_a_box() -> None:
    torch.manual_seed(7)
    method = make_method(NnclrTfCutMix, alpha=1.0)
    x = clip_index_features(4, -1)
    for _ in range(20):
        mixed, targets, _ = method.mix(x, -1)
        replaced = (mixed != x).any(0)[0]  # [F, T]
        if replaced.any():
            rows, cols = replaced.any(1).nonzero().flatten(), replaced.any(0).nonzero().flatten()
            assert replaced.sum() == rows.numel() * cols.numel()  # a rectangle
        assert targets.sum(1).allclose(torch.ones(4)) and targets.sum(0).allclose(torch.ones(4))


def test_mixup_ls_variant_mixes_inputs_and_smooths_labels() -> None:
    torch.manual_seed(8)
    method = make_method(NnclrMixupLs, alpha=0.5, smoothing=0.1)
    x = torch.randn(5, 1, 4, 6)
    mixed, targets, lam = method.mix(x, -1)
    hard = (targets - 0.1 / 5) / 0.9  # undo the smoothing
    partner = (hard - lam * torch.eye(5)).argmax(1)
    assert sorted(partner.tolist()) == list(range(5))
    torch.testing.assert_close(hard, virtual_labels(partner, lam))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])


# -- views --------------------------------------------------------------------------


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_views_differ_and_a_shift_only_view_is_a_circular_roll(time_axis: int) -> None:
    torch.manual_seed(9)
    x = torch.randn(4, 1, 6, 30) if time_axis == -1 else torch.randn(4, 1, 30, 6)
    settings = ViewSettings()
    first, second = augment_view(x, time_axis, settings), augment_view(x, time_axis, settings)
    assert first.shape == x.shape and not torch.equal(first, second)
    shifted = augment_view(x, time_axis, ViewSettings(0.2, 0.0, 0.0, 0.0))
    for b in range(4):
        rolls = [torch.roll(x[b], s, dims=time_axis) for s in range(-6, 7)]
        assert any(torch.equal(shifted[b], r) for r in rolls)


def test_view_masks_are_bands_filled_with_the_clip_mean() -> None:
    torch.manual_seed(10)
    x = torch.randn(3, 1, 8, 40) + 5
    masked = augment_view(x, -1, ViewSettings(0.0, 0.0, 0.25, 0.25))
    for b in range(3):
        changed = masked[b, 0] != x[b, 0]  # [F, T]
        fill = masked[b, 0][changed]
        torch.testing.assert_close(fill, torch.full_like(fill, x[b].mean().item()))
        bins, frames = changed.all(1), changed.all(0)  # fully masked rows and columns
        assert torch.equal(changed, bins[:, None] | frames[None, :])
        assert bins.sum() <= 2 and frames.sum() <= 10
        for band in (bins, frames):
            where = band.nonzero().flatten()
            assert where.numel() == 0 or where.max() - where.min() + 1 == where.numel()


# -- a training step ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [Nnclr, NnclrTCutMix, NnclrMixupLs, NnclrTfCutMix])
def test_training_step_gives_finite_loss_with_gradient_and_fills_the_queue(cls: type) -> None:
    torch.manual_seed(11)
    backbone = TinyBackbone()
    method = make_method(cls, queue_size=32, out_dim=4)
    batch = SimpleNamespace(features=torch.randn(6, 1, 6, 20), index=torch.arange(6))
    for step in range(2):
        output = method.training_step(batch, backbone)
        assert torch.isfinite(output.loss)
        assert method.queue.filled == 6 * (step + 1)
    output.loss.backward()
    assert backbone.blocks[-1].weight.grad.abs().sum() > 0
    assert method.head.predictor[0].weight.grad.abs().sum() > 0


# -- progressive retraining ---------------------------------------------------------


def stages_for(run: RunSettings, **options) -> list[Stage]:
    return make_method(NnclrTCutMix, **options).stages(TinyBackbone(), run)


def test_presets_give_the_paper_schedule_and_a_small_one() -> None:
    head, top = stages_for(RunSettings(epochs=10, lr=3e-3, batch_size=16), preset="paper")
    assert (head.epochs, head.lr, head.batch_size, head.backbone_blocks) == (40, 1e-4, 512, 0)
    assert (top.epochs, top.lr, top.batch_size, top.backbone_blocks) == (160, 1e-4, 128, 2)
    assert top.layer_decay == 0.65
    assert stages_for(RunSettings(epochs=10, lr=3e-3, batch_size=16)) == [head, top]  # default
    head, top = stages_for(RunSettings(epochs=10, lr=3e-3, batch_size=16), preset="small")
    assert (head.epochs, head.lr, head.batch_size) == (2, 3e-3, 16)
    assert (top.epochs, top.lr, top.batch_size) == (8, 3e-3, 16)
    (only,) = stages_for(RunSettings(epochs=10), preset="paper", tune_epochs=0, head_lr=0.5)
    assert (only.name, only.epochs, only.lr) == ("head", 40, 0.5)


@pytest.mark.parametrize(
    ("epochs", "head", "top"),
    # head = max(1, round(N / 5)), top = N - head: 40:160 is 1:4
    [(1, 1, 0), (2, 1, 1), (3, 1, 2), (5, 1, 4), (12, 2, 10), (200, 40, 160)],
)
def test_an_explicit_epochs_scales_the_paper_schedule_1_to_4(epochs, head, top) -> None:
    run = RunSettings(epochs=epochs, lr=3e-3, batch_size=16)
    stages = stages_for(run, preset="paper")
    assert [(s.name, s.epochs) for s in stages] == [("head", head), ("top", top)][: 1 + (top > 0)]
    assert [(s.lr, s.batch_size) for s in stages] == [(1e-4, 512), (1e-4, 128)][: len(stages)]
    assert stages[0].note.startswith(
        f"preset 'paper' (40 + 160 epochs) scaled to run.epochs={epochs} by its 1:4 split "
        f"({head} + {top}); no backbone.checkpoint"
    )
    small = stages_for(run, preset="small")  # the same split, the run's lr and batch size
    assert [(s.name, s.epochs, s.lr, s.batch_size) for s in small] == [
        (s.name, s.epochs, 3e-3, 16) for s in stages
    ]
    assert "scaled" not in small[0].note


@pytest.mark.parametrize("cls", [Nnclr, NnclrTCutMix, NnclrMixupLs, NnclrTfCutMix])
def test_every_nnclr_method_scales_its_paper_preset_the_same_way(cls: type) -> None:
    method = make_method(cls)
    assert [(s.name, s.epochs) for s in method.stages(TinyBackbone(), RunSettings())] == [
        ("head", 40),
        ("top", 160),
    ]
    stages = method.stages(TinyBackbone(), RunSettings(epochs=7))  # round(7 / 5) = 1
    assert [(s.name, s.epochs) for s in stages] == [("head", 1), ("top", 6)]


def test_the_default_epochs_give_the_paper_schedule_and_explicit_stage_epochs_win() -> None:
    assert nnclr.DEFAULT_RUN_EPOCHS == 10 and not nnclr.epochs_given(RunSettings())
    head, top = stages_for(RunSettings(), preset="paper")
    assert (head.epochs, top.epochs) == (40, 160) and "scaled" not in head.note
    # An explicit stage option wins over the split; the other comes from the split.
    head, top = stages_for(RunSettings(epochs=3), preset="paper", tune_epochs=7)
    assert (head.epochs, top.epochs) == (1, 7)
    assert "scaled to run.epochs=3 by its 1:4 split (1 + 2)" in head.note
    # Both stage options explicit: the preset's epochs are not used, nothing is scaled.
    head, top = stages_for(RunSettings(epochs=3), head_epochs=4, tune_epochs=6)
    assert (head.epochs, top.epochs) == (4, 6) and "scaled" not in head.note


def test_the_scaling_note_goes_to_the_first_contrastive_stage_after_the_warm_up() -> None:
    backbone = audiomae()
    method = method_on(backbone, preset="paper", mae_warmup_epochs=2)
    warmup, head, top = method.stages(backbone, RunSettings(epochs=5))
    assert (warmup.name, warmup.epochs, head.epochs, top.epochs) == ("mae-warmup", 2, 1, 4)
    assert "scaled" not in warmup.note
    assert head.note == (
        "preset 'paper' (40 + 160 epochs) scaled to run.epochs=5 by its 1:4 split (1 + 4)"
    )


def test_a_run_with_epochs_logs_and_records_the_scaled_paper_schedule(tmp_path) -> None:
    small_head = ("proj_hidden=32", "pred_hidden=32", "out_dim=8", "queue_size=64")
    options = [arg for o in (*small_head, "tune_blocks=1") for arg in ("--set", f"method.{o}")]
    args = toy_run_args(tmp_path, "--method", "nnclr-tcutmix", "--protocol", "linear", *options)
    assert args[args.index("--epochs") + 1] == "3"
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    [folder] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    config = json.loads((folder / "config.json").read_text())
    assert (config["run"]["epochs"], config["method"]["preset"]) == (3, "paper")
    log = (folder / "log.txt").read_text()
    assert (
        "stage 1/2 'head': 1 epochs, lr 1.00e-04, batch 512, backbone blocks trained: none "
        "(backbone frozen); preset 'paper' (40 + 160 epochs) scaled to run.epochs=3 by its 1:4 "
        "split (1 + 2); no backbone.checkpoint"
    ) in log
    top = "stage 2/2 'top': 2 epochs, lr 1.00e-04, batch 128, backbone blocks trained: top 1\n"
    assert top in log


def test_tune_blocks_beyond_the_backbone_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="tune_blocks"):
        stages_for(RunSettings(), tune_blocks=5)


def bare_experiment(method: Nnclr, backbone: Backbone) -> SimpleNamespace:
    """Builds each stage's optimizer as the run does (its phase through the one builder)."""

    def build_optimizer(stage: Stage) -> torch.optim.Optimizer:
        phase = stage_phase(stage, backbone, method, RunSettings(weight_decay=0.0))
        return build(phase.param_groups, phase.optimizer)

    return SimpleNamespace(build_optimizer=build_optimizer)


def test_each_stage_trains_exactly_the_intended_parameters() -> None:
    backbone = TinyBackbone()
    method = make_method(NnclrTCutMix, preset="small")
    experiment = bare_experiment(method, backbone)
    head, top = method.stages(backbone, RunSettings(epochs=5, lr=1e-3))

    optimizer = experiment.build_optimizer(head)
    trained = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trained == set()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in method.parameters()}

    optimizer = experiment.build_optimizer(top)
    trained = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trained == {
        "blocks.2.weight", "blocks.2.bias", "blocks.3.weight", "blocks.3.bias",
        "norm.weight", "norm.bias",
    }  # fmt: skip
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    expected = {id(p) for n, p in backbone.named_parameters() if n in trained}
    assert in_optimizer == expected | {id(p) for p in method.parameters()}
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(backbone.blocks[2].weight)] == pytest.approx(1e-3 * 0.65**2)
    assert lr_of[id(backbone.blocks[3].weight)] == pytest.approx(1e-3 * 0.65)
    assert lr_of[id(backbone.norm.weight)] == pytest.approx(1e-3)
    assert lr_of[id(method.head.predictor[0].weight)] == pytest.approx(1e-3)


@pytest.mark.slow
def test_training_run_keeps_frozen_parameters_and_updates_the_rest(tmp_path) -> None:
    from harness.registry.config import resolve
    from harness.registry.plugins import load_plugins

    toy_plugin = Path(__file__).resolve().parent / "toy_plugin.py"
    (tmp_path / "tones").mkdir()
    raw = {
        "run": {"epochs": 4, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0},
        "backbone": {"name": "toy"},
        "method": {"name": "nnclr-tcutmix", "proj_hidden": 32, "pred_hidden": 32, "out_dim": 8,
                   "tune_blocks": 1, "preset": "small"},
        "dataset": {"name": "toy-tones", "root": str(tmp_path / "tones")},
        "protocol": {"names": []},
    }  # fmt: skip
    experiment = Experiment(resolve(raw, load_plugins([str(toy_plugin)])))
    experiment.setup()
    before = {n: p.detach().clone() for n, p in experiment.backbone.named_parameters()}
    head_before = {n: p.detach().clone() for n, p in experiment.method.named_parameters()}
    experiment.train()
    after = dict(experiment.backbone.named_parameters())
    for name in ("stem.weight", "blocks.0.weight", "blocks.0.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("blocks.1.weight", "norm.weight"):
        assert not torch.equal(after[name], before[name]), name
    changed = [
        n for n, p in experiment.method.named_parameters() if not torch.equal(p, head_before[n])
    ]
    assert len(changed) == len(head_before)
    assert any("stage 2/2 'top'" in line for line in experiment.log_lines)


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="alpha"):
        build_dataclass(MixConfig, {"alpha": "0"}, "method")
    with pytest.raises(UsageError, match="smoothing"):
        build_dataclass(MixupLsConfig, {"smoothing": "1.5"}, "method")
    with pytest.raises(UsageError, match="layer_decay"):
        build_dataclass(NnclrConfig, {"layer_decay": "0"}, "method")
    with pytest.raises(UsageError, match="preset"):
        build_dataclass(NnclrConfig, {"preset": "huge"}, "method")


# -- the heads, the queue's buffers, the option domains ------------------------------


def layout(module: nn.Sequential) -> list[tuple]:
    """Each layer's kind, sizes, whether a linear layer has a bias and an activation is in place."""
    rows = []
    for layer in module:
        if isinstance(layer, nn.Linear):
            rows.append(("linear", layer.in_features, layer.out_features, layer.bias is not None))
        elif isinstance(layer, nn.BatchNorm1d):
            rows.append(("bn", layer.num_features))
        else:
            rows.append((type(layer).__name__, layer.inplace))
    return rows


def test_projector_and_predictor_follow_nnclr_table_and_keep_memory_low() -> None:
    """NNCLR (Dwibedi et al. 2021): a 3-layer projector with batch norm after every layer and
    bias-free linear layers ahead of it, a 2-layer predictor; ReLUs work in place."""
    assert layout(nnclr.projector(8, 16, 4)) == [
        ("linear", 8, 16, False), ("bn", 16), ("ReLU", True),
        ("linear", 16, 16, False), ("bn", 16), ("ReLU", True),
        ("linear", 16, 4, False), ("bn", 4),
    ]  # fmt: skip
    assert layout(nnclr.predictor(4, 16)) == [
        ("linear", 4, 16, False), ("bn", 16), ("ReLU", True), ("linear", 16, 4, True),
    ]  # fmt: skip


def test_queue_starts_empty_with_no_clip_ids_and_is_not_part_of_the_weights() -> None:
    queue = FifoQueue(4, 3)
    assert queue.items.shape == (4, 3) and not queue.items.any()
    assert queue.ids.dtype == torch.long and queue.ids.tolist() == [-1, -1, -1, -1]
    assert queue.state_dict() == {}  # training state, saved with the checkpoints, not method.pt


@pytest.mark.parametrize(
    ("name", "accepted", "refused"),
    [
        *[(n, [1], [0]) for n in ("tau", "k", "queue_size", "proj_hidden", "out_dim")],
        ("pred_hidden", [1], [0]),
        *[(n, [0.0, 1.0], [1.5, -0.1]) for n in ("max_shift", "time_mask", "freq_mask")],
        ("gain_std", [0.0], [-0.1]),
        ("layer_decay", [1.0, 0.5], [0.0, 1.5]),
        *[(n, [None, 0], [-1]) for n in ("head_epochs", "tune_epochs", "tune_blocks")],
        ("mae_warmup_epochs", [None, 0], [-1]),
        ("mae_mask_ratio", [0.5], [0.0, 1.0, 1.5]),
        *[(n, [None, 1e-3], [0, -1.0]) for n in ("head_lr", "tune_lr", "mae_warmup_lr")],
        *[(n, [None, 1], [0, -1]) for n in ("head_batch_size", "tune_batch_size")],
    ],
)
def test_option_domains_at_their_boundaries(name: str, accepted: list, refused: list) -> None:
    for value in accepted:
        assert getattr(NnclrConfig(**{name: value}), name) == value
    for value in refused:
        with pytest.raises(ValueError, match=name):
            NnclrConfig(**{name: value})


def test_training_step_logs_lambda_and_the_queue_fill() -> None:
    torch.manual_seed(3)
    method = make_method(NnclrTCutMix, queue_size=32, out_dim=4)
    batch = SimpleNamespace(features=torch.randn(6, 1, 6, 20), index=torch.arange(6))
    logs = method.training_step(batch, TinyBackbone()).logs
    assert set(logs) == {"lambda", "queue_filled"}
    assert logs["queue_filled"] == 6.0 and 0.0 <= float(logs["lambda"]) <= 1.0


# -- progressive retraining and the MAE warm-up, stage by stage -------------------------

NOTE_MAE = (
    "no backbone.checkpoint: MAE pretraining of the randomly initialised encoder on the "
    "training clips before contrastive tuning"
)


def audiomae(checkpoint: str = "") -> Backbone:
    return AudioMAE(AudioMAE.Config(checkpoint=checkpoint))


def method_on(backbone: Backbone, cls: type = NnclrTCutMix, **options) -> Nnclr:
    defaults = {"proj_hidden": 16, "pred_hidden": 16, "out_dim": 2, "queue_size": 3}
    method = cls(build_dataclass(cls.Config, defaults | options, "method"))
    method.setup(backbone, Task(["a"], [], 16000, -2))
    return method


def test_a_random_mae_encoder_gets_the_exact_warm_up_head_and_top_stages() -> None:
    backbone = audiomae()
    method = method_on(backbone, preset="small", mae_warmup_epochs=3, mae_warmup_lr=0.02)
    assert method.mae_warmup_for(backbone) == 3 and method.objective == "nnclr"
    stages = method.stages(backbone, RunSettings(epochs=13, lr=3e-3, batch_size=16))
    assert stages == [
        Stage("mae-warmup", 3, 0.02, 16, note=NOTE_MAE),
        Stage("head", 3, 3e-3, 16, backbone_blocks=0),  # round(13 / 5)
        Stage("top", 10, 3e-3, 16, backbone_blocks=2, layer_decay=method.config.layer_decay),
    ]
    method.begin_stage(stages[0])
    assert method.objective == "mae"
    for stage in stages[1:]:
        method.begin_stage(stage)
        assert method.objective == "nnclr"


def test_a_loaded_encoder_gets_no_warm_up_and_no_note() -> None:
    backbone = audiomae("pretrained.pt")
    method = method_on(backbone, preset="small", mae_warmup_epochs=3)
    assert method.mae is None and method.mae_warmup_for(backbone) == 0
    stages = method.stages(backbone, RunSettings(epochs=1, lr=1e-3, batch_size=4))
    assert stages == [Stage("head", 1, 1e-3, 4, backbone_blocks=0)]  # top: 1 - 1 = 0 epochs


def test_a_random_encoder_without_warm_up_says_why_in_the_first_stage() -> None:
    off = method_on(audiomae(), preset="small", mae_warmup_epochs=0)
    (head, top) = off.stages(audiomae(), RunSettings(epochs=3))
    assert head.note == (
        "no backbone.checkpoint: the encoder is randomly initialised; "
        "MAE warm-up off (method.mae_warmup_epochs=0, preset 'small')"
    )
    assert (head.epochs, top.epochs, top.note) == (1, 2, "")  # max(1, round(3 / 5))
    plain = make_method(preset="small")
    (head, _) = plain.stages(TinyBackbone(TinyBackbone.Config(depth=5)), RunSettings(epochs=3))
    assert head.note == (
        "no backbone.checkpoint: the encoder is randomly initialised; "
        "backbone 'tiny' has no masked-encoder contract for an MAE warm-up"
    )
    with pytest.raises(UsageError, match="MAE stage"):
        plain.begin_stage(Stage("mae-warmup", 1, 1e-3, 2))


def test_top_stage_tunes_half_the_blocks_rounded_down_or_all_of_them() -> None:
    five = TinyBackbone(TinyBackbone.Config(depth=5))
    (_, top) = make_method(preset="small").stages(five, RunSettings(epochs=5))
    assert top.backbone_blocks == 2
    (_, top) = make_method(preset="small", tune_blocks=5).stages(five, RunSettings(epochs=5))
    assert top.backbone_blocks == 5


def test_has_checkpoint_reads_the_backbone_config() -> None:
    assert nnclr.has_checkpoint(audiomae("weights.pt"))
    assert not nnclr.has_checkpoint(audiomae())
    assert not nnclr.has_checkpoint(TinyBackbone())  # a config without the field


def test_setup_keeps_the_random_stream_of_the_mae_warm_up() -> None:
    """With a warm-up the head is drawn aside, so the warm-up draws what `--method mae` draws;
    without one the head's initialisation is part of the run's stream."""
    backbone = audiomae()
    torch.manual_seed(4)
    method_on(backbone, preset="small", mae_warmup_epochs=2)
    after_method = torch.rand(3)
    torch.manual_seed(4)
    MaskedAutoencoder(MaskedAutoencoder.Config(mask_ratio=0.8)).setup(
        backbone, Task(["a"], [], 16000, -2)
    )
    torch.testing.assert_close(after_method, torch.rand(3))

    torch.manual_seed(4)
    before = torch.rand(3)
    torch.manual_seed(4)
    make_method(preset="small")
    assert not torch.equal(torch.rand(3), before)


# -- the pieces of a view and of the mixing, exactly ---------------------------------------


def test_random_ints_cover_their_range() -> None:
    torch.manual_seed(0)
    signed = nnclr.random_ints(2, 4000, torch.device("cpu"), signed=True)
    unsigned = nnclr.random_ints(2, 4000, torch.device("cpu"))
    assert set(signed.tolist()) == {-2, -1, 0, 1, 2}
    assert set(unsigned.tolist()) == {0, 1, 2}


def test_shift_time_rolls_forward_along_the_time_axis() -> None:
    x = torch.arange(10.0).reshape(2, 1, 1, 5)
    shifted = nnclr.shift_time(x, -1, torch.tensor([1, -2]))
    torch.testing.assert_close(shifted[0], torch.roll(x[0], 1, dims=-1))
    torch.testing.assert_close(shifted[1], torch.roll(x[1], -2, dims=-1))
    assert nnclr.other_axis(-1) == -2 and nnclr.other_axis(-2) == -1


def test_random_bands_follow_uniform_widths_then_uniform_starts() -> None:
    """Length 3, widths up to 2: width 0, 1, 2 each 1/3; then each start equally likely."""
    torch.manual_seed(1)
    rows = nnclr.random_bands(3, 2, 30000, torch.device("cpu"))
    counts: dict[tuple, int] = {}
    for row in rows.int().tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    expected = {
        (0, 0, 0): 1 / 3,
        (1, 0, 0): 1 / 9, (0, 1, 0): 1 / 9, (0, 0, 1): 1 / 9,
        (1, 1, 0): 1 / 6, (0, 1, 1): 1 / 6,
    }  # fmt: skip
    assert set(counts) == set(expected)
    for mask, share in expected.items():
        assert counts[mask] / len(rows) == pytest.approx(share, abs=0.012)


def test_box_mask_broadcasts_over_batch_and_channels() -> None:
    box = Box(t0=1, t1=3, f0=0, f1=2)
    mask = box_mask(torch.Size([5, 2, 4, 6]), -1, box)
    assert mask.shape == (1, 1, 4, 6)
    assert mask[0, 0].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]


@pytest.mark.parametrize("time_axis", [-1, -2])
def test_view_masks_are_one_time_band_or_one_frequency_band(time_axis: int) -> None:
    torch.manual_seed(12)
    x = torch.randn(64, 2, 6, 20) if time_axis == -1 else torch.randn(64, 2, 20, 6)
    x = x + torch.arange(64.0)[:, None, None, None]  # clip means far apart
    masked = augment_view(x, time_axis, ViewSettings(0.0, 0.0, 0.25, 0.5))
    widths = {"time": set(), "freq": set()}
    for b in range(64):
        changed = masked[b] != x[b]  # [C, F, T] or [C, T, F]
        assert torch.equal(changed[0], changed[1])  # the same band in every channel
        fill = masked[b][changed]
        torch.testing.assert_close(fill, torch.full_like(fill, x[b].mean().item()))
        time = changed[0].all(dim=-2 if time_axis == -1 else -1)
        freq = changed[0].all(dim=-1 if time_axis == -1 else -2)
        union = freq[:, None] | time[None, :] if time_axis == -1 else time[:, None] | freq[None, :]
        assert torch.equal(changed[0], union)
        widths["time"].add(int(time.sum()))
        widths["freq"].add(int(freq.sum()))
    assert max(widths["time"] - {6}) == 5 and max(widths["freq"] - {20}) == 3


def test_view_shifts_go_both_ways_up_to_the_limit() -> None:
    torch.manual_seed(13)
    x = torch.randn(200, 1, 3, 8)
    shifted = augment_view(x, -1, ViewSettings(0.25, 0.0, 0.0, 0.0))
    seen = set()
    for b in range(200):
        (shift,) = [s for s in range(-2, 3) if torch.equal(shifted[b], torch.roll(x[b], s, -1))]
        seen.add(shift)
    assert seen == {-2, -1, 0, 1, 2}


def test_view_gain_is_one_offset_per_clip_with_the_configured_spread() -> None:
    torch.manual_seed(14)
    x = torch.randn(4000, 1, 3, 5)
    offset = augment_view(x, -1, ViewSettings(0.0, 0.1, 0.0, 0.0)) - x
    per_clip = offset.flatten(1)
    torch.testing.assert_close(per_clip, per_clip[:, :1].expand_as(per_clip))
    assert per_clip[:, 0].std().item() == pytest.approx(0.1, rel=0.05)


def test_views_come_from_the_view_options() -> None:
    cfg = NnclrConfig(max_shift=0.3, gain_std=0.4, time_mask=0.5, freq_mask=0.6)
    assert cfg.views() == ViewSettings(max_shift=0.3, gain_std=0.4, time_mask=0.5, freq_mask=0.6)


def test_plain_nnclr_mix_is_the_identity_with_one_hot_targets() -> None:
    x = torch.randn(3, 1, 4, 5)
    mixed, targets, lam = make_method().mix(x, -1)
    assert mixed is x and lam == 1.0
    torch.testing.assert_close(targets, torch.eye(3))


def test_contrastive_head_gives_unit_rows() -> None:
    head = nnclr.ContrastiveHead(8, 16, 16, 3).eval()
    z, p = head(torch.randn(5, 8))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
    assert p.shape == (5, 3)


def test_training_needs_two_clips_per_batch() -> None:
    method = make_method(queue_size=8)
    pair = SimpleNamespace(features=torch.randn(2, 1, 6, 20), index=torch.arange(2))
    assert torch.isfinite(method.training_step(pair, TinyBackbone()).loss)
    with pytest.raises(UsageError, match="at least 2 clips"):
        method.training_step(SimpleNamespace(features=pair.features[:1], index=torch.arange(1)),
                             TinyBackbone())  # fmt: skip


@pytest.mark.parametrize("symmetric", [False, True])
def test_exclude_self_skips_the_queue_entry_of_the_anchor_clip(symmetric: bool) -> None:
    """Queue: clip 7 at [1, 0], clip 9 at [0, 1]. Both anchors point at [1, 0]; anchor 0 is clip
    7, so with exclude_self its support is clip 9's [0, 1]."""
    z = unit([[1.0, 0.1], [1.0, 0.2]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    losses = {}
    for exclude in (False, True):
        method = make_method(tau=TAU, exclude_self=exclude, symmetric=symmetric, queue_size=2)
        method.queue.enqueue(unit([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([7, 9]))
        losses[exclude] = method.contrastive_loss(z, p, z, p, torch.eye(2), torch.tensor([7, 3]))
    # without exclusion both rows' support is [1, 0]: logits [[2, 0], [2, 0]] / ... by hand
    plain = (softplus_neg(2.0) + softplus_neg(-2.0)) / 2
    # with it row 0's support is [0, 1]: logits [0, 2], positive column 0
    excluded = (softplus_neg(-2.0) + softplus_neg(-2.0)) / 2
    assert losses[False].item() == pytest.approx(plain, rel=1e-6)
    assert losses[True].item() == pytest.approx(excluded, rel=1e-6)


def test_mix_option_checks_in_the_config_itself() -> None:
    assert MixupLsConfig(smoothing=0.0).smoothing == 0.0
    for bad in (1.0, 1.5):
        with pytest.raises(ValueError, match="smoothing"):
            MixupLsConfig(smoothing=bad)
    with pytest.raises(ValueError, match="alpha"):
        MixConfig(alpha=0.0)
