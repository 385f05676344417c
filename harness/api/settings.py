"""The run settings every method and protocol may read (``--set run.KEY=VALUE``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from harness.api.domains import Domain, at_least, between, domain_map, non_negative


@dataclass
class RunSettings:
    """Settings of the training loop shared by every method."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    schedule: Literal["plateau", "cosine"] = "plateau"
    """After the warm-up: ``plateau`` halves the lr (``run.plateau_factor``) after
    ``run.plateau_patience`` epochs without improvement of the validation loss (the training
    loss without validation; the paper's schedule); ``cosine`` decays it to 0 at the last step."""
    plateau_patience: int = 10
    """Epochs without improvement of the training loss before the learning rate drops."""
    plateau_factor: float = 0.5
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    workers: int | None = None
    """DataLoader worker processes per training process (``none``: auto,
    ``min(8, CPUs / processes - 1)``)."""
    audio_cache: str = "auto"
    """Decoded-audio cache: ``auto`` (under the harness cache folder), ``off``, or a folder."""
    data_source: Literal["cache", "shards", "raw"] = "cache"
    """Where training clips come from: the decoded-audio cache (``run.audio_cache``),
    WebDataset shards streamed from ``run.shards`` (``harness shards write``), or the audio
    files decoded on every read."""
    shards: str = ""
    """Folder (or manifest) of the training split's shards, for ``data_source=shards``."""
    shards_url: str = ""
    """Stream the shards from here instead of the manifest's folder: a URL prefix or a
    template with ``{name}`` (``pipe:curl -s http://host/audioset/{name}``)."""
    sampler: Literal["uniform", "label-weighted"] = "uniform"
    """How the method's training draws each epoch: every clip once in a fresh order, or
    ``run.samples_per_epoch`` clips drawn by label weight (each clip's weight the sum over
    its labels of 1 / the label's training-clip count; AudioMAE's AudioSet-2M sampler).
    Not with ``data_source=shards`` (streamed shards cannot be drawn from at random)."""
    samples_per_epoch: int = 0
    """Clips drawn per epoch by the label-weighted sampler (0: the split's clip count)."""
    sampler_replacement: bool = False
    """Whether the label-weighted sampler may draw a clip more than once per epoch
    (AudioMAE: no)."""
    shuffle_buffer: int = 1000
    """Clips each data worker shuffles among when streaming shards."""
    data_outside_root: bool = False
    """Allow clip files that resolve (through ``..``, absolute paths or symlinks) outside the
    data set's root folder; off, such a file is an error before anything is read."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast dtype of the backbone and method (the front-end stays fp32); fp16 adds a
    gradient scaler."""
    compile: bool = False
    """``torch.compile`` the backbone."""
    grad_accum: int = 1
    """Micro-batches whose gradients add up to one optimizer step."""
    grad_clip: float = 0.0
    """Clip the gradients' global norm to this (0: off)."""
    sync_every: int = 50
    """Steps between reads of the accumulated loss (the step never waits for the GPU)."""
    log_every: int = 10
    """Optimizer steps between ``step`` events of ``metrics.jsonl`` and the loggers (their
    values stay on the device until the next read, every ``sync_every`` steps)."""
    checkpoint_every_steps: int = 0
    """Optimizer steps between mid-epoch checkpoints (0: only after every epoch)."""
    loggers: list[str] = field(default_factory=list)
    """Loggers that receive the training metrics besides ``metrics.jsonl`` (e.g. tensorboard)."""
    valid_fraction: float = 0.0
    """Fraction of the training clips held out for validation, by whole ``valid_group``
    (0: off, so published protocols stay comparable; a data set's own validation split
    is used when it has one)."""
    valid_group: str = "identifier"
    """Clip metadata key held out together (TAU22: ``identifier``, the recording location),
    so no group is in both; clips without it are their own group."""
    select: Literal["last", "best"] = "last"
    """Weights evaluated: the last epoch's, or the best epoch's by ``select_metric``."""
    select_metric: Literal["valid_acc", "valid_loss"] = "valid_acc"
    """Validation metric ``select=best`` ranks epochs by (accuracy: higher, loss: lower)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, updated after every optimizer
    step of the method's stages (0: off). The averaged weights are evaluated too; their
    metrics are stored beside the live weights' with an ``ema/`` prefix."""
    log_samples: bool = False
    """Save the evaluation split's per-clip predictions (``samples.jsonl`` in the run folder:
    clip, device, label, predicted class, class probabilities); ``--log-samples``."""

    domains = domain_map(
        epochs=at_least(1, "Training epochs."),
        batch_size=at_least(1, "Training batch size."),
        eval_batch_size=at_least(1, "Batch size for evaluation."),
        seed=Domain(ge=0, lt=2**63, help="Random seed of torch, numpy and Python."),
        device=Domain(
            pattern=r"cpu|auto|mps|cuda(:\d+)?", help="Torch device: cpu, cuda, cuda:N or auto."
        ),
        lr=Domain(gt=0, le=10, help="Peak learning rate of Adam."),
        betas=between(0, 1, "Adam's beta1, beta2 (each in [0, 1)).", open_high=True),
        eps=non_negative("Adam's epsilon."),
        weight_decay=non_negative("Adam's (L2) weight decay."),
        warmup_epochs=non_negative("Epochs of linear learning-rate warmup."),
        plateau_patience=non_negative("Epochs without improvement before the lr drops."),
        plateau_factor=Domain(gt=0, lt=1, help="Factor of the lr drop on a plateau."),
        threads=non_negative("CPU threads for torch (0: torch's default)."),
        workers=non_negative("DataLoader workers per process (none: auto)."),
        samples_per_epoch=non_negative("Clips drawn per epoch, label-weighted (0: all)."),
        shuffle_buffer=at_least(1, "Clips each data worker shuffles among (shards)."),
        grad_accum=at_least(1, "Micro-batches per optimizer step."),
        grad_clip=non_negative("Clip the gradients' global norm to this (0: off)."),
        sync_every=at_least(1, "Steps between reads of the accumulated loss."),
        log_every=at_least(1, "Optimizer steps between logged training metrics."),
        checkpoint_every_steps=non_negative("Steps between mid-epoch checkpoints (0: off)."),
        valid_fraction=between(0, 1, "Training clips held out for validation.", open_high=True),
        ema=between(0, 1, "Decay of the weights' moving average (0: off).", open_high=True),
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self.check_scale_settings()

    def check_scale_settings(self) -> None:
        if not self.audio_cache:
            raise ValueError("audio_cache must be auto, off or a folder")
