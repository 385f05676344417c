"""NNCLR contrastive tuning with unsupervised mixing: uaMix-MAE and its ablations.

uaMix-MAE (Section 3 of the seed paper) tunes a pretrained encoder with the NNCLR loss
(Dwibedi et al., ICCV 2021, equation 1) and unsupervised T-CutMix (equations 2-4), in two
stages (progressive retraining). Four methods share this code:

- ``nnclr``: No Mixing (Table 3);
- ``nnclr-tcutmix``: uaMix-MAE, a time band of another clip over all frequencies;
- ``nnclr-mixup-ls``: MixUp of whole inputs with label-smoothed virtual labels;
- ``nnclr-tfcutmix``: a CutMix box over time and frequency (Figure 5).

One training step, for features ``x`` ``[B, 1, F, T]`` or ``[B, 1, T, F]`` (the backbone's
``time_axis`` says which):

1. Two views ``a`` and ``b`` of ``x`` by :func:`augment_view` (random circular time shift,
   gain offset, one time mask and one frequency mask per clip, drawn independently per view).
2. The anchor view is mixed: ``m = mix(a)`` with virtual labels ``Y`` ``[B, B]``, row ``i`` =
   ``lam * v_i + (1 - lam) * v_perm(i)`` (equation 3; ``Y = I`` without mixing).
3. Head ``h``: backbone clip embedding -> projector -> ``z`` (normalized); ``z`` -> predictor
   -> ``p`` (normalized). Sizes follow MAE-CT (Lehner et al. 2023, the paper's reference
   [19]): projector Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN with ``proj_hidden`` = 2048 and
   ``out_dim`` = 256; predictor Linear-BN-ReLU-Linear with ``pred_hidden`` = 4096.
4. Support ``s = NN(z, Q, k)`` from the FIFO queue ``Q`` (no gradient): the entry with the
   largest cosine similarity, or for ``k > 1`` the re-normalized mean of the ``k`` most
   similar entries. Entries of the same clip (from earlier epochs) are skipped when
   ``exclude_self``; where no entry qualifies (empty queue) the support is ``z`` itself.
5. Loss (equation 4, a soft cross-entropy; equation 1 when ``Y = I``)::

       L(m -> b) = -mean_i sum_l Y[i, l] log softmax_l(s(m)_i . p(b)_l / tau)

   With ``symmetric`` (default, as NNCLR and MAE-CT), the views swap roles too:
   ``L = (L(m -> b) + L(b -> m)) / 2`` where ``L(b -> m)`` uses the support of ``b``, the
   predictions of the mixtures and the targets ``Y^T`` (row ``l``: how much of clip ``l``
   each mixture holds). Since ``lam`` and the permutation are drawn once per batch, the rows
   of ``Y^T`` sum to one. The queue never carries gradient, so only ``L(b -> m)`` trains the
   encoder on the mixtures themselves.
6. The normalized projections of the unmixed view ``b`` enter the queue after the lookups
   (MoCo-style FIFO, wrap-around, no entry of a batch dropped).

Mixing (equation 2): ``m = M * a + (1 - M) * a[perm]``, ``lam ~ Beta(alpha, alpha)``, one
``lam``, band and permutation per batch (as in CutMix). T-CutMix replaces the band
``[s_t, s_t + w_t)`` over all frequencies with ``w_t = round(T * sqrt(1 - lam))`` and
``s_t ~ U{0, ..., T - 1}``, clipped at ``T``. The virtual labels use the sampled ``lam``, as
equation 3 writes them (``label_weight = "lambda"``, the default). ``label_weight = "area"``
(not the paper's) recomputes the weight from the band actually replaced,
``lam = 1 - (clipped width) / T`` as CutMix does for its boxes: with the full frequency span an
unclipped band replaces ``sqrt(1 - lam)`` of the input, not ``1 - lam``, so the two differ
even without clipping.

Progressive retraining (:meth:`Nnclr.stages`): stage ``head`` trains the head with the whole
backbone frozen; stage ``top`` trains the top half of the backbone's blocks (and what lies
above them) plus the head with layer-wise learning-rate decay. ``preset = "paper"`` (the
default) sets the paper's schedule (40 epochs at lr 1e-4 and batch 512, then 160 epochs at
lr 1e-4 and batch 128, Section 4), whatever the run's lr and batch size;
``preset = "small"`` (not the paper's) splits the run's epochs 1:4 between the stages and uses
the run's lr and batch size. An explicit ``--epochs N`` (``run.epochs`` other than
:class:`~harness.api.RunSettings`' default of 10, see :func:`epochs_given`) is the length of
the run in every preset: ``paper`` then scales its 40 + 160 to N by the same 1:4 split
(:func:`split_epochs`: head ``max(1, round(N / 5))``, top the rest; N = 1 gives 1 + 0, N = 5
gives 1 + 4), keeps its lr and batch sizes and says so in the stage's note. Any
``head_*``/``tune_*`` option set explicitly overrides the preset and the split.

MAE warm-up: a randomly initialised encoder (no ``backbone.checkpoint``) that offers the
masked-encoder contract of :mod:`harness_plugins.methods.mae` (AudioMAE does) is first
pretrained with that method's decoder and masked-patch loss on the same unlabeled training
clips, in a stage ``mae-warmup`` of ``mae_warmup_epochs`` epochs (``small`` preset: 2;
``paper``: 0, since the paper starts from a published checkpoint; 0 disables it) that trains
the whole encoder and the decoder; the NNCLR stages follow. The contrastive head is then
initialised on a forked random stream, so the warm-up draws exactly the random numbers a
``--method mae`` run with the same seed, epochs, lr and batch size draws, and ends with the
same encoder: that run is uaMix-MAE's MAE-pretrained baseline. The decoder is kept in
``method.pt`` under ``mae.``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    Batch,
    Domain,
    MaskedBackbone,
    Method,
    RunSettings,
    Stage,
    StepOutput,
    Task,
    UsageError,
    at_least,
    between,
    domain_map,
    non_negative,
    positive,
    unit,
)
from harness_plugins.methods._common import (
    mixup,
    sample_lambda,
    smooth_labels,
    soft_cross_entropy,
)
from harness_plugins.methods._masked_autoencoder import MaskedAutoencoder

__all__ = [
    "MAE_STAGE",
    "Box",
    "CutMixConfig",
    "FifoQueue",
    "MixConfig",
    "MixupLsConfig",
    "Nnclr",
    "NnclrConfig",
    "NnclrMixupLs",
    "NnclrTCutMix",
    "NnclrTfCutMix",
    "ViewSettings",
    "augment_view",
    "band_width",
    "box_mask",
    "nnclr_logits",
    "time_band",
    "time_freq_box",
    "topk_neighbours",
    "virtual_labels",
]


# -- mixing: boxes, masks and virtual labels ------------------------------------


@dataclass(frozen=True)
class Box:
    """The region ``[t0, t1) x [f0, f1)`` (frames x bins) of the anchor replaced by another clip."""

    t0: int
    t1: int
    f0: int
    f1: int

    def kept_fraction(self, frames: int, bins: int) -> float:
        """The mixing weight of the anchor: the share of the input outside the box."""
        return 1.0 - (self.t1 - self.t0) * (self.f1 - self.f0) / (frames * bins)


def time_band(frames: int, bins: int, lam: float) -> Box:
    """T-CutMix's box ``(s_t, 0, w_t, F)``, ``w_t = round(T sqrt(1 - lam))``, ``s_t ~ U{0..T-1}``.

    The band is clipped at the last frame.
    """
    start = int(torch.randint(frames, ()))
    return Box(start, min(start + band_width(frames, lam), frames), 0, bins)


def band_width(length: int, lam: float) -> int:
    """The unclipped side of a CutMix box along an axis: ``round(length * sqrt(1 - lam))``."""
    return round(length * math.sqrt(1.0 - lam))


def time_freq_box(frames: int, bins: int, lam: float) -> Box:
    """TF-CutMix's box: sides ``T sqrt(1 - lam)`` and ``F sqrt(1 - lam)``, uniform corner.

    The box is clipped at the last frame and bin.
    """
    width, height = band_width(frames, lam), band_width(bins, lam)
    t0, f0 = int(torch.randint(frames, ())), int(torch.randint(bins, ()))
    return Box(t0, min(t0 + width, frames), f0, min(f0 + height, bins))


def box_mask(
    shape: torch.Size, time_axis: int, box: Box, device: torch.device | None = None
) -> Tensor:
    """Boolean mask broadcastable to ``shape`` (``[..., F, T]`` or ``[..., T, F]``).

    True inside the box: it is ``1 - M`` of equation 2.
    """
    frames, bins = shape[time_axis], shape[other_axis(time_axis)]
    in_time = (torch.arange(frames, device=device) >= box.t0) & (
        torch.arange(frames, device=device) < box.t1
    )
    in_freq = (torch.arange(bins, device=device) >= box.f0) & (
        torch.arange(bins, device=device) < box.f1
    )
    mask = (
        in_freq[:, None] & in_time[None, :]
        if time_axis == -1
        else in_time[:, None] & in_freq[None, :]
    )
    return mask.reshape((1,) * (len(shape) - 2) + tuple(mask.shape))


def virtual_labels(perm: Tensor, lam: float, smoothing: float = 0.0) -> Tensor:
    """Equation 3 for the whole batch: row ``i`` is ``lam * v_i + (1 - lam) * v_perm(i)``.

    ``smoothing`` > 0 applies label smoothing over the batch: ``(1 - eps) * y + eps / B``.
    """
    size = perm.shape[0]
    eye = torch.eye(size, device=perm.device)
    labels = lam * eye + (1.0 - lam) * eye[perm]
    return smooth_labels(labels, smoothing) if smoothing else labels


def other_axis(time_axis: int) -> int:
    """The frequency axis: the other one of the last two."""
    if time_axis not in (-1, -2):
        raise UsageError(f"backbone time_axis must be -1 or -2, got {time_axis}")
    return -2 if time_axis == -1 else -1


# -- views ----------------------------------------------------------------------


@dataclass(frozen=True)
class ViewSettings:
    """Random feature-level transforms making a positive view (drawn per clip)."""

    max_shift: float = 0.1
    """Circular time shift by up to this fraction of the frames, either direction."""
    gain_std: float = 0.1
    """Standard deviation of a constant offset added to all features (a gain in log units)."""
    time_mask: float = 0.2
    """Largest time mask, as a fraction of the frames (one mask per clip)."""
    freq_mask: float = 0.2
    """Largest frequency mask, as a fraction of the bins (one mask per clip)."""


def augment_view(x: Tensor, time_axis: int, settings: ViewSettings) -> Tensor:
    """One random view of features ``[B, ..., F, T]`` or ``[B, ..., T, F]``.

    Per clip: circular time shift, gain offset, then one time band and one frequency band
    (uniform widths up to the limits, uniform positions) set to the clip's mean value.
    """
    frames, bins = x.shape[time_axis], x.shape[other_axis(time_axis)]
    size, device = x.shape[0], x.device
    extra = (1,) * (x.ndim - 1)
    x = shift_time(
        x, time_axis, random_ints(round(settings.max_shift * frames), size, device, signed=True)
    )
    x = x + settings.gain_std * torch.randn(size, *extra, device=device, dtype=x.dtype)
    in_time = random_bands(frames, round(settings.time_mask * frames), size, device)
    in_freq = random_bands(bins, round(settings.freq_mask * bins), size, device)
    if time_axis == -1:
        masked = in_freq[:, :, None] | in_time[:, None, :]
    else:
        masked = in_time[:, :, None] | in_freq[:, None, :]
    masked = masked.reshape(size, *extra[:-2], *masked.shape[1:])
    fill = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return torch.where(masked, fill, x)


def random_ints(limit: int, size: int, device: torch.device, signed: bool = False) -> Tensor:
    """``size`` integers uniform in ``[0, limit]`` (``[-limit, limit]`` when signed)."""
    low = -limit if signed else 0
    return torch.randint(low, limit + 1, (size,), device=device)


def shift_time(x: Tensor, time_axis: int, shifts: Tensor) -> Tensor:
    """Roll each clip ``b`` by ``shifts[b]`` frames along the time axis."""
    frames = x.shape[time_axis]
    source = (torch.arange(frames, device=x.device)[None, :] - shifts[:, None]) % frames
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[time_axis] = frames
    return torch.gather(x, time_axis % x.ndim, source.reshape(shape).expand_as(x))


def random_bands(length: int, max_width: int, size: int, device: torch.device) -> Tensor:
    """``[size, length]`` booleans, True inside one band per row (width ``U{0..max_width}``)."""
    widths = random_ints(min(max_width, length), size, device)
    starts = (torch.rand(size, device=device) * (length - widths + 1)).floor().long()
    positions = torch.arange(length, device=device)[None, :]
    return (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])


# -- queue and nearest neighbours -----------------------------------------------


def topk_neighbours(query: Tensor, bank: Tensor, k: int) -> Tensor:
    """Indices ``[B, k]`` of the ``k`` rows of ``bank`` with the largest dot product per query.

    One matrix product and ``topk``; for unit vectors the largest dot product is the largest
    cosine similarity and the smallest euclidean distance.
    """
    return (query @ bank.T).topk(k, dim=1).indices


class FifoQueue(nn.Module):
    """A first-in first-out queue of unit vectors with the clip ids they came from.

    Slots fill from 0; once full, each enqueue overwrites the oldest entries (wrap-around).
    A batch is always enqueued whole. The contents are training state and are not saved.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("items", torch.zeros(size, dim), persistent=False)
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long), persistent=False)
        self.pointer = 0
        """Slot the next entry goes to."""
        self.filled = 0

    @torch.no_grad()
    def enqueue(self, vectors: Tensor, ids: Tensor) -> None:
        count = vectors.shape[0]
        if count > self.size:
            raise UsageError(
                f"method.queue_size ({self.size}) is smaller than the batch size ({count}); "
                "a batch must fit in the queue"
            )
        slots = (self.pointer + torch.arange(count, device=self.items.device)) % self.size
        self.items[slots] = vectors.detach().to(self.items.dtype)
        self.ids[slots] = ids.to(self.ids.device)
        self.pointer = (self.pointer + count) % self.size
        self.filled = min(self.filled + count, self.size)

    def ordered(self) -> tuple[Tensor, Tensor]:
        """Entries and ids, oldest first."""
        if self.filled < self.size:
            return self.items[: self.filled], self.ids[: self.filled]
        order = (self.pointer + torch.arange(self.size, device=self.items.device)) % self.size
        return self.items[order], self.ids[order]

    @torch.no_grad()
    def neighbours(self, query: Tensor, k: int = 1, query_ids: Tensor | None = None) -> Tensor:
        """``NN(z, Q, k)`` for unit queries ``[B, D]``: the nearest entry, or the re-normalized
        mean of the ``k`` nearest; entries with the query's own id are skipped (when
        ``query_ids`` is given), and a query with no eligible entry is its own support."""
        if self.filled == 0:
            return query
        bank, bank_ids = self.items[: self.filled], self.ids[: self.filled]
        similarity = query.to(bank.dtype) @ bank.T
        if query_ids is not None:
            exclude_own_entries(similarity, bank_ids, query_ids.to(bank_ids.device))
        values, index = similarity.topk(min(k, self.filled), dim=1)
        eligible = torch.isfinite(values)
        chosen = (bank[index] * eligible[..., None]).sum(1)
        support = chosen if k == 1 else F.normalize(chosen, dim=-1)
        has_support = eligible.any(1, keepdim=True)
        return torch.where(has_support, support, query.to(bank.dtype)).to(query.dtype)


