"""Multi-label scores as AudioSet papers report them: mAP, mAUC and d-prime.

Not a plugin. Scores are computed per class with scikit-learn and averaged over the classes
that have at least one positive clip in the evaluated split (a class without positives has
no defined precision-recall curve or ROC; AudioSet's eval split has positives for all 527
classes, a small or subsampled split may not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.api import UsageError


@dataclass(frozen=True)
class MultiLabelScores:
    """Macro averages over :attr:`classes_scored` classes."""

    mean_ap: float
    """mAP: mean over classes of the average precision (``average_precision_score``)."""
    mean_auc: float
    """mAUC: mean over classes of the ROC AUC (``roc_auc_score``); NaN when every scored
    class is positive on every clip (no negatives)."""
    d_prime: float
    """``sqrt(2) * Phi^-1(mAUC)``, the d-prime of AudioSet papers (Gemmeke et al. 2017)."""
    classes_scored: int


def scored_classes(targets: np.ndarray) -> np.ndarray:
    """Indices of the classes with at least one positive clip."""
    return np.flatnonzero(targets.sum(axis=0) > 0)


def multi_label_scores(scores: np.ndarray, targets: np.ndarray) -> MultiLabelScores:
    """mAP, mAUC and d-prime of ``scores`` ``[N, C]`` against multi-hot ``targets`` ``[N, C]``."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise UsageError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    classes = scored_classes(targets)
    if len(classes) == 0:
        raise UsageError("no class has a positive clip: mAP is undefined")
    aps = [average_precision_score(targets[:, k], scores[:, k]) for k in classes]
    with_negatives = [k for k in classes if not targets[:, k].all()]
    aucs = [roc_auc_score(targets[:, k], scores[:, k]) for k in with_negatives]
    mean_ap = float(np.mean(aps))
    mean_auc = float(np.mean(aucs)) if aucs else float("nan")
    return MultiLabelScores(mean_ap, mean_auc, d_prime(mean_auc), len(classes))


def d_prime(auc: float) -> float:
    """The d-prime of an ROC AUC: ``sqrt(2) * Phi^-1(auc)`` (inf at AUC 1)."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def prior_scores(train_targets: np.ndarray, count: int) -> np.ndarray:
    """The majority/prior baseline: every clip scored with the train split's class frequencies."""
    return np.tile(np.asarray(train_targets, dtype=np.float64).mean(axis=0), (count, 1))
