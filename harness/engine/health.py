"""Representation health: numbers that tell a collapsed embedding from a useful one.

Computed on a fixed probe batch of clip embeddings ``[N, D]`` (see :mod:`harness.run.health`
and ``docs/health.md``), all in float64:

- ``effective_rank``: RankMe (Garrido et al. 2023) of the uncentred embedding matrix, ``exp``
  of the Shannon entropy of the singular values normalised to sum to 1; between 1 (one
  direction) and ``min(N, D)``.
- ``centered_rank``: the same of the embeddings minus their mean: how many directions the
  clips vary along. An encoder whose embeddings share a large common offset (an anisotropic
  one, e.g. AudioMAE after MAE pretraining) has an uncentred rank near 1 and still separates
  its inputs; the centred rank tells the two apart.
- ``relative_spread``: the mean Euclidean distance between distinct rows over the mean
  row norm; 0 when every clip gets the same embedding.
- ``dim_std_mean`` and ``dim_std_min``: the per-dimension standard deviation over the rows
  (population, ``correction=0``), its mean and its minimum over the dimensions.

A representation counts as collapsed when its relative spread is below
:data:`MIN_RELATIVE_SPREAD` (the clips' embeddings are nearly one point) or not a finite
number. The ranks are reported, not judged: a task of two classes may rightly vary along one
direction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIN_RELATIVE_SPREAD = 0.025
"""Below this relative spread (2.5 %) the clips' embeddings are (nearly) one point (docs/health.md
has the values that set it)."""
HEALTH_KEYS = (
    "effective_rank",
    "centered_rank",
    "relative_spread",
    "dim_std_mean",
    "dim_std_min",
)


def effective_rank(embeddings: Tensor) -> float:
    """RankMe of ``embeddings`` ``[N, D]`` (uncentred): ``exp(-sum p log p)`` with ``p`` the
    singular values over their sum; 0 for an all-zero matrix."""
    values = torch.linalg.svdvals(embeddings.detach().double().cpu())
    total = values.sum()
    if not torch.isfinite(total):
        return math.nan
    if total <= 0:
        return 0.0
    p = values / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def relative_spread(embeddings: Tensor) -> float:
    """Mean pairwise distance of the rows (over distinct pairs) over the mean row norm; 0
    for identical rows (and for all-zero ones)."""
    x = embeddings.detach().double().cpu()
    rows = x.shape[0]
    if rows < 2:
        return 0.0
    distances = torch.cdist(x, x)
    mean_distance = distances.sum() / (rows * (rows - 1))
    mean_norm = x.norm(dim=1).mean()
    if not torch.isfinite(mean_distance + mean_norm):
        return math.nan
    if mean_norm <= 0:
        return 0.0
    return float(mean_distance / mean_norm)


def representation_health(embeddings: Tensor) -> dict[str, float]:
    """The health numbers of ``embeddings`` ``[N, D]`` (keys: :data:`HEALTH_KEYS`)."""
    x = embeddings.detach().double().cpu().flatten(1)
    std = x.std(dim=0, correction=0)
    return {
        "effective_rank": effective_rank(x),
        "centered_rank": effective_rank(x - x.mean(dim=0)),
        "relative_spread": relative_spread(x),
        "dim_std_mean": float(std.mean()),
        "dim_std_min": float(std.min()),
    }


def is_collapsed(values: dict[str, float]) -> bool:
    """Whether health ``values`` show a collapsed representation (not finite counts too)."""
    spread = values["relative_spread"]
    return not spread >= MIN_RELATIVE_SPREAD
