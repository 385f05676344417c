"""The run's representation-health probe: after every epoch of the method's training, the
backbone embeds one fixed batch of training clips and the numbers of
:mod:`harness.engine.health` go to ``metrics.jsonl`` as a ``health`` event; a collapse is
warned about in the run log once and kept for the run's record (``health/*`` metrics)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from harness.api import FeatureData
from harness.data.loader import ClipAudio
from harness.engine.health import (
    HEALTH_KEYS,
    MIN_RELATIVE_SPREAD,
    is_collapsed,
    representation_health,
)
from harness.engine.trainer import Engine
from harness.results.store import COLLAPSED_KEY
from harness.run.components import RunParts

PROBE_CLIPS = 64
"""Training clips in the probe batch (all of them when the split has fewer)."""


def probe_indices(clips: int, seed: int, count: int = PROBE_CLIPS) -> Tensor:
    """The probe's clips: the first ``count`` of the training split in an order seeded by
    the run's seed (its own generator: the training RNGs are not drawn from)."""
    order = torch.randperm(clips, generator=torch.Generator().manual_seed(seed))
    return order[: min(count, clips)]


def subset(audio: ClipAudio, indices: Tensor) -> ClipAudio:
    """The clips ``indices`` of ``audio`` (waveforms read lazily as before)."""
    return ClipAudio(
        clips=[audio.clips[i] for i in indices.tolist()],
        wave=audio.wave[indices],
        labels=audio.labels[indices],
        devices=audio.devices[indices],
        sample_rate=audio.sample_rate,
        targets=None if audio.targets is None else audio.targets[indices],
    )


class HealthProbe:
    """Embeds the probe batch after each epoch; remembers the last values and the first
    collapse (kept in checkpoints, so a resumed run reports as an uninterrupted one)."""

    def __init__(self, parts: RunParts, engine: Engine) -> None:
        self.parts, self.engine = parts, engine
        self.features: FeatureData | None = None
        """The probe clips' front-end features (computed once, on the CPU)."""
        self.last: dict[str, float] | None = None
        self.collapse: dict[str, Any] | None = None
        """The first collapsed epoch: ``stage``, ``stage_name``, ``epoch`` and the values."""

    def probe_data(self) -> FeatureData:
        if self.features is None:
            parts = self.parts
            audio = parts.audio("train")
            clips = subset(audio, probe_indices(len(audio), parts.cfg.run.seed))
            features = self.engine.infer(
                lambda batch: batch.features, clips, parts.cfg.run.eval_batch_size, parts.frontend
            )
            self.features = FeatureData(features, clips.labels, clips.devices)
        return self.features

    def embed(self) -> Tensor:
        """The probe batch's embeddings ``[N, D]``, in evaluation mode without gradient."""
        parts = self.parts
        backbone = parts.backbone
        backbone.eval()
        parts.method.eval()
        return self.engine.infer(
            lambda batch: backbone(batch.features).embedding.float(),
            self.probe_data(),
            parts.cfg.run.eval_batch_size,
        )

    def check(self, stage: int, stage_name: str, epoch: int, step: int) -> dict[str, float]:
        """Probe after ``epoch`` (1-based) of ``stage``: log the ``health`` event and, at the
        first collapse, one warning line. The training RNGs are left untouched."""
        device = self.parts.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            values = representation_health(self.embed())
        collapsed = is_collapsed(values)
        self.engine.log_event(
            "health",
            {**values, "collapsed": collapsed},
            stage=stage,
            stage_name=stage_name,
            epoch=epoch,
            step=step,
        )
        self.last = values
        if collapsed and self.collapse is None:
            self.collapse = {"stage": stage, "stage_name": stage_name, "epoch": epoch, **values}
            self.parts.log(
                f"WARNING: representation collapsed at stage {stage} '{stage_name}' epoch "
                f"{epoch}: effective rank {values['effective_rank']:.3f} (centred "
                f"{values['centered_rank']:.3f}), relative spread "
                f"{values['relative_spread']:.4f}, per-dimension std mean "
                f"{values['dim_std_mean']:.3g} min {values['dim_std_min']:.3g} (collapsed: "
                f"relative spread < {MIN_RELATIVE_SPREAD:g})"
            )
        return values

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps."""
        return {"last": self.last, "collapse": self.collapse}

    def load(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's :meth:`state` (None: one saved before health)."""
        state = state or {}
        self.last, self.collapse = state.get("last"), state.get("collapse")

    def metrics(self) -> dict[str, float]:
        """The record's ``health/*`` metrics: the last probe's finite values, ``collapsed``
        (1.0 or 0.0) and, after a collapse, its ``collapsed_stage`` and ``collapsed_epoch``.
        Nothing when no epoch was probed."""
        if self.last is None:
            return {}
        out = {
            f"health/{k}": float(self.last[k])
            for k in HEALTH_KEYS
            if self.last.get(k) is not None and math.isfinite(self.last[k])
        }
        out[COLLAPSED_KEY] = 1.0 if self.collapse is not None else 0.0
        if self.collapse is not None:
            out["health/collapsed_stage"] = float(self.collapse["stage"])
            out["health/collapsed_epoch"] = float(self.collapse["epoch"])
        return out
