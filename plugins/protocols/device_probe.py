"""Device probe: how much recording-device information the frozen embeddings keep.

Section 5.4 / Table 2 of Schmidt & Peters: a separate device classifier "with the
same capacity as the acoustic scene classifier" is trained on the frozen
encoder's clip embeddings with Adam and a class-balanced cross-entropy "until
convergence", and its device accuracy on the evaluation clips of the training
devices is compared with chance (1/6 for TAU22's a, b, c, s1-s3).

Here:

* Capacity: by default the probe is ``backbone.build_head(num_devices)``, the
  same head the scene classifier uses, fed an :class:`~harness.api.Encoded`
  whose embedding is the cached clip embedding (and whose only token is that
  embedding). ``head = "linear"`` uses LayerNorm + Linear on the embedding
  instead (the default head of :class:`~harness.api.Backbone`), for heads that
  need more than the embedding.
* Window length: the probe trains and tests on embeddings of clips of one length. When
  the training clips are longer than the evaluation clips (TAU22 with
  ``dataset.merge_segments``: 10 s recordings, trained on in random 1 s windows, evaluated
  on 1 s clips), each training recording is cut into consecutive windows of the
  evaluation clip length (for TAU22 its original 1 s segments), each embedded and probed
  with the recording's device. ``train_window = "whole"`` (not the paper's) embeds the
  whole training recordings instead. The metrics ``train_seconds`` and ``eval_seconds``
  record the two lengths.
* Devices: those with at least one clip in the train split; evaluation clips of
  other devices (e.g. TAU22's unseen s4-s6) are left out.
* Loss: cross-entropy weighted by ``n / (K * n_k)`` for device ``k`` with ``n_k``
  of the ``n`` training clips (inverse frequency, mean weight 1).
* Convergence: mini-batch Adam for at most ``max_epochs``; training stops early
  once the mean training loss of an epoch (over its batches) has not dropped by more
  than ``min_delta`` for ``patience`` epochs. Initialisation and shuffling are
  seeded with the run's seed, so the probe is deterministic on the CPU. The probe trains
  through the core's engine (:meth:`EvalContext.fit`): the run's device, precision and
  processes, and its epochs appear in ``metrics.jsonl`` as ``stage_name = "device-probe"``.
* Metrics: ``accuracy`` (all kept evaluation clips), ``balanced_accuracy`` (mean
  per-device recall), ``chance`` (``1 / K``; the expected score of a guess
  independent of the input, exact for balanced accuracy and for accuracy when
  the devices are balanced, as in TAU22's evaluation split), ``recall/<device>``,
  ``train_accuracy`` and ``epochs``. In the leaderboard, lower device accuracy
  means more device-invariant embeddings (Table 2), so its columns are marked
  ``higher_is_better = False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Batch,
    Column,
    DataError,
    Domain,
    EmbeddingHead,
    Encoded,
    EvalContext,
    FeatureData,
    HarnessError,
    Protocol,
    ProtocolResult,
    SplitName,
    StepOutput,
    TrainingJob,
    at_least,
    domain_map,
    non_negative,
    percent_of_fraction,
)

__all__ = ["DeviceProbe", "balanced_class_weights", "probe_metrics"]

GROUP = "Device probe"


def balanced_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``n / (K * n_k)`` per class ``k``: inverse frequency, mean 1 over the training clips."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    if (counts == 0).any():
        raise ValueError("every class needs at least one training example")
    return len(labels) / (num_classes * counts)


def probe_metrics(pred: np.ndarray, true: np.ndarray, names: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall over devices present), per-device recall, chance."""
    metrics = {"accuracy": float(np.mean(pred == true))}
    recalls = []
    for k, name in enumerate(names):
        mask = true == k
        if mask.any():
            recalls.append(float(np.mean(pred[mask] == k)))
            metrics[f"recall/{name}"] = recalls[-1]
    metrics["balanced_accuracy"] = float(np.mean(recalls))
    metrics["chance"] = 1.0 / len(names)
    return metrics


