"""The training loop and evaluation: the core owns them, plugins own their steps."""

from __future__ import annotations

import math
import os
import platform
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import harness
from harness.api import (
    Augmentation,
    Backbone,
    Batch,
    DataSplits,
    EvalContext,
    Method,
    Stage,
    Task,
)
from harness.audio import check_header
from harness.cache import clean_stale_cache
from harness.checkpoints import load_backbone_checkpoint
from harness.config import RunConfig
from harness.data import ClipAudio, batches, load_clips, num_batches
from harness.errors import HarnessError, UsageError
from harness.faults import checkpoint
from harness.progress import note, progress
from harness.store import ResultStore, RunRecord, commit_run, new_run_id, recover, write_json


@dataclass
class RunResult:
    record: RunRecord
    tables: dict[str, str] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad value for run.device: {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"run.device is {name!r} but no CUDA device is available")
    return device


class Experiment:
    """One configured run: data, model, method, augmentations and protocols."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.log_lines: list[str] = []
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.device = pick_device(cfg.run.device)
        self.backbone: Backbone = cfg.backbone.build()
        self.method: Method = cfg.method.build()
        self.augs: list[Augmentation] = [a.build() for a in cfg.augs]
        self.protocols = [p.build() for p in cfg.protocols]
        for protocol in self.protocols:
            if protocol.needs_classifier and not self.method.supervised:
                raise UsageError(
                    f"protocol '{protocol.name}' needs a classifier, "
                    f"but method '{self.method.name}' trains none"
                )
        self.splits: DataSplits = cfg.dataset.build().load()
        for protocol in self.protocols:
            protocol.check(self.splits, self.method)
        self.task = Task(
            self.splits.classes,
            self.splits.devices,
            self.backbone.sample_rate,
            self.backbone.time_axis,
        )
        self._audio: dict[str, ClipAudio] = {}
        self._embeddings: dict[str, Tensor] = {}

    def log(self, message: str) -> None:
        self.log_lines.append(message)
        note(message)

    def audio(self, split: str) -> ClipAudio:
        if split not in self._audio:
            clips = getattr(self.splits, split)
            seconds = self.splits.clip_seconds
            if split == "train" and self.splits.train_clip_seconds:
                seconds = self.splits.train_clip_seconds
            self._audio[split] = load_clips(
                clips,
                self.backbone.sample_rate,
                seconds,
                self.splits.devices,
                desc=f"loading {split} audio",
            )
        return self._audio[split]

    # -- training -------------------------------------------------------------

    def setup(self) -> None:
        checkpoint = getattr(self.backbone.config, "checkpoint", "")
        if checkpoint:
            report = load_backbone_checkpoint(self.backbone, checkpoint, self.task.num_classes)
            for line in report.notes:
                self.log(line)
        self.frontend = self.backbone.frontend().to(self.device)
        self.backbone.to(self.device)
        for aug in self.augs:
            aug.setup(self.task)
            aug.to(self.device)
        self.method.setup(self.backbone, self.task)
        self.method.to(self.device)

    def train(self) -> None:
        """Train in the method's stages (one stage with the run's settings by default)."""
        run = self.cfg.run
        stages = self.method.stages(self.backbone, run) or [
            Stage("train", run.epochs, run.lr, run.batch_size)
        ]
        generator = torch.Generator().manual_seed(run.seed)
        for number, stage in enumerate(stages, 1):
            if len(stages) > 1 or stage.note:
                self.log(
                    f"stage {number}/{len(stages)} '{stage.name}': {stage.epochs} epochs, "
                    f"lr {stage.lr:.2e}, batch {stage.batch_size}, "
                    f"backbone blocks trained: {describe_blocks(stage.backbone_blocks)}"
                    + (f"; {stage.note}" if stage.note else "")
                )
            self.method.begin_stage(stage)
            self.train_stage(stage, generator)

    def build_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        """Adam over what the stage trains; each group remembers its ``base_lr`` for warmup."""
        run = self.cfg.run
        if stage.backbone_blocks is None:
            params = [
                p
                for p in [*self.backbone.parameters(), *self.method.parameters()]
                if p.requires_grad
            ]
            groups: list[dict] = [{"params": params}]
        else:
            if stage.backbone_blocks == 0:
                self.backbone.requires_grad_(False)
            else:
                self.backbone.freeze_all_but_top(stage.backbone_blocks)
            groups = self.backbone.param_groups(stage.lr, stage.layer_decay, run.weight_decay)
            groups.append({"params": [p for p in self.method.parameters() if p.requires_grad]})
        optimizer = torch.optim.Adam(
            groups, lr=stage.lr, betas=run.betas, eps=run.eps, weight_decay=run.weight_decay
        )
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]
        return optimizer

    def train_stage(self, stage: Stage, generator: torch.Generator) -> None:
        run = self.cfg.run
        train_audio = self.audio("train")
        optimizer = self.build_optimizer(stage)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, patience=run.plateau_patience, factor=run.plateau_factor
        )
        steps_per_epoch = num_batches(len(train_audio), stage.batch_size, drop_last=True)
        warmup_steps = run.warmup_epochs * steps_per_epoch
        step = 0
        for epoch in range(stage.epochs):
            self.backbone.train()
            self.method.train()
            losses = []
            started = time.perf_counter()
            batch_iter = batches(
                train_audio, stage.batch_size, self.device, generator, drop_last=True
            )
            for batch in progress(
                batch_iter, desc=f"epoch {epoch + 1}/{stage.epochs}", total=steps_per_epoch
            ):
                if step < warmup_steps:
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * (step + 1) / warmup_steps
                output = self.method.training_step(self.prepare(batch, train=True), self.backbone)
                if not torch.isfinite(output.loss):
                    raise HarnessError(
                        f"training diverged: loss is {output.loss.item()} at epoch {epoch + 1}"
                    )
                optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                optimizer.step()
                losses.append(output.loss.item())
                step += 1
            mean_loss = float(np.mean(losses)) if losses else math.nan
            if step >= warmup_steps:
                plateau.step(mean_loss)
            self.log(
                f"epoch {epoch + 1}/{stage.epochs}: loss {mean_loss:.4f}, "
                f"lr {optimizer.param_groups[-1]['lr']:.2e}, {time.perf_counter() - started:.1f}s"
            )

    def prepare(self, batch: Batch, train: bool) -> Batch:
        """Waveform augmentations, the front-end, then feature augmentations."""
        wave = batch.wave
        if train:
            for aug in self.augs:
                if aug.stage == "waveform":
                    wave = aug(wave, batch)
        self.frontend.train(train)
        with torch.no_grad():
            features = self.frontend(wave)
        if train:
            for aug in self.augs:
                if aug.stage == "features":
                    features = aug(features, batch)
        batch.wave = wave
        batch.features = features
        return batch

    # -- evaluation -----------------------------------------------------------

    @torch.no_grad()
    def _forward_split(self, split: str, what: str) -> Tensor:
        self.backbone.eval()
        self.method.eval()
        audio = self.audio(split)
        size = self.cfg.run.eval_batch_size
        outputs = []
        for batch in progress(
            batches(audio, size, self.device),
            desc=f"{what} {split}",
            total=num_batches(len(audio), size),
        ):
            encoded = self.backbone(self.prepare(batch, train=False).features)
            if what == "predicting":
                outputs.append(torch.softmax(self.method.logits(encoded).float(), dim=-1).cpu())
            else:
                outputs.append(encoded.embedding.float().cpu())
        return torch.cat(outputs)

    def predict(self, split: str) -> Tensor:
        return self._forward_split(split, "predicting")

    def embed(self, split: str) -> Tensor:
        if split not in self._embeddings:
            self._embeddings[split] = self._forward_split(split, "embedding")
        return self._embeddings[split]

    def evaluate(self) -> tuple[dict[str, float], dict[str, str]]:
        ctx = EvalContext(
            backbone=self.backbone,
            method=self.method,
            task=self.task,
            splits=self.splits,
            torch_device=self.device,
            batch_size=self.cfg.run.eval_batch_size,
            seed=self.cfg.run.seed,
            audio=self.audio,
            predict=self.predict,
            embed=self.embed,
        )
        metrics: dict[str, float] = {}
        tables: dict[str, str] = {}
        for protocol in self.protocols:
            result = protocol.evaluate(ctx)
            metrics.update({f"{protocol.name}/{k}": float(v) for k, v in result.metrics.items()})
            tables[protocol.name] = result.table
        return metrics, tables


def describe_blocks(blocks: int | None) -> str:
    if blocks is None:
        return "as set up"
    return "none (backbone frozen)" if blocks == 0 else f"top {blocks}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(harness.__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


def check_output_folder(out_dir: Path) -> None:
    """Preflight: ``out_dir`` accepts a file, or can be created (nothing is created here)."""
    if out_dir.is_dir():
        try:
            with tempfile.TemporaryFile(dir=out_dir):
                pass
        except OSError as err:
            raise HarnessError(f"output folder {out_dir} is not writable: {err}") from None
        return
    ancestor = out_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if out_dir.exists() or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise HarnessError(f"output folder {out_dir} cannot be created (check {ancestor})")


def check_audio_headers(splits: DataSplits) -> None:
    """Preflight: every file of every split opens and its header's data is all there."""
    seen: set[Path] = set()
    for split in ("train", "eval", *getattr(splits, "extra_splits", ())):
        for clip in getattr(splits, split, None) or ():
            for path in clip.segments or (clip.path,):
                if path not in seen:
                    seen.add(path)
                    check_header(path)


