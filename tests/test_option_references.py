"""Tests that bite (issue 23, item 9): every numeric option of every method and augmentation,
at a non-default value, against a reference.

``CASES`` maps ``"plugin.field"`` to a check that builds the plugin with that one field (and
only small, cheap base values for others) at a value far from its default and compares what
the plugin computes with a hand-computed value, a library (torchaudio, scipy) or a
straightforward re-implementation here. An option that were ignored or wired to another field
changes the result by far more than the tolerance. ``test_every_numeric_option_has_a_case``
walks the registry: a new numeric option without a row here fails it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from scipy.signal import windows

from harness.api import RunSettings, Stage
from harness.api.testing import TinyBackbone, apply_augmentation, make_batch, make_task
from harness.nn.dirgen import DirGenerator, save_generator
from harness.registry.plugins import load_plugins
from harness_plugins.augmentations.vintage import synthetic_vintage
from harness_plugins.backbones.audiomae import AudioMAE

KINDS = ("method", "augmentation")
NNCLR_FAMILY = ("nnclr", "nnclr-mixup-ls", "nnclr-tcutmix", "nnclr-tfcutmix")
EXEMPT: dict[str, str] = {}
"""``"plugin.field"`` -> why a numeric option needs no reference case. Empty: every numeric
option of every method and augmentation changes a step's output (or the stages it asks for)
and has a case below."""


# -- the registry walk ----------------------------------------------------------


def is_numeric(annotation: object) -> bool:
    """int, float or bool, optionally ``| None``, or a list of them."""
    if annotation in (int, float, bool):
        return True
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and is_numeric(rest[0])
    if origin is list:
        return len(args) == 1 and args[0] in (int, float)
    return False


def numeric_options() -> list[str]:
    plugins = load_plugins()
    found = []
    for kind in KINDS:
        for entry in plugins[kind]:
            if not entry.cls.__module__.startswith("harness_plugins."):
                continue
            hints = typing.get_type_hints(entry.cls.Config)
            found += [
                f"{entry.name}.{f.name}"
                for f in dataclasses.fields(entry.cls.Config)
                if is_numeric(hints[f.name])
            ]
    return found


def component(kind: str, name: str) -> type:
    return load_plugins()[kind].get(name).cls


# -- shared helpers -------------------------------------------------------------

TASK = make_task(num_classes=3, devices=("a", "b", "c"))


class RecordingBackbone(TinyBackbone):
    """The tiny test backbone, keeping the features its ``embed`` was last called with."""

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        self.seen = features.detach().clone()
        return super().embed(features)


def smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """Cross-entropy against ``(1 - eps) * one_hot + eps / C``, by hand in float64."""
    logp = np.log(F.softmax(logits.double(), dim=-1).detach().numpy())
    classes = logp.shape[1]
    rows = [
        -(1 - eps) * logp[i, y] - eps / classes * logp[i].sum()
        for i, y in enumerate(labels.tolist())
    ]
    return float(np.mean(rows))


def soft_ce(logits: np.ndarray, targets: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(targets * logp).sum(axis=1).mean())


# -- ce, icl --------------------------------------------------------------------

ICL_VALUES = {"label_smoothing": 0.4, "alpha": 1.2, "beta": 0.25, "lambda_icl": 3.0}
ICL_DEFAULTS = {"label_smoothing": 0.0, "alpha": 0.2, "beta": 1.0, "lambda_icl": 0.5}


def icl_reference(z: np.ndarray, devices: list[int], alpha: float, beta: float) -> float:
    """Equations (2)-(4) of seed 000 pair by pair: exp((alpha - d) / beta) for same-device
    pairs, d^2 for cross-device pairs, mean over ordered pairs of distinct clips."""
    terms = []
    for i, j in itertools.permutations(range(len(devices)), 2):
        d = float(np.linalg.norm(z[i] - z[j]))
        terms.append(math.exp((alpha - d) / beta) if devices[i] == devices[j] else d * d)
    return float(np.mean(terms))


def check_head_cross_entropy(plugin: str, field: str, tmp_path: Path) -> None:
    value = ICL_VALUES.get(field, False)  # normalize=False: the raw reading
    method = component("method", plugin)(component("method", plugin).Config(**{field: value}))
    backbone = TinyBackbone()
    method.setup(backbone, TASK)
    batch = make_batch(TASK, backbone, batch_size=6, seed=3)
    loss = float(method.training_step(batch, backbone).loss)
    encoded = backbone(batch.features)
    options = {**ICL_DEFAULTS, "normalize": True, field: value}
    expected = smoothed_ce(method.logits(encoded), batch.label, options["label_smoothing"])
    if plugin == "icl":
        z = encoded.embedding.detach().double()
        z = F.normalize(z, dim=-1) if options["normalize"] else z
        icl = icl_reference(z.numpy(), batch.device.tolist(), options["alpha"], options["beta"])
        expected += options["lambda_icl"] * icl
    assert loss == pytest.approx(expected, rel=1e-5)


# -- mixup-ls -------------------------------------------------------------------


def check_mixup_ls(plugin: str, field: str, tmp_path: Path) -> None:
    options = {"alpha": 0.3, "smoothing": 0.1} | {field: {"alpha": 4.0, "smoothing": 0.45}[field]}
    cls = component("method", plugin)
    method = cls(cls.Config(**{field: options[field]}))
    backbone = TinyBackbone()
    method.setup(backbone, TASK)
    batch = make_batch(TASK, backbone, batch_size=6, seed=1)
    torch.manual_seed(11)
    out = method.training_step(batch, backbone)
    torch.manual_seed(11)
    alpha = torch.tensor(options["alpha"])
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(6)
    eps = options["smoothing"]
    one_hot = np.eye(3)[batch.label.numpy()] * (1 - eps) + eps / 3
    targets = lam * one_hot + (1 - lam) * one_hot[perm.numpy()]
    mixed = lam * batch.features + (1 - lam) * batch.features[perm]
    logits = method.logits(backbone(mixed)).detach().double().numpy()
    assert out.logs["lambda"] == pytest.approx(lam, abs=1e-7)
    assert float(out.loss) == pytest.approx(soft_ce(logits, targets), rel=1e-5)


# -- mae (and the NNCLR warm-up's mask ratio) -------------------------------------

MAE_TASK = make_task(num_classes=0, devices=(), sample_rate=16000, time_axis=-2)


def mae_features(backbone: AudioMAE) -> torch.Tensor:
    wave = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    return backbone.frontend()(wave)


def hidden_patches(method, backbone: AudioMAE) -> float:
    """Hidden patches per clip in one reconstruction."""
    torch.manual_seed(0)
    _, target, mask = method.reconstruct(mae_features(backbone), backbone)
    counts = mask.sum(dim=1).tolist()
    assert len(set(counts)) == 1
    return counts[0], target.shape[1]


def check_mae(plugin: str, field: str, tmp_path: Path) -> None:
    backbone = AudioMAE(AudioMAE.Config(size="tiny"))
    cls = component("method", plugin)
    value = {
        "mask_ratio": 0.3,
        "norm_pix_loss": False,
        "decoder_dim": 40,
        "decoder_depth": 3,
        "decoder_heads": 4,
        "decoder_mode": 1,
    }[field]
    small = {"decoder_depth": 1} if field not in ("decoder_depth", "decoder_mode") else {}
    method = cls(cls.Config(**small, **{field: value}))
    method.setup(backbone, MAE_TASK)
    _, depth, heads = backbone.mae_decoder
    if field == "mask_ratio":
        hidden, patches = hidden_patches(method, backbone)
        assert hidden == patches - int(patches * (1 - 0.3))  # 70 % hidden, not 80 %
    elif field == "norm_pix_loss":
        torch.manual_seed(5)
        loss = float(
            method.training_step(
                types.SimpleNamespace(features=mae_features(backbone)), backbone
            ).loss
        )
        torch.manual_seed(5)
        pred, target, mask = method.reconstruct(mae_features(backbone), backbone)
        per_patch = ((pred - target) ** 2).mean(-1)  # raw targets, no per-patch standardising
        assert loss == pytest.approx(float((per_patch * mask).sum() / mask.sum()), rel=1e-5)
    elif field == "decoder_dim":
        assert method.decoder_embed.out_features == 40 and method.mask_token.shape[-1] == 40
    elif field == "decoder_depth":
        assert len(method.decoder_blocks) == 3
    elif field == "decoder_heads":
        assert method.decoder_blocks[0].attn.num_heads == 4 != heads
    else:  # decoder_mode 1: the local decoder, twice the global depth
        assert len(method.decoder_blocks) == 2 * depth
        assert type(method.decoder_blocks[0]).__name__ != "Block"


# -- the NNCLR family -------------------------------------------------------------

SMALL_HEAD = {"proj_hidden": 12, "pred_hidden": 10, "out_dim": 6, "queue_size": 64}
NO_VIEWS = {"max_shift": 0.0, "gain_std": 0.0, "time_mask": 0.0, "freq_mask": 0.0}


def nnclr(plugin: str, backbone=None, **options):
    cls = component("method", plugin)
    method = cls(cls.Config(**(SMALL_HEAD | options)))
    method.setup(backbone or TinyBackbone(), TASK)
    return method


def support_reference(query, bank, bank_ids, query_ids, k) -> np.ndarray:
    """NN(z, Q, k): the nearest entry (k = 1) or the re-normalised mean of the k nearest,
    skipping entries of the query's own clip when ``query_ids`` is given."""
    rows = []
    for b, q in enumerate(query):
        sims = bank @ q
        allowed = [j for j in range(len(bank)) if query_ids is None or bank_ids[j] != query_ids[b]]
        best = sorted(allowed, key=lambda j: -sims[j])[:k]
        mean = bank[best].mean(axis=0)
        rows.append(bank[best[0]] if k == 1 else mean / np.linalg.norm(mean))
    return np.stack(rows)


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(
        torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def check_nnclr_loss(plugin: str, field: str, tmp_path: Path) -> None:
    """tau, k, exclude_self, symmetric: the loss of given projections against queue contents."""
    value = {"tau": 0.04, "k": 3, "exclude_self": True, "symmetric": False}[field]
    options = {"tau": 0.15, "k": 1, "exclude_self": False, "symmetric": True, field: value}
    method = nnclr(plugin, **{field: value})
    bank, bank_ids = unit_rows(20, 6, 1), torch.arange(20) % 5
    method.queue.enqueue(bank, bank_ids)
    z_a, z_b = unit_rows(5, 6, 2), unit_rows(5, 6, 3)
    p_a, p_b = torch.randn(5, 6), torch.randn(5, 6)
    targets = torch.eye(5)
    ids = torch.arange(5)
    # each query's own clip holds its nearest entry: excluding it changes the support
    method.queue.items[ids] = z_a
    loss = float(method.contrastive_loss(z_a, p_a, z_b, p_b, targets, ids))
    queue = method.queue.items[: method.queue.filled].numpy()
    query_ids = ids.numpy() if options["exclude_self"] else None
    queue_ids = bank_ids.numpy()

    def direction(z, p, y) -> float:
        support = support_reference(z.numpy(), queue, queue_ids, query_ids, options["k"])
        p_unit = F.normalize(p, dim=-1).numpy()
        return soft_ce(support @ p_unit.T / options["tau"], y.numpy())

    expected = direction(z_a, p_b, targets)
    if options["symmetric"]:
        expected = (expected + direction(z_b, p_a, targets.T)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)


def check_nnclr_queue(plugin: str, field: str, tmp_path: Path) -> None:
    method = nnclr(plugin, queue_size=5)
    first, second = unit_rows(4, 6, 1), unit_rows(4, 6, 2)
    method.queue.enqueue(first, torch.arange(4))
    method.queue.enqueue(second, torch.arange(4, 8))
    items, ids = method.queue.ordered()
    assert torch.equal(items, torch.cat([first, second])[-5:])  # FIFO of 5, not 65536
    assert ids.tolist() == [3, 4, 5, 6, 7]


def check_nnclr_head(plugin: str, field: str, tmp_path: Path) -> None:
    value = {"proj_hidden": 20, "pred_hidden": 14, "out_dim": 9}[field]
    method = nnclr(plugin, **{field: value})
    z, p = method.head(torch.randn(4, 16))
    widths = {
        "proj_hidden": method.head.projector[0].out_features,
        "pred_hidden": method.head.predictor[0].out_features,
        "out_dim": z.shape[1],
    }
    assert widths[field] == value
    if field == "out_dim":
        assert p.shape[1] == 9 and method.queue.items.shape == (64, 9)


def views_of(plugin: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, the positive views ``training_step`` handed the backbone)."""
    backbone = RecordingBackbone()
    method = nnclr(plugin, backbone, **options)
    batch = make_batch(TASK, backbone, batch_size=32, seed=2)
    torch.manual_seed(0)
    method.training_step(batch, backbone)
    return batch.features, backbone.seen[32:]


def check_nnclr_views(plugin: str, field: str, tmp_path: Path) -> None:
    value = {"max_shift": 0.5, "gain_std": 2.0, "time_mask": 0.6, "freq_mask": 0.6}[field]
    x, view = views_of(plugin, **(NO_VIEWS | {field: value}))
    frames, bins = x.shape[-1], x.shape[-2]
    if field == "max_shift":
        limit = round(0.5 * frames)
        shifts = []
        for b in range(x.shape[0]):
            found = [s for s in range(-limit, limit + 1) if torch.equal(view[b], x[b].roll(s, -1))]
            assert found, f"clip {b} is not a circular shift within {limit} frames"
            shifts.append(abs(found[0]))
        assert max(shifts) > round(0.1 * frames)  # beyond the default's reach
    elif field == "gain_std":
        offsets = (view - x).flatten(1)
        assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-5)
        assert float(offsets[:, 0].std()) == pytest.approx(2.0, rel=0.25)
    else:
        axis, size = (-1, frames) if field == "time_mask" else (-2, bins)
        changed = (view != x).all(dim=-2 if axis == -1 else -1).flatten(1)
        fill = x.mean(dim=(1, 2, 3))
        masked = view.masked_select(view != x).numel() > 0
        assert masked
        widths = changed.sum(dim=1)
        for b in range(x.shape[0]):  # one contiguous band per clip, filled with the clip's mean
            where = changed[b].nonzero().flatten()
            if where.numel():
                assert int(where[-1] - where[0]) + 1 == where.numel()
                band = view[b].movedim(axis, -1)[..., where]
                assert torch.allclose(band, fill[b].expand_as(band))
        assert int(widths.max()) <= round(0.6 * size)
        assert int(widths.max()) > round(0.2 * size)


def stage_named(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def check_nnclr_stages(plugin: str, field: str, tmp_path: Path) -> None:
    """Schedule options against the stages they must produce (paper preset: 40 + 160 epochs,
    lr 1e-4, batches 512 and 128, top half of the blocks, decay 0.65)."""
    value = {
        "head_epochs": 3,
        "tune_epochs": 7,
        "head_lr": 0.02,
        "tune_lr": 0.03,
        "head_batch_size": 8,
        "tune_batch_size": 6,
        "tune_blocks": 2,
        "layer_decay": 0.3,
    }[field]
    backbone = TinyBackbone()
    stages = nnclr(plugin, backbone, **{field: value}).stages(backbone, RunSettings())
    stage = stage_named(stages, "head" if field.startswith("head") else "top")
    attribute = {
        "epochs": "epochs",
        "lr": "lr",
        "batch_size": "batch_size",
        "blocks": "backbone_blocks",
        "decay": "layer_decay",
    }[field.split("_", 1)[1]]
    assert getattr(stage, attribute) == value
    other = stage_named(stages, "top" if stage.name == "head" else "head")
    assert (other.epochs, other.lr) == ((160, 1e-4) if other.name == "top" else (40, 1e-4))


def check_nnclr_warmup(plugin: str, field: str, tmp_path: Path) -> None:
    backbone = AudioMAE(AudioMAE.Config(size="tiny"))
    options = {"mae_warmup_epochs": 3, "mae_warmup_lr": 0.05, "mae_mask_ratio": 0.3}
    base = {} if field == "mae_warmup_epochs" else {"mae_warmup_epochs": 1}
    method = nnclr(plugin, backbone, **(base | {field: options[field]}))
    warmup = stage_named(method.stages(backbone, RunSettings(lr=0.001)), "mae-warmup")
    if field == "mae_warmup_epochs":
        assert warmup.epochs == 3
    elif field == "mae_warmup_lr":
        assert warmup.lr == 0.05
    else:
        method.begin_stage(warmup)
        hidden, patches = hidden_patches(method.mae, backbone)
        assert hidden == patches - int(patches * (1 - 0.3))


def check_nnclr_mix(plugin: str, field: str, tmp_path: Path) -> None:
    """alpha (and smoothing): the mixed anchors and virtual labels against equations 2-3."""
    options = {"alpha": 1.0, "smoothing": 0.1} | {field: {"alpha": 0.05, "smoothing": 0.5}[field]}
    method = nnclr(plugin, **{field: options[field]})
    x = torch.randn(6, 1, 16, 30, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(9)
    mixed, labels, lam = method.mix(x, -1)
    torch.manual_seed(9)
    perm = torch.randperm(6)
    alpha = torch.tensor(options["alpha"])
    expected_lam = float(torch.distributions.Beta(alpha, alpha).sample())
    eye = np.eye(6)
    expected_labels = expected_lam * eye + (1 - expected_lam) * eye[perm.numpy()]
    if plugin == "nnclr-mixup-ls":
        eps = options["smoothing"]
        expected_labels = (1 - eps) * expected_labels + eps / 6
        expected = expected_lam * x + (1 - expected_lam) * x[perm]
    else:
        side = math.sqrt(1 - expected_lam)
        t0 = int(torch.randint(30, ()))
        f_rows = slice(0, 16)
        if plugin == "nnclr-tfcutmix":
            f0 = int(torch.randint(16, ()))
            f_rows = slice(f0, f0 + round(16 * side))
        expected = x.clone()
        t_cols = slice(t0, t0 + round(30 * side))
        expected[:, :, f_rows, t_cols] = x[perm][:, :, f_rows, t_cols]
    assert lam == pytest.approx(expected_lam, abs=1e-7)
    assert torch.allclose(mixed, expected)
    assert np.allclose(labels.numpy(), expected_labels, atol=1e-6)


NNCLR_CHECKS: dict[str, Callable] = {
    **dict.fromkeys(("tau", "k", "exclude_self", "symmetric"), check_nnclr_loss),
    "queue_size": check_nnclr_queue,
    **dict.fromkeys(("proj_hidden", "pred_hidden", "out_dim"), check_nnclr_head),
    **dict.fromkeys(("max_shift", "gain_std", "time_mask", "freq_mask"), check_nnclr_views),
    **dict.fromkeys(
        (
            "head_epochs",
            "tune_epochs",
            "head_lr",
            "tune_lr",
            "head_batch_size",
            "tune_batch_size",
            "tune_blocks",
            "layer_decay",
        ),
        check_nnclr_stages,
    ),
    **dict.fromkeys(("mae_warmup_epochs", "mae_warmup_lr", "mae_mask_ratio"), check_nnclr_warmup),
}


# -- augmentations ----------------------------------------------------------------


def check_specaugment(plugin: str, field: str, tmp_path: Path) -> None:
    """Against torchaudio's iid masking, applied ``count`` times per axis (same draw order)."""
    options = {"freq_mask": 48, "time_mask": 24, "freq_masks": 1, "time_masks": 1}
    options["mask_value"] = 0.0
    options[field] = {
        "freq_mask": 6,
        "time_mask": 5,
        "freq_masks": 3,
        "time_masks": 2,
        "mask_value": -7.5,
    }[field]
    backbone = TinyBackbone()
    batch = make_batch(TASK, backbone, batch_size=8, seed=0)
    out = apply_augmentation(
        component("augmentation", plugin), TASK, batch, seed=3, **{field: options[field]}
    )
    torch.manual_seed(3)
    expected = batch.features
    freq = torchaudio.transforms.FrequencyMasking(min(options["freq_mask"], 16), iid_masks=True)
    time = torchaudio.transforms.TimeMasking(options["time_mask"], iid_masks=True)
    for _ in range(options["freq_masks"]):
        expected = freq(expected, options["mask_value"])
    for _ in range(options["time_masks"]):
        expected = time(expected, options["mask_value"])
    assert torch.equal(out, expected)


def check_random_window(plugin: str, field: str, tmp_path: Path) -> None:
    batch = make_batch(TASK, batch_size=5, seconds=2.0, seed=0)
    out = apply_augmentation(component("augmentation", plugin), TASK, batch, seed=4, seconds=0.25)
    torch.manual_seed(4)
    offsets = torch.randint(0, 16000 - 2000 + 1, (5,))
    expected = torch.stack([batch.wave[b, o : o + 2000] for b, o in enumerate(offsets.tolist())])
    assert torch.equal(out, expected)


def check_freq_mixstyle(plugin: str, field: str, tmp_path: Path) -> None:
    """Freq-MixStyle re-implemented per example and bin in float64, over 24 seeds."""
    options = {"p": 0.4, "alpha": 0.4, "eps": 1e-6}
    options[field] = {"p": 0.95, "alpha": 6.0, "eps": 4.0}[field]
    backbone = TinyBackbone()
    batch = make_batch(TASK, backbone, batch_size=6, seed=0)
    x = batch.features
    mixed_seeds = 0
    for seed in range(24):
        out = apply_augmentation(
            component("augmentation", plugin), TASK, batch, seed=seed, **{field: options[field]}
        )
        torch.manual_seed(seed)
        if not float(torch.rand(())) < options["p"]:
            assert torch.equal(out, x)
            continue
        mixed_seeds += 1
        alpha = torch.tensor(options["alpha"])
        lam = torch.distributions.Beta(alpha, alpha).sample((6,)).double().numpy()
        perm = torch.randperm(6).numpy()
        xs = x.double().numpy()
        mean = xs.mean(axis=(1, 3), keepdims=True)
        std = np.sqrt(xs.var(axis=(1, 3), ddof=1, keepdims=True) + options["eps"])
        w = lam[:, None, None, None]
        expected = (xs - mean) / std * (w * std + (1 - w) * std[perm]) + (
            w * mean + (1 - w) * mean[perm]
        )
        assert np.allclose(out.double().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert mixed_seeds >= 4


def reference_bank(raw: torch.Tensor, length: int, beta: float) -> np.ndarray:
    """Symmetric scipy Kaiser window over the first ``length`` samples, unit energy."""
    cut = raw[:, :length].double().numpy() * windows.kaiser(length, beta)
    return cut / np.linalg.norm(cut, axis=1, keepdims=True)


def built_aug(plugin: str, **options):
    aug = component("augmentation", plugin)(component("augmentation", plugin).Config(**options))
    aug.setup(TASK)
    aug.train()
    return aug


def check_convolution_choice(aug, batch, p: float, seed: int) -> None:
    """Clips of device ``a`` convolved with probability ``p``: which, and with what, against
    numpy's full linear convolution cut to the clip length."""
    torch.manual_seed(seed)
    out = aug(batch.wave, batch)
    torch.manual_seed(seed)
    chosen = (torch.rand(batch.wave.shape[0]) < p) & (batch.device == 0)
    picked = chosen.nonzero().flatten()
    which = torch.randint(len(aug.bank), (picked.numel(),))
    assert picked.numel() >= 1
    wave = batch.wave.double().numpy()
    irs = aug.irs.double().numpy()
    expected = wave.copy()
    for row, ir in zip(picked.tolist(), which.tolist(), strict=True):
        expected[row] = np.convolve(wave[row], irs[ir])[: wave.shape[1]]
    assert np.allclose(out.double().numpy(), expected, atol=1e-5)


MULTIDIR_ANGLES = (0, 45, 90, 300, 350)
MULTIDIR_DISTANCES = (50, 125)


def multidir_folder(root: Path) -> Path:
    """2 microphones x 5 angles x 2 distances of random decaying 600-sample responses, in the
    collection's layout, float WAV at the task's rate (read back exactly, no resampling)."""
    gen = np.random.default_rng(0)
    for mic, distance, angle in itertools.product(
        ("MicA", "MicB"), MULTIDIR_DISTANCES, MULTIDIR_ANGLES
    ):
        folder = root / f"{mic}_{distance}cm_Normalised_IRs" / "IRs"
        folder.mkdir(parents=True, exist_ok=True)
        ir = gen.standard_normal(600) * np.exp(-np.arange(600) / 80.0)
        sf.write(
            folder / f"{mic}_{distance}cm_{angle}Deg.wav", ir, TASK.sample_rate, subtype="FLOAT"
        )
    return root


def raw_multidir(root: Path, aug) -> torch.Tensor:
    """The folder's responses in the bank's order (by the ``source`` of each entry)."""
    return torch.stack(
        [torch.from_numpy(sf.read(m["source"], dtype="float64")[0]) for m in aug.bank.meta]
    )


def check_ir_augmentation(plugin: str, field: str, tmp_path: Path) -> None:
    if plugin == "multidir":
        base = {"path": str(multidir_folder(tmp_path))}
    else:  # vintage: full window from the first sample, for a plain reference
        base = {"window": "full", "align": "start", "length": 200}
    if field == "p":
        aug = built_aug(plugin, **(base | {"p": 0.95}))
        batch = make_batch(TASK, batch_size=12, seconds=0.25, seed=1)
        batch.device = torch.zeros(12, dtype=torch.long)
        check_convolution_choice(aug, batch, 0.95, seed=2)
        return
    value = {"length": 300, "beta": 7.0}[field]
    aug = built_aug(plugin, **(base | {field: value}))
    if plugin == "multidir":
        raw = raw_multidir(tmp_path, aug)
    else:
        raw = synthetic_vintage(TASK.sample_rate).irs
    length = value if field == "length" else base.get("length", 1024)
    beta = value if field == "beta" else 2.0
    reference = reference_bank(
        torch.nn.functional.pad(raw, (0, max(0, length - raw.shape[1]))), length, beta
    )
    assert aug.irs.shape == (raw.shape[0], length)
    assert np.allclose(aug.irs.double().numpy(), reference, atol=1e-5)


def check_multidir_filters(plugin: str, field: str, tmp_path: Path) -> None:
    """The folder's 2 microphones x angles (0, 45, 90, 300, 350) x distances (50, 125 cm)."""
    value = {"angle_min": 300.0, "angle_max": 45.0, "distances": [125.0]}[field]
    aug = built_aug(plugin, path=str(multidir_folder(tmp_path)), **{field: value})
    angles = {m["angle"] for m in aug.bank.meta}
    distances = {m["distance"] for m in aug.bank.meta}
    expected = {
        "angle_min": ({300.0, 350.0}, {50.0, 125.0}, 2 * 2 * 2),
        "angle_max": ({0.0, 45.0}, {50.0, 125.0}, 2 * 2 * 2),
        "distances": ({0.0, 45.0, 90.0, 300.0, 350.0}, {125.0}, 2 * 5),
    }[field]
    assert (angles, distances, len(aug.bank)) == expected


def check_dirgen(plugin: str, field: str, tmp_path: Path) -> None:
    """Conditions end in ``(d cos(angle), d sin(angle))`` with d in metres."""
    model = tmp_path / "dirgen.pt"
    torch.manual_seed(0)
    save_generator(model, DirGenerator().eval(), 16000, {"test_mse": 0.0})
    value = {"p": 0.3, "angle": 90.0, "distance": 35.0, "distances": [7.0]}[field]
    aug = built_aug(plugin, model=str(model), **{field: value})
    batch = make_batch(TASK, batch_size=16, seconds=0.25, seed=1)
    torch.manual_seed(6)
    out = aug(batch.wave, batch)
    if field == "p":
        torch.manual_seed(6)
        chosen = torch.rand(16) < 0.3
        assert torch.equal(aug.last_chosen, chosen) and 0 < int(chosen.sum()) < 16
        assert torch.equal(out[~chosen], batch.wave[~chosen])
        return
    xy = aug.last_conditions[:, -2:].double()
    metres = xy.norm(dim=1)
    if field == "angle":
        degrees = torch.rad2deg(torch.atan2(xy[:, 1], xy[:, 0]))
        assert torch.allclose(degrees, torch.full_like(degrees, 90.0), atol=1e-4)
    else:
        expected = 0.35 if field == "distance" else 0.07
        assert torch.allclose(metres, torch.full_like(metres, expected), atol=1e-6)


# -- the table --------------------------------------------------------------------


def case_table() -> dict[str, Callable[[str, str, Path], None]]:
    table: dict[str, Callable[[str, str, Path], None]] = {
        "ce.label_smoothing": check_head_cross_entropy,
        **{f"icl.{f}": check_head_cross_entropy for f in (*ICL_VALUES, "normalize")},
        "mixup-ls.alpha": check_mixup_ls,
        "mixup-ls.smoothing": check_mixup_ls,
        **{
            f"mae.{f}": check_mae
            for f in (
                "mask_ratio",
                "norm_pix_loss",
                "decoder_dim",
                "decoder_depth",
                "decoder_heads",
                "decoder_mode",
            )
        },
        "nnclr-mixup-ls.smoothing": check_nnclr_mix,
        **{f"{p}.alpha": check_nnclr_mix for p in NNCLR_FAMILY[1:]},
        **{
            f"specaugment.{f}": check_specaugment
            for f in ("freq_mask", "time_mask", "freq_masks", "time_masks", "mask_value")
        },
        "random-window.seconds": check_random_window,
        **{f"freq-mixstyle.{f}": check_freq_mixstyle for f in ("p", "alpha", "eps")},
        **{
            f"{p}.{f}": check_ir_augmentation
            for p in ("multidir", "vintage")
            for f in ("p", "length", "beta")
        },
        **{
            f"multidir.{f}": check_multidir_filters for f in ("angle_min", "angle_max", "distances")
        },
        **{f"dirgen.{f}": check_dirgen for f in ("p", "angle", "distance", "distances")},
    }
    for plugin in NNCLR_FAMILY:
        table |= {f"{plugin}.{field}": check for field, check in NNCLR_CHECKS.items()}
    return table


CASES = case_table()


def test_every_numeric_option_has_a_case():
    options = set(numeric_options())
    assert len(options) > 100
    missing = sorted(options - CASES.keys() - EXEMPT.keys())
    assert not missing, f"numeric options without a non-default reference case: {missing}"
    stale = sorted((CASES.keys() | EXEMPT.keys()) - options)
    assert not stale, f"cases for options that do not exist: {stale}"


@pytest.mark.parametrize("key", sorted(CASES))
def test_option_at_a_non_default_value_matches_its_reference(key: str, tmp_path: Path):
    plugin, field = key.split(".", 1)
    CASES[key](plugin, field, tmp_path)