class EncodedHead(nn.Module):
    """Runs a head built for :class:`Encoded` on bare clip embeddings."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, embedding: Tensor) -> Tensor:
        return self.head(Encoded(embedding=embedding, tokens=embedding.unsqueeze(1)))


class DeviceProbe(Protocol):
    """A device classifier on frozen embeddings (Table 2: lower accuracy = more invariant)."""

    name = "device-probe"
    description = (
        "Device classifier (scene-head capacity, balanced CE) on frozen embeddings; "
        "accuracy on the training devices vs chance (Table 2)."
    )
    columns: ClassVar[list[Column]] = [
        percent_of_fraction("accuracy", "Device acc.", GROUP, False, chance=""),
        percent_of_fraction("balanced_accuracy", "Balanced acc.", GROUP, False, chance=""),
        percent_of_fraction("chance", "Chance", GROUP, False, chance=""),
    ]
    primary = "accuracy"

    @dataclass
    class Config:
        head: Literal["scene", "linear"] = "scene"
        """``scene``: the backbone's classification head; ``linear``: LayerNorm + Linear."""
        lr: float = 1e-3
        weight_decay: float = 0.0
        batch_size: int = 256
        max_epochs: int = 200
        patience: int = 5
        """Epochs without a training-loss drop of more than ``min_delta`` before stopping."""
        min_delta: float = 1e-4
        train_split: SplitName = "train"
        eval_split: SplitName = "eval"
        train_window: Literal["eval", "whole"] = "eval"
        """``eval``: training clips longer than the evaluation clips are cut into windows of
        the evaluation clip length; ``whole``: embed the whole training clips."""

        domains = domain_map(
            lr=Domain(gt=0, le=10, help="Learning rate of the probe."),
            weight_decay=non_negative("Weight decay of the probe."),
            batch_size=at_least(1, "Batch size of the probe."),
            max_epochs=at_least(1, "Most epochs the probe trains."),
            patience=at_least(1, "Epochs without a loss drop of min_delta before stopping."),
            min_delta=non_negative("Smallest training-loss drop that counts as progress."),
        )

        def __post_init__(self) -> None:
            for name in ("batch_size", "max_epochs", "patience"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
            if self.lr <= 0:
                raise ValueError(f"lr must be positive, got {self.lr}")
            if self.min_delta < 0 or self.weight_decay < 0:
                raise ValueError("min_delta and weight_decay must not be negative")

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        cfg = self.config
        window = None if cfg.train_window == "whole" else clip_samples(ctx, cfg.eval_split)
        train_x, train_dev, train_seconds = self.split_data(ctx, cfg.train_split, window)
        eval_x, eval_dev, eval_seconds = self.split_data(ctx, cfg.eval_split)
        kept = [int(d) for d in torch.unique(train_dev[train_dev >= 0])]
        if len(kept) < 2:
            raise DataError(
                f"device-probe: the {cfg.train_split} split has {len(kept)} known recording "
                f"device(s) {[ctx.task.devices[d] for d in kept]}; at least 2 are needed"
            )
        names = [ctx.task.devices[d] for d in kept]
        to_probe = torch.full((len(ctx.task.devices),), -1, dtype=torch.long)
        to_probe[kept] = torch.arange(len(kept))
        train_y = relabel(train_dev, to_probe)
        eval_y = relabel(eval_dev, to_probe)
        train_mask, eval_mask = train_y >= 0, eval_y >= 0
        if not eval_mask.any():
            raise DataError(
                f"device-probe: the {cfg.eval_split} split has no clips of the training "
                f"devices {', '.join(names)}"
            )
        train_x, train_y = train_x[train_mask], train_y[train_mask]
        eval_x, eval_y = eval_x[eval_mask], eval_y[eval_mask]

        probe, epochs = self.fit(ctx, train_x, train_y, len(kept))
        train_pred = predict(ctx, probe, FeatureData(train_x, train_y))
        eval_pred = predict(ctx, probe, FeatureData(eval_x, eval_y))
        metrics = probe_metrics(eval_pred.numpy(), eval_y.numpy(), names)
        metrics["train_accuracy"] = float((train_pred == train_y).float().mean())
        metrics["epochs"] = float(epochs)
        metrics["train_seconds"], metrics["eval_seconds"] = train_seconds, eval_seconds
        counts = (
            torch.bincount(train_y, minlength=len(kept)),
            torch.bincount(eval_y, minlength=len(kept)),
        )
        return ProtocolResult(metrics, render_table(metrics, names, *counts))

    @staticmethod
    def split_data(
        ctx: EvalContext, split: str, window: int | None = None
    ) -> tuple[Tensor, Tensor, float]:
        """Embeddings, recording devices and clip seconds of a split; clips longer than
        ``window`` samples are cut into windows of that length first."""
        audio = ctx.audio(split)
        length = audio.wave.shape[1]
        if window is not None and length > window:
            embeddings, devices = window_embeddings(ctx, split, window)
            length = window
        else:
            embeddings = ctx.embed(split).float().cpu()
            devices = audio.devices.long().cpu()
        if len(embeddings) != len(devices):
            raise HarnessError(
                f"device-probe: {len(embeddings)} embeddings but {len(devices)} clips "
                f"in split '{split}'"
            )
        return embeddings, devices, length / audio.sample_rate

    def build_probe(self, ctx: EvalContext, dim: int, num_devices: int) -> nn.Module:
        if self.config.head == "linear":
            return EncodedHead(EmbeddingHead(dim, num_devices)).to(ctx.torch_device)
        probe = EncodedHead(ctx.backbone.build_head(num_devices)).to(ctx.torch_device)
        try:
            with torch.no_grad():
                out = probe.eval()(torch.zeros(2, dim, device=ctx.torch_device))
        except (RuntimeError, IndexError, ValueError) as err:
            raise HarnessError(
                f"device-probe: the head of backbone '{ctx.backbone.name}' does not run on "
                f"clip embeddings ({err}); set protocol.device-probe.head=linear"
            ) from None
        if out.shape != (2, num_devices):
            raise HarnessError(
                f"device-probe: backbone '{ctx.backbone.name}' head gives shape {tuple(out.shape)} "
                f"for 2 embeddings and {num_devices} devices; set protocol.device-probe.head=linear"
            )
        return probe

    def fit(
        self, ctx: EvalContext, x: Tensor, y: Tensor, num_devices: int
    ) -> tuple[nn.Module, int]:
        """Train the probe with balanced cross-entropy until the training loss plateaus,
        through the core's training engine; returns the probe and the epochs trained."""
        cfg = self.config
        cuda = [ctx.torch_device.index or 0] if ctx.torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(ctx.seed)
            probe = self.build_probe(ctx, x.shape[1], num_devices)
        result = ctx.fit(
            TrainingJob(
                name=self.name,
                model=ProbeStep(probe, balanced_class_weights(y, num_devices)),
                data=FeatureData(x, y),
                epochs=cfg.max_epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                patience=cfg.patience,
                min_delta=cfg.min_delta,
                drop_last=False,
                seed=ctx.seed,
                log_epochs=False,
            )
        )
        probe.eval()
        return probe, result.epochs


class ProbeStep(nn.Module):
    """One training step of the probe: class-balanced cross-entropy on a batch of embeddings."""

    def __init__(self, probe: nn.Module, weights: Tensor) -> None:
        super().__init__()
        self.probe = probe
        self.register_buffer("weights", weights)

    def forward(self, batch: Batch) -> StepOutput:
        return StepOutput(F.cross_entropy(self.probe(batch.features), batch.label, self.weights))


def clip_samples(ctx: EvalContext, split: str) -> int:
    """Samples per clip of ``split``."""
    return int(ctx.audio(split).wave.shape[1])


def window_embeddings(ctx: EvalContext, split: str, window: int) -> tuple[Tensor, Tensor]:
    """Embeddings of the consecutive ``window``-sample windows of every clip of ``split``
    (a remainder shorter than a window is dropped), with each clip's recording device."""
    windows = ctx.windowed_audio(split, window)
    ctx.backbone.eval()
    embeddings = ctx.infer(
        lambda batch: ctx.backbone.embed(batch.features), windows, ctx.backbone.frontend()
    )
    return embeddings, windows.devices.long().cpu()


def relabel(devices: Tensor, to_probe: Tensor) -> Tensor:
    """Task device indices to probe classes (-1 for unknown or non-training devices)."""
    out = torch.full_like(devices, -1)
    known = devices >= 0
    out[known] = to_probe[devices[known]]
    return out


def predict(ctx: EvalContext, probe: nn.Module, data: FeatureData) -> Tensor:
    """Predicted probe classes of ``data``'s embeddings, on the CPU."""
    probe.eval()
    return ctx.infer(lambda batch: probe(batch.features), data).argmax(dim=-1)


def render_table(
    metrics: dict[str, float], names: list[str], train_n: Tensor, eval_n: Tensor
) -> str:
    """Per-device recall, then accuracy and balanced accuracy with chance beside them."""
    unit = percent_of_fraction("accuracy", "device accuracy")

    def shown(key: str) -> str:
        return unit.text(metrics[key])

    chance = f"{shown('chance')} (1/{len(names)})"
    rows = [
        [name, int(train_n[k]), int(eval_n[k]), shown(f"recall/{name}"), ""]
        for k, name in enumerate(names)
        if f"recall/{name}" in metrics
    ]
    rows.append(["accuracy", int(train_n.sum()), int(eval_n.sum()), shown("accuracy"), chance])
    rows.append(["balanced accuracy", "", "", shown("balanced_accuracy"), chance])
    headers = ["device", "train clips", "eval clips", unit.heading, f"chance{unit.unit_suffix}"]
    align = ("left", "right", "right", "right", "left")
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True, colalign=align)


@hookimpl
def register_protocols(register) -> None:
    register(DeviceProbe)