def exclude_own_entries(similarity: Tensor, bank_ids: Tensor, query_ids: Tensor) -> None:
    """Set ``similarity[b, j]`` to -inf in place where entry ``j`` comes from query ``b``'s clip.

    Only the few columns holding clips of this batch are compared, not the whole queue.
    """
    columns = torch.isin(bank_ids, query_ids).nonzero().flatten()
    if columns.numel() == 0:
        return
    rows, which = (bank_ids[columns][None, :] == query_ids[:, None]).nonzero(as_tuple=True)
    similarity[rows, columns[which]] = -math.inf


def nnclr_logits(support: Tensor, predicted: Tensor, tau: float) -> Tensor:
    """``[B, B]`` logits ``support_i . normalize(predicted)_l / tau`` of equations 1 and 4."""
    return support @ F.normalize(predicted, dim=-1).T / tau


# -- the head -------------------------------------------------------------------


def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """NNCLR's projection MLP: three linear layers, batch norm after each."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=False),
        nn.BatchNorm1d(out_dim),
    )


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """NNCLR's prediction MLP: two linear layers with batch norm between them."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, dim),
    )


class ContrastiveHead(nn.Module):
    """``h``: clip embedding -> (normalized projection ``z``, prediction ``p``)."""

    def __init__(self, in_dim: int, proj_hidden: int, pred_hidden: int, out_dim: int) -> None:
        super().__init__()
        self.projector = projector(in_dim, proj_hidden, out_dim)
        self.predictor = predictor(out_dim, pred_hidden)

    def forward(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        projected = self.projector(embedding)
        return F.normalize(projected, dim=-1), self.predictor(projected)


# -- the methods ----------------------------------------------------------------

MAE_STAGE = "mae-warmup"
"""Name of the MAE pretraining stage run before the NNCLR stages on a random encoder."""

PRESETS: dict[str, dict[str, float | int | None]] = {
    "paper": {
        "head_epochs": 40,
        "tune_epochs": 160,
        "head_lr": 1e-4,
        "tune_lr": 1e-4,
        "head_batch_size": 512,
        "tune_batch_size": 128,
        "mae_warmup_epochs": 0,
        "mae_warmup_lr": None,
    },
    # None: derived from the run settings (epochs split 1:4 as in the paper's 40:160, see
    # split_epochs).
    "small": dict.fromkeys(
        ("head_epochs", "tune_epochs", "head_lr", "tune_lr", "head_batch_size", "tune_batch_size")
    )
    | {"mae_warmup_epochs": 2, "mae_warmup_lr": None},
}

DEFAULT_RUN_EPOCHS: int = RunSettings().epochs
"""``run.epochs`` when neither ``--epochs`` nor a config sets it (10)."""


def epochs_given(run: RunSettings) -> bool:
    """Whether the run's epochs were chosen (``--epochs N``, ``run.epochs``): the method sees
    only the value, so an epoch count equal to the default (10) counts as not given."""
    return run.epochs != DEFAULT_RUN_EPOCHS


def split_epochs(epochs: int) -> tuple[int, int]:
    """The paper's 40:160 split of ``epochs``: head ``max(1, round(epochs / 5))``, top the rest
    (1 -> 1 + 0, 2 -> 1 + 1, 3 -> 1 + 2, 5 -> 1 + 4, 10 -> 2 + 8, 200 -> 40 + 160)."""
    head = max(1, round(epochs / 5))
    return head, max(0, epochs - head)


@dataclass
class NnclrConfig:
    """Options of the NNCLR methods; ``None`` schedule options come from ``preset``."""

    tau: float = 0.15
    """Temperature of equation 1."""
    k: int = 1
    """Nearest neighbours per lookup; k > 1 uses the re-normalized mean of the k nearest."""
    queue_size: int = 65536
    """Entries of the FIFO queue (at least the batch size)."""
    exclude_self: bool = False
    """Skip queue entries of the same clip (from earlier epochs) in the lookup (not in the
    paper: equation 1's ``NN(z_i, Q, k)`` searches the whole queue)."""
    symmetric: bool = True
    """Average the loss over both view orders (see the module docstring)."""
    proj_hidden: int = 2048
    """Hidden width of the projector (MAE-CT's ViT-B value)."""
    pred_hidden: int = 4096
    """Hidden width of the predictor."""
    out_dim: int = 256
    """Width of the contrastive space (projections, predictions and queue entries)."""
    max_shift: float = 0.1
    """Views: circular time shift of up to this fraction of the frames."""
    gain_std: float = 0.1
    """Views: standard deviation of a per-clip offset added to the features."""
    time_mask: float = 0.2
    """Views: largest time mask as a fraction of the frames."""
    freq_mask: float = 0.2
    """Views: largest frequency mask as a fraction of the bins."""
    preset: Literal["small", "paper"] = "paper"
    """Schedule: ``paper`` = 40 epochs (lr 1e-4, batch 512) then 160 (lr 1e-4, batch 128), an
    explicit ``--epochs N`` split 1:4 instead; ``small`` = the run's epochs split 1:4, the
    run's lr and batch size."""
    head_epochs: int | None = None
    """Stage 1 epochs (0 skips the stage; None: from the preset); likewise the options below."""
    tune_epochs: int | None = None
    head_lr: float | None = None
    tune_lr: float | None = None
    head_batch_size: int | None = None
    tune_batch_size: int | None = None
    tune_blocks: int | None = None
    """Backbone blocks retrained in stage 2 (None: the top half)."""
    layer_decay: float = 0.65
    """Layer-wise learning-rate decay of stage 2."""
    mae_warmup_epochs: int | None = None
    """MAE pretraining epochs before the NNCLR stages when the encoder is randomly initialised
    (no ``backbone.checkpoint``) and supports it; 0 disables; None: from the preset."""
    mae_warmup_lr: float | None = None
    """Learning rate of the MAE warm-up (None: the run's lr); its batch size is the run's."""
    mae_mask_ratio: float = 0.8
    """Share of patches hidden from the encoder in the MAE warm-up (AudioMAE: 0.8)."""

    domains = domain_map(
        tau=positive("Temperature of the contrastive loss."),
        k=at_least(1, "Nearest neighbours per lookup."),
        queue_size=at_least(1, "Entries of the FIFO queue (at least the batch size)."),
        proj_hidden=at_least(1, "Hidden width of the projector."),
        pred_hidden=at_least(1, "Hidden width of the predictor."),
        out_dim=at_least(1, "Width of the contrastive space."),
        max_shift=unit("Views: largest circular time shift, as a fraction of the frames."),
        gain_std=non_negative("Views: std of a per-clip offset added to the features."),
        time_mask=unit("Views: largest time mask, as a fraction of the frames."),
        freq_mask=unit("Views: largest frequency mask, as a fraction of the bins."),
        head_epochs=non_negative("Stage 1 epochs (0 skips it; None: from the preset)."),
        tune_epochs=non_negative("Stage 2 epochs (0 skips it; None: from the preset)."),
        head_lr=Domain(gt=0, le=10, help="Stage 1 learning rate (None: from the preset)."),
        tune_lr=Domain(gt=0, le=10, help="Stage 2 learning rate (None: from the preset)."),
        head_batch_size=at_least(1, "Stage 1 batch size (None: from the preset)."),
        tune_batch_size=at_least(1, "Stage 2 batch size (None: from the preset)."),
        tune_blocks=non_negative("Backbone blocks retrained in stage 2 (None: the top half)."),
        layer_decay=Domain(gt=0, le=1, help="Layer-wise learning-rate decay of stage 2."),
        mae_warmup_epochs=non_negative("MAE warm-up epochs before the NNCLR stages (0: none)."),
        mae_warmup_lr=Domain(gt=0, le=10, help="MAE warm-up learning rate (None: the run's)."),
        mae_mask_ratio=Domain(gt=0, lt=1, help="Share of patches hidden in the MAE warm-up."),
    )

    def __post_init__(self) -> None:
        positive = ("tau", "k", "queue_size", "proj_hidden", "pred_hidden", "out_dim")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_shift", "time_mask", "freq_mask"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.gain_std < 0:
            raise ValueError(f"gain_std must be non-negative, got {self.gain_std}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        for name in ("head_epochs", "tune_epochs", "tune_blocks", "mae_warmup_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        if not 0 < self.mae_mask_ratio < 1:
            raise ValueError(f"mae_mask_ratio must be in (0, 1), got {self.mae_mask_ratio}")
        for name in ("head_lr", "tune_lr", "head_batch_size", "tune_batch_size", "mae_warmup_lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def views(self) -> ViewSettings:
        return ViewSettings(self.max_shift, self.gain_std, self.time_mask, self.freq_mask)

    def option(self, name: str, default: float | int | None = None) -> float | int | None:
        """An option's explicit value, else the preset's, else ``default``."""
        explicit = getattr(self, name)
        if explicit is not None:
            return explicit
        preset = PRESETS[self.preset][name]
        return default if preset is None else preset

    def stage_epochs(self, run: RunSettings) -> tuple[int, int, str]:
        """Epochs of the head and top stages, and a note when an explicit ``--epochs N``
        replaced the preset's own epochs (see the module docstring)."""
        split = split_epochs(run.epochs)
        preset = PRESETS[self.preset]
        fixed = {n for n in ("head_epochs", "tune_epochs") if preset[n] is not None}
        replaced = epochs_given(run) and any(getattr(self, n) is None for n in fixed)
        if not replaced:
            head = int(self.option("head_epochs", split[0]))
            return head, int(self.option("tune_epochs", split[1])), ""
        head = split[0] if self.head_epochs is None else self.head_epochs
        tune = split[1] if self.tune_epochs is None else self.tune_epochs
        note = (
            f"preset '{self.preset}' ({preset['head_epochs']} + {preset['tune_epochs']} epochs) "
            f"scaled to run.epochs={run.epochs} by its 1:4 split ({split[0]} + {split[1]})"
        )
        return head, tune, note


@dataclass
class MixConfig(NnclrConfig):
    alpha: float = 1.0
    """Beta(alpha, alpha) of the mixing coefficient (the paper gives no value; 1.0 as CutMix)."""

    domains = domain_map(
        alpha=positive("Beta(alpha, alpha) of the mixing coefficient."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")


@dataclass
class CutMixConfig(MixConfig):
    label_weight: Literal["lambda", "area"] = "lambda"
    """Weight of the anchor in the virtual labels: ``lambda`` = the sampled lambda (equation 3);
    ``area`` = the share of the input the box left unreplaced (CutMix's recomputation)."""


@dataclass
class MixupLsConfig(MixConfig):
    smoothing: float = 0.1
    """Label-smoothing epsilon of the virtual labels (spread over the batch)."""

    domains = domain_map(
        smoothing=between(0, 1, "Label-smoothing epsilon of the virtual labels.", open_high=True),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")


class Nnclr(Method):
    """NNCLR contrastive tuning without mixing (Table 3's "No Mixing")."""

    name = "nnclr"
    description = "NNCLR contrastive tuning, no mixing (uaMix-MAE ablation), in two stages."
    supervised = False
    Config: ClassVar[type] = NnclrConfig

    def setup(self, backbone: Backbone, task: Task) -> None:
        cfg = self.config
        self.mae: MaskedAutoencoder | None = None
        self.objective = "nnclr"
        if self.mae_warmup_for(backbone):
            self.mae = MaskedAutoencoder(MaskedAutoencoder.Config(mask_ratio=cfg.mae_mask_ratio))
            self.mae.setup(backbone, task)
        with torch.random.fork_rng(devices=[], enabled=self.mae is not None):
            self.head = ContrastiveHead(
                backbone.embed_dim, cfg.proj_hidden, cfg.pred_hidden, cfg.out_dim
            )
        self.queue = FifoQueue(cfg.queue_size, cfg.out_dim)

    def mae_warmup_for(self, backbone: Backbone) -> int:
        """Epochs of MAE warm-up this backbone gets: 0 unless it is randomly initialised and
        offers the masked-encoder contract."""
        if has_checkpoint(backbone) or not supports_mae(backbone):
            return 0
        return int(self.config.option("mae_warmup_epochs", 0))

    def begin_stage(self, stage: Stage) -> None:
        """Switch between the MAE objective (warm-up) and NNCLR; train only that one's modules."""
        self.objective = "mae" if stage.name == MAE_STAGE else "nnclr"
        if self.objective == "mae" and self.mae is None:
            raise UsageError(f"method '{self.name}' got an MAE stage without an MAE decoder")
        if self.mae is not None:
            self.mae.requires_grad_(self.objective == "mae")
        self.head.requires_grad_(self.objective == "nnclr")

    def mix(self, x: Tensor, time_axis: int) -> tuple[Tensor, Tensor, float]:
        """The mixed anchors, their virtual labels ``[B, B]`` and the anchor weight ``lam``."""
        return x, torch.eye(x.shape[0], device=x.device), 1.0

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        if self.objective == "mae":
            return self.mae.training_step(batch, backbone)
        x = batch.features
        if x.shape[0] < 2:
            raise UsageError(f"method '{self.name}' needs batches of at least 2 clips")
        views = self.config.views()
        anchors = augment_view(x, backbone.time_axis, views)
        positives = augment_view(x, backbone.time_axis, views)
        mixed, targets, lam = self.mix(anchors, backbone.time_axis)
        embedding = backbone.embed(torch.cat([mixed, positives])).float()
        z_mixed, p_mixed = self.head(embedding[: x.shape[0]])
        z_positive, p_positive = self.head(embedding[x.shape[0] :])
        loss = self.contrastive_loss(z_mixed, p_mixed, z_positive, p_positive, targets, batch.index)
        self.queue.enqueue(z_positive, batch.index)
        return StepOutput(loss, {"lambda": lam, "queue_filled": float(self.queue.filled)})

    def contrastive_loss(
        self,
        z_anchor: Tensor,
        p_anchor: Tensor,
        z_positive: Tensor,
        p_positive: Tensor,
        targets: Tensor,
        ids: Tensor | None = None,
    ) -> Tensor:
        """Equation 4 (equation 1 for ``targets = I``), symmetrized when configured."""
        cfg = self.config
        ids = ids if cfg.exclude_self else None
        support = self.queue.neighbours(z_anchor.detach(), cfg.k, ids)
        loss = soft_cross_entropy(nnclr_logits(support, p_positive, cfg.tau), targets)
        if not cfg.symmetric:
            return loss
        support = self.queue.neighbours(z_positive.detach(), cfg.k, ids)
        swapped = soft_cross_entropy(nnclr_logits(support, p_anchor, cfg.tau), targets.T)
        return (loss + swapped) / 2

    def stages(self, backbone: Backbone, run: RunSettings) -> list[Stage]:
        """Stage ``mae-warmup`` (random encoders only, see the module docstring), stage ``head``
        (backbone frozen), then stage ``top`` (top half, layer decay)."""
        cfg = self.config
        pick = cfg.option
        head_epochs, tune_epochs, scaled = cfg.stage_epochs(run)
        blocks = cfg.tune_blocks if cfg.tune_blocks is not None else backbone.num_layers // 2
        if blocks > backbone.num_layers:
            raise UsageError(
                f"method.tune_blocks is {blocks} but backbone '{backbone.name}' has "
                f"{backbone.num_layers} blocks"
            )
        stages = [
            Stage(
                MAE_STAGE,
                self.mae_warmup_for(backbone) if self.mae is not None else 0,
                float(pick("mae_warmup_lr", run.lr)),
                run.batch_size,
                note="no backbone.checkpoint: MAE pretraining of the randomly initialised "
                "encoder on the training clips before contrastive tuning",
            ),
            Stage(
                "head",
                head_epochs,
                float(pick("head_lr", run.lr)),
                int(pick("head_batch_size", run.batch_size)),
                backbone_blocks=0,
            ),
            Stage(
                "top",
                tune_epochs,
                float(pick("tune_lr", run.lr)),
                int(pick("tune_batch_size", run.batch_size)),
                backbone_blocks=blocks,
                layer_decay=cfg.layer_decay,
            ),
        ]
        stages = [stage for stage in stages if stage.epochs > 0]
        if stages and stages[0].name != MAE_STAGE and not has_checkpoint(backbone):
            stages[0] = replace(stages[0], note=random_encoder_note(backbone, cfg))
        first = next((i for i, s in enumerate(stages) if s.name != MAE_STAGE), None)
        if scaled and first is not None:
            notes = [scaled, stages[first].note] if stages[first].note else [scaled]
            stages[first] = replace(stages[first], note="; ".join(notes))
        return stages


def has_checkpoint(backbone: Backbone) -> bool:
    return bool(backbone.checkpoint_source())


def supports_mae(backbone: Backbone) -> bool:
    """Whether the backbone offers the masked-encoder contract the ``mae`` method needs."""
    return isinstance(backbone, MaskedBackbone)


def random_encoder_note(backbone: Backbone, cfg: NnclrConfig) -> str:
    """Why a randomly initialised encoder is tuned without MAE warm-up (for the run log)."""
    if not supports_mae(backbone):
        reason = f"backbone '{backbone.name}' has no masked-encoder contract for an MAE warm-up"
    else:
        reason = f"MAE warm-up off (method.mae_warmup_epochs=0, preset '{cfg.preset}')"
    return f"no backbone.checkpoint: the encoder is randomly initialised; {reason}"


class NnclrTCutMix(Nnclr):
    """uaMix-MAE: NNCLR with unsupervised T-CutMix (equations 2-4)."""

    name = "nnclr-tcutmix"
    description = "uaMix-MAE: NNCLR + unsupervised T-CutMix (time band over all frequencies)."
    Config: ClassVar[type] = CutMixConfig

    def sample_box(self, frames: int, bins: int, lam: float) -> Box:
        return time_band(frames, bins, lam)

    def mix(self, x: Tensor, time_axis: int) -> tuple[Tensor, Tensor, float]:
        frames, bins = x.shape[time_axis], x.shape[other_axis(time_axis)]
        perm = torch.randperm(x.shape[0], device=x.device)
        lam = sample_lambda(self.config.alpha)
        box = self.sample_box(frames, bins, lam)
        mixed = torch.where(box_mask(x.shape, time_axis, box, x.device), x[perm], x)
        if self.config.label_weight == "area":
            lam = box.kept_fraction(frames, bins)
        return mixed, virtual_labels(perm, lam), lam


class NnclrTfCutMix(NnclrTCutMix):
    """uaMix-MAE ablation: a CutMix box over time and frequency."""

    name = "nnclr-tfcutmix"
    description = "NNCLR + unsupervised TF-CutMix (box over time and frequency; ablation)."

    def sample_box(self, frames: int, bins: int, lam: float) -> Box:
        return time_freq_box(frames, bins, lam)


class NnclrMixupLs(Nnclr):
    """uaMix-MAE ablation: MixUp of whole inputs with label-smoothed virtual labels."""

    name = "nnclr-mixup-ls"
    description = "NNCLR + unsupervised MixUp with label-smoothed virtual labels (ablation)."
    Config: ClassVar[type] = MixupLsConfig

    def mix(self, x: Tensor, time_axis: int) -> tuple[Tensor, Tensor, float]:
        perm = torch.randperm(x.shape[0], device=x.device)
        lam = sample_lambda(self.config.alpha)
        return mixup(x, lam, perm), virtual_labels(perm, lam, self.config.smoothing), lam


@hookimpl
def register_methods(register) -> None:
    for method in (Nnclr, NnclrTCutMix, NnclrMixupLs, NnclrTfCutMix):
        register(method)