def check_metrics(metrics: dict[str, float]) -> None:
    """No NaN or infinite metric may be stored: the run fails instead, naming them."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise HarnessError(f"run failed: non-finite metrics ({listed}); nothing was stored")


def run_experiment(cfg: RunConfig, out_dir: Path, store: ResultStore) -> RunResult:
    """Check cheaply, train, evaluate, and store one run (folder and row) as one unit."""
    started = time.perf_counter()
    recover(out_dir, store)
    clean_stale_cache()
    check_output_folder(out_dir)
    if store.path.exists():
        store.check_writable()
    else:
        check_output_folder(store.path.parent)
    created = datetime.now(UTC)
    config_hash = cfg.config_hash()
    run_id = new_run_id(created, config_hash)
    experiment = Experiment(cfg)
    check_audio_headers(experiment.splits)
    for split in ("train", "eval"):  # read (and check) every sample before the first step
        experiment.audio(split)
    experiment.setup()
    experiment.train()
    metrics, tables = experiment.evaluate()
    check_metrics(metrics)
    final_dir = out_dir / run_id
    record = RunRecord(
        run_id=run_id,
        created=created.isoformat(timespec="seconds"),
        config_hash=config_hash,
        backbone=cfg.backbone.name,
        method=cfg.method.name,
        aug=cfg.aug_label,
        dataset=cfg.dataset.name,
        protocols=",".join(p.name for p in cfg.protocols),
        seed=cfg.run.seed,
        config=cfg.as_dict(),
        metrics=metrics,
        run_dir=str(final_dir),
        harness_version=harness.__version__,
        git_commit=git_commit(),
        environment=environment(),
        duration_s=round(time.perf_counter() - started, 2),
    )
    commit_run(
        final_dir, store, record, lambda tmp: write_run_folder(tmp, record, experiment, tables)
    )
    return RunResult(record, tables)


def write_run_folder(
    folder: Path, record: RunRecord, experiment: Experiment, tables: dict[str, str]
) -> None:
    write_json(folder / "config.json", record.config)
    checkpoint("staging")
    write_json(folder / "metrics.json", record.metrics)
    write_json(folder / "record.json", {k: v for k, v in record.__dict__.items() if k != "config"})
    torch.save(experiment.backbone.state_dict(), folder / "backbone.pt")
    torch.save(experiment.method.state_dict(), folder / "method.pt")
    (folder / "log.txt").write_text("\n".join(experiment.log_lines) + "\n")
    (folder / "tables.md").write_text(
        "\n\n".join(f"## {k}\n\n{v}" for k, v in tables.items()) + "\n"
    )
