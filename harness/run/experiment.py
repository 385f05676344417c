"""The training loop and evaluation: the core owns them, plugins own their steps."""

from __future__ import annotations

import math
import os
import platform
import random
import shutil
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
    SPLIT_NAMES,
    Augmentation,
    Backbone,
    Batch,
    Clip,
    Dataset,
    DataSplits,
    EvalContext,
    Method,
    Stage,
    StepOutput,
    Task,
    TrainingJob,
    TrainingResult,
)
from harness.api.settings import RunSettings
from harness.data.audio import check_header
from harness.data.audio_cache import cache_folder, cached_audio, check_writable
from harness.data.loader import ClipAudio, Loader, resolve_workers, split_audio
from harness.engine import distributed
from harness.engine.metrics_log import MetricsLog
from harness.engine.resume import (
    FORMAT,
    Partial,
    Position,
    find_resume,
    load_checkpoint,
    load_module_state,
    module_state,
    partial_root,
    rank_file,
    remove_partial,
    rng_state,
    save_atomic,
    set_rng_state,
    start_partial,
    write_state,
)
from harness.engine.trainer import Accumulator, AfterStep, Engine, Loop, StepModule, WarmupPlateau
from harness.registry.checkpoints import load_backbone_checkpoint
from harness.registry.config import RunConfig
from harness.results.store import (
    ResultStore,
    RunRecord,
    commit_run,
    new_run_id,
    recover,
    write_json,
)
from harness.util.cache import clean_stale_cache
from harness.util.errors import DataError, HarnessError, UsageError
from harness.util.faults import checkpoint
from harness.util.progress import note, progress


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


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse a precision the device cannot compute in."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise UsageError(f"run.precision is bf16 but the device {device} ({name}) has no bf16")


class Experiment:
    """One configured run: data, model, method, augmentations and protocols."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.log_lines: list[str] = []
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.ranks = distributed.env_ranks()
        self.device = pick_device(cfg.run.device)
        if self.ranks.active and self.device.type == "cuda":
            if self.ranks.local_rank >= torch.cuda.device_count():
                raise UsageError(
                    f"process {self.ranks.local_rank} has no GPU "
                    f"({torch.cuda.device_count()} present)"
                )
            self.device = torch.device("cuda", self.ranks.local_rank)
        check_precision(self.device, cfg.run.precision)
        self.workers = resolve_workers(cfg.run.workers, self.ranks.world)
        cache = cache_folder(cfg.run.audio_cache)
        if cache is not None:
            check_writable(cache)
        distributed.init(self.ranks, self.device)
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
        with distributed.main_first():  # a data set generated on first use: rank 0 writes it
            self.splits: DataSplits = cfg.dataset.build().load()
        for protocol in self.protocols:
            protocol.check(self.splits, self.method)
        self.has_valid = self.validation_split()
        self.best: dict[str, Any] | None = None
        """The best epoch's weights and validation value (``run.select=best``)."""
        self.task = Task(
            self.splits.classes,
            self.splits.devices,
            self.backbone.sample_rate,
            self.backbone.time_axis,
        )
        self._audio: dict[str, ClipAudio] = {}
        self._loaders: dict[tuple, Loader] = {}
        self._embeddings: dict[str, Tensor] = {}
        self.partial_dir: Path | None = None
        """The in-progress folder checkpoints go to (None: no checkpoints)."""
        self.resume_state: dict[str, Any] | None = None
        self._rng_pending = False
        self.stage_names: list[tuple[str, int]] = []
        self.metrics: MetricsLog | None = None
        """``metrics.jsonl`` and the loggers (the main process of a run with a folder)."""
        self.engine = Engine(
            self.device, self.ranks, cfg.run.precision, cfg.run.sync_every, self.log_event
        )
        """The one training loop: the method's stages and protocols' trainings."""

    def validation_split(self) -> bool:
        """Hold out ``run.valid_fraction`` of the training clips (unless the data set has a
        validation split); whether this run validates after every epoch."""
        run = self.cfg.run
        if run.valid_fraction > 0 and not self.splits.valid:
            self.splits.train, self.splits.valid = hold_out(
                self.splits.train, run.valid_fraction, run.valid_group, run.seed
            )
        has_valid = bool(self.splits.valid)
        if run.select == "best" and not has_valid:
            raise UsageError(
                "run.select=best needs a validation split: set run.valid_fraction "
                f"(data set '{self.cfg.dataset.name}' has none of its own)"
            )
        wanted = run.select == "best" or run.valid_fraction > 0
        if has_valid and not self.method.supervised:
            if wanted:
                raise UsageError(
                    f"validation needs class scores, but method '{self.method.name}' trains no "
                    "classifier (leave run.valid_fraction at 0 and run.select=last)"
                )
            return False
        return has_valid

    def validate(self) -> dict[str, float]:
        """Loss (NLL) and accuracy (%) on the validation split; training RNGs untouched."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            probs = self.predict("valid")
        labels = self.audio("valid").labels
        keep = labels >= 0
        probs, labels = probs[keep], labels[keep]
        picked = probs[torch.arange(len(labels)), labels].clamp_min(1e-12)
        return {
            "valid_loss": float(-picked.log().mean()),
            "valid_acc": float((probs.argmax(1) == labels).float().mean() * 100),
        }

    def consider_best(self, valid: dict[str, float], stage: int, epoch: int) -> None:
        """Keep this epoch's weights if its ``run.select_metric`` is the best so far."""
        run = self.cfg.run
        if run.select != "best" or not valid:
            return
        value = valid[run.select_metric]
        best = self.best
        if best is not None:
            better = (
                value < best["value"]
                if run.select_metric == "valid_loss"
                else value > best["value"]
            )
            if not better:
                return
        self.best = {
            "value": value,
            "stage": stage,
            "epoch": epoch,
            "backbone": {
                k: v.detach().cpu().clone() for k, v in self.backbone.state_dict().items()
            },
            "method": {k: v.detach().cpu().clone() for k, v in self.method.state_dict().items()},
        }

    def load_best(self) -> None:
        best = self.best
        if best is None:
            return
        self.backbone.load_state_dict(best["backbone"])
        self.method.load_state_dict(best["method"])
        self.log(
            f"selected the weights of stage {best['stage']} epoch {best['epoch']} "
            f"({self.cfg.run.select_metric} {best['value']:.4f})"
        )

    def log(self, message: str) -> None:
        self.log_lines.append(message)
        if self.ranks.is_main:
            note(message)

    def audio(self, split: str) -> ClipAudio:
        if split not in self._audio:
            clips = self.splits.split(split)
            seconds = self.splits.clip_seconds
            if split in ("train", "valid") and self.splits.train_clip_seconds:
                seconds = self.splits.train_clip_seconds
            try:
                audio = split_audio(clips, self.backbone.sample_rate, seconds, self.splits.devices)
            except DataError as err:
                raise DataError(f"{split} split: {err}") from None
            with distributed.main_first():
                audio = cached_audio(
                    audio, self.cfg.run.audio_cache, self.workers, desc=f"{split} audio"
                )
            self._audio[split] = audio
        return self._audio[split]

    def loader(self, split: str, batch_size: int, train: bool) -> Loader:
        """The split's DataLoader (kept with its workers); under DDP this rank's share."""
        key = (split, batch_size, train)
        if key not in self._loaders:
            ranks = self.ranks
            if train and batch_size % ranks.world:
                raise UsageError(
                    f"batch size {batch_size} does not split evenly over {ranks.world} processes"
                )
            self._loaders[key] = Loader(
                self.audio(split),
                batch_size,
                self.device,
                drop_last=train,
                workers=self.workers,
                rank=ranks.rank,
                world=ranks.world,
            )
        return self._loaders[key]

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        for loader in self._loaders.values():
            loader.close()
        self._loaders.clear()
        distributed.close()

    # -- training -------------------------------------------------------------

    def setup(self) -> None:
        checkpoint = self.backbone.checkpoint_source()
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
        if self.cfg.run.compile:
            self.backbone.compile()

    def train(self) -> None:
        """Train in the method's stages (one stage with the run's settings by default)."""
        run = self.cfg.run
        stages = self.method.stages(self.backbone, run) or [
            Stage("train", run.epochs, run.lr, run.batch_size)
        ]
        generator = torch.Generator().manual_seed(run.seed)
        self.stage_names = [(s.name, s.epochs) for s in stages]
        start = self.resume_position()
        if start is not None:
            generator.set_state(self.resume_state["generator"])
            self._rng_pending = True
        self.open_metrics(stages)  # open until close(): protocols' trainings log too
        self.train_stages(stages, generator, start)
        self.load_best()

    def open_metrics(self, stages: list[Stage]) -> None:
        """Start (or continue) the in-progress folder's ``metrics.jsonl`` and loggers."""
        folder = self.partial_dir
        if folder is None or not self.ranks.is_main:
            return
        state = self.resume_state
        if state is None:  # a fresh start: the folder exists before the first checkpoint
            start_partial(folder, self.cfg.as_dict())
            write_state(folder, self.state_info(stages[0], Position(), checkpointed=False))
        self.metrics = MetricsLog(folder, [c.build() for c in self.cfg.loggers])
        if state is None:
            self.metrics.open(None, None)
        else:
            self.metrics.open(int(state.get("metrics_offset", 0)), self.engine.global_step)

    def train_stages(
        self, stages: list[Stage], generator: torch.Generator, start: Position | None
    ) -> None:
        for number, stage in enumerate(stages, 1):
            if start is not None and (
                number < start.stage
                or (number == start.stage and start.epoch >= stage.epochs and not start.micro)
            ):
                continue  # finished before the interruption
            if len(stages) > 1 or stage.note:
                self.log(
                    f"stage {number}/{len(stages)} '{stage.name}': {stage.epochs} epochs, "
                    f"lr {stage.lr:.2e}, batch {stage.batch_size}, "
                    f"backbone blocks trained: {describe_blocks(stage.backbone_blocks)}"
                    + (f"; {stage.note}" if stage.note else "")
                )
            self.method.begin_stage(stage)
            resumed = start is not None and number == start.stage
            self.train_stage(stage, generator, number, resumed)

    def resume_position(self) -> Position | None:
        """The checkpoint's position, after restoring the model and method from it."""
        state = self.resume_state
        if state is None:
            return None
        load_module_state(self.backbone, state["backbone"], "backbone")
        load_module_state(self.method, state["method"], "method")
        self.log_lines[:0] = [line for line in state["log"] if line not in self.log_lines]
        self.engine.global_step = int(state.get("global_step", 0))
        self.best = state.get("best")
        position = Position(**state["position"])
        self.log(
            f"resumed from {self.partial_dir} at stage {position.stage}, "
            f"epoch {position.epoch}, step {position.step}"
        )
        return position

    def save_checkpoint(self, position: Position, stage: Stage, **state: Any) -> None:
        """Write this rank's checkpoint (and, on rank 0, ``state.json``) atomically."""
        folder = self.partial_dir
        if folder is None:
            return
        if self.ranks.is_main and not (folder / "config.json").is_file():
            start_partial(folder, self.cfg.as_dict())
        distributed.barrier()
        payload = {
            "format": FORMAT,
            "config_hash": self.cfg.config_hash(),
            "world": self.ranks.world,
            "position": position.as_dict(),
            "backbone": module_state(self.backbone),
            "method": module_state(self.method),
            "rng": rng_state(),
            "log": list(self.log_lines),
            "global_step": self.engine.global_step,
            "best": self.best,
            "metrics_offset": self.metrics.offset() if self.metrics is not None else 0,
            **state,
        }
        save_atomic(payload, rank_file(folder, self.ranks.rank))
        if self.ranks.is_main:
            write_state(folder, self.state_info(stage, position))
        checkpoint(f"checkpoint {position.stage}:{position.epoch}:{position.micro}")

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

    def state_info(
        self, stage: Stage, position: Position, checkpointed: bool = True
    ) -> dict[str, Any]:
        """What ``state.json`` says about the in-progress run."""
        cfg = self.cfg
        return {
            "run_id": self.partial_dir.name if self.partial_dir else "",
            "created": getattr(self, "created", ""),
            "config_hash": cfg.config_hash(),
            "backbone": cfg.backbone.name,
            "method": cfg.method.name,
            "dataset": cfg.dataset.name,
            "world": self.ranks.world,
            "stages": len(self.stage_names),
            "stage_name": stage.name,
            "stage_epochs": stage.epochs,
            "checkpoint": checkpointed,
            "global_step": self.engine.global_step,
            **position.as_dict(),
        }

    def log_event(self, kind: str, values: dict[str, float], **where: Any) -> None:
        if self.metrics is not None:
            self.metrics.log(
                {"event": kind, **where, "global_step": self.engine.global_step, **values}
            )

    def train_stage(
        self, stage: Stage, generator: torch.Generator, number: int = 1, resumed: bool = False
    ) -> None:
        run = self.cfg.run
        optimizer = self.build_optimizer(stage)
        if not any(group["params"] for group in optimizer.param_groups):
            # e.g. a parameter-free backbone (logmel-stats) under a method without heads
            self.log(f"stage '{stage.name}': no trainable parameters, nothing to train; skipped")
            return
        loader = self.loader("train", stage.batch_size, train=True)
        accum = run.grad_accum
        if len(loader) // accum == 0:
            raise UsageError(
                f"run.grad_accum {accum} exceeds the {len(loader)} batches of an epoch"
            )
        loop = Loop(
            name=stage.name,
            number=number,
            module=self.engine.wrap(StepModule(self.training_step, self.method, self.backbone)),
            optimizer=optimizer,
            schedule=WarmupPlateau(
                optimizer,
                run.warmup_epochs * (len(loader) // accum),
                run.plateau_patience,
                run.plateau_factor,
            ),
            scaler=self.engine.scaler(),
            source=loader,
            prepare=lambda batch: self.prepare(batch, train=True),
            epochs=stage.epochs,
            accum=accum,
            grad_clip=run.grad_clip,
        )
        first_epoch, skip = 0, 0
        state = self.resume_state or {}
        if resumed:
            optimizer.load_state_dict(state["optimizer"])
            loop.schedule.load_state_dict(state["plateau"])
            loop.scaler.load_state_dict(state["scaler"])
            position = Position(**state["position"])
            first_epoch, loop.step, skip = position.epoch, position.step, position.micro
        if self._rng_pending:  # the first stage trained after a resume
            set_rng_state(state["rng"])
            self._rng_pending = False
        for epoch in range(first_epoch, stage.epochs):
            self.backbone.train()
            self.method.train()
            sums = Accumulator(self.device)
            window = Accumulator(self.device)
            if skip:  # resumed inside this epoch: the same order, the batches done skipped
                generator.set_state(state["epoch_generator"])
                sums.load(state["sums"])
                window.load(state["window"])
            started = time.perf_counter()
            epoch_generator = generator.get_state()
            clock = self.engine.run_epoch(
                loop,
                epoch,
                generator,
                sums,
                window,
                skip=skip,
                worker_seed=worker_seed(run, number, epoch),
                after_step=self.step_checkpointer(stage, epoch, generator, epoch_generator),
            )
            skip = 0
            valid = self.validate() if self.has_valid else {}
            self.consider_best(valid, number, epoch + 1)
            # the plateau watches the validation loss when there is one (the paper recipe)
            _, _, line = self.engine.end_epoch(
                loop, epoch, sums, clock, started, valid, valid.get("valid_loss")
            )
            self.log(line)
            self.save_checkpoint(
                Position(number, epoch + 1, loop.step, 0),
                stage,
                **loop_state(loop),
                generator=generator.get_state(),
            )

    def training_step(self, batch: Batch) -> StepOutput:
        return self.method.training_step(batch, self.backbone)

    def step_checkpointer(
        self,
        stage: Stage,
        epoch: int,
        generator: torch.Generator,
        epoch_generator: Tensor,
    ) -> AfterStep | None:
        """Checkpoints inside the epoch every ``run.checkpoint_every_steps`` optimizer steps."""
        every = self.cfg.run.checkpoint_every_steps
        if not every:
            return None

        def after_step(loop: Loop, micro: int, sums: Accumulator, window: Accumulator) -> None:
            if loop.step % every or micro + 1 >= loop.steps_per_epoch * loop.accum:
                return
            self.save_checkpoint(
                Position(loop.number, epoch, loop.step, micro + 1),
                stage,
                **loop_state(loop),
                generator=generator.get_state(),
                epoch_generator=epoch_generator,
                sums=sums.state(),
                window=window.state(),
            )

        return after_step

    def fit(self, job: TrainingJob) -> TrainingResult:
        """A protocol's training (:attr:`EvalContext.train`) through the run's engine."""
        return self.engine.fit(job, self.workers, self.log)

    def prepare(self, batch: Batch, train: bool) -> Batch:
        """Waveform augmentations, the front-end, then feature augmentations."""
        wave = batch.wave
        if batch.device_class is None:
            batch.device_class = batch.device.clone()
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
        loader = self.loader(split, self.cfg.run.eval_batch_size, train=False)
        outputs, indices = [], []
        for batch in progress(loader.epoch(), desc=f"{what} {split}", total=len(loader)):
            prepared = self.prepare(batch, train=False)
            with self.engine.autocast():
                encoded = self.backbone(prepared.features)
                if what == "predicting":
                    out = torch.softmax(self.method.logits(encoded).float(), dim=-1)
                else:
                    out = encoded.embedding.float()
            outputs.append(out.float())
            indices.append(batch.index)
        local = torch.cat(outputs) if outputs else torch.zeros(0)
        index = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
        if not self.ranks.active:
            return local.cpu()
        if not outputs:  # this rank got no clips: the shape still has to match
            raise HarnessError(f"{split} split has fewer clips than processes")
        return distributed.gather_rows(local, index, len(loader.audio), self.device)

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
            train=self.fit,
        )
        metrics: dict[str, float] = {}
        tables: dict[str, str] = {}
        for protocol in self.protocols:
            result = protocol.evaluate(ctx)
            metrics.update({f"{protocol.name}/{k}": float(v) for k, v in result.metrics.items()})
            tables[protocol.name] = result.table
        return metrics, tables


def hold_out(
    clips: list[Clip], fraction: float, key: str, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """``(train, valid)``: whole groups of clips (equal ``meta[key]``; a clip without it is
    its own group), drawn in a seeded order until ``fraction`` of the clips are held out."""
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault(clip.meta.get(key) or f"clip {i}", []).append(i)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    held: list[int] = []
    for name in names:
        if len(held) >= fraction * len(clips):
            break
        held += groups[name]
    if not held or len(held) == len(clips):
        raise DataError(
            f"run.valid_fraction={fraction} leaves no training or no validation clips "
            f"({len(groups)} groups by clip metadata '{key}')"
        )
    chosen = set(held)
    return [c for i, c in enumerate(clips) if i not in chosen], [clips[i] for i in sorted(held)]


def loop_state(loop: Loop) -> dict[str, Any]:
    """What a checkpoint keeps of a loop besides the models: optimizer, schedule, scaler."""
    return {
        "optimizer": loop.optimizer.state_dict(),
        "plateau": loop.schedule.state_dict(),
        "scaler": loop.scaler.state_dict(),
    }


def worker_seed(run: RunSettings, stage: int, epoch: int) -> int:
    """The DataLoader's seed for one epoch: a function of (seed, stage, epoch) only, so a
    resumed epoch seeds its workers as the uninterrupted run did."""
    return (run.seed * 1_000_003 + stage * 10_007 + epoch) % 2**63


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


KEY_PACKAGES = ("torch", "torchaudio", "numpy", "scipy", "scikit-learn", "timm")


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for a package that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def environment(dataset_cls: type[Dataset] | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "packages": package_versions(),
        "data_generator_version": dataset_cls.generator_version if dataset_cls else None,
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
    for split in SPLIT_NAMES:
        for clip in splits.split(split):
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


def run_experiment(
    cfg: RunConfig,
    out_dir: Path,
    store: ResultStore,
    resume: str | None = None,
    resume_if_any: bool = False,
) -> RunResult:
    """Check cheaply, train, evaluate, and store one run (folder and row) as one unit.

    Training checkpoints into ``out_dir/.partial/<run id>/`` after every epoch.
    ``resume``: ``"auto"`` continues the newest interrupted run of this configuration in
    ``out_dir``, a path that one (an error when there is none); ``resume_if_any``: continue
    one if there is one, else start afresh.
    """
    started = time.perf_counter()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process tidies up
        recover(out_dir, store)
        clean_stale_cache()
    check_output_folder(out_dir)
    if store.path.exists():
        store.check_writable()
    else:
        check_output_folder(store.path.parent)
    created = datetime.now(UTC)
    config_hash = cfg.config_hash()
    partial: Partial | None = None
    if resume is not None or resume_if_any:
        partial = find_resume(out_dir, cfg.as_dict(), config_hash, resume or "auto", resume_if_any)
    experiment = Experiment(cfg)
    if partial is not None:
        run_id = partial.run_id
        created = datetime.fromisoformat(str(partial.state.get("created", created.isoformat())))
        experiment.resume_state = resume_checkpoint(partial, experiment)
    else:
        run_id = distributed_run_id(new_run_id(created, config_hash))
    experiment.partial_dir = partial_root(out_dir) / run_id
    experiment.created = created.isoformat()
    try:
        check_audio_headers(experiment.splits)
        # read (and check) every sample before the first step
        for split in ("train", "eval", "valid") if experiment.has_valid else ("train", "eval"):
            experiment.audio(split)
        experiment.setup()
        experiment.train()
        metrics, tables = experiment.evaluate()
    except BaseException:
        if experiment.ranks.is_main:
            discard_unstarted(experiment.partial_dir)
        raise
    finally:
        experiment.close()
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
        environment=environment(cfg.dataset.entry.cls),
        duration_s=round(time.perf_counter() - started, 2),
    )
    if not experiment.ranks.is_main:
        return RunResult(record, {})  # rank 0 writes the one run folder and store row
    commit_run(
        final_dir, store, record, lambda tmp: write_run_folder(tmp, record, experiment, tables)
    )
    remove_partial(experiment.partial_dir)
    return RunResult(record, tables)


def resume_checkpoint(partial: Partial, experiment: Experiment) -> dict[str, Any] | None:
    """This rank's checkpoint of ``partial``, checked against the run about to resume."""
    path = rank_file(partial.folder, experiment.ranks.rank)
    if partial.state.get("checkpoint") is False and not path.exists():
        return None  # killed before its first checkpoint: start it again, in its folder
    state = load_checkpoint(path)
    if state.get("config_hash") != experiment.cfg.config_hash():
        raise HarnessError(f"checkpoint in {partial.folder} is of another configuration")
    if state.get("world") != experiment.ranks.world:
        raise UsageError(
            f"--resume {partial.folder}: it trained in {state.get('world')} processes, "
            f"this run has {experiment.ranks.world} (use the same --nproc)"
        )
    return state


def discard_unstarted(folder: Path) -> None:
    """Remove an in-progress folder that holds no checkpoint yet (nothing to resume)."""
    if folder.is_dir() and not any(folder.glob("rank*.pt")):
        remove_partial(folder)


def distributed_run_id(run_id: str) -> str:
    """Rank 0's run id on every rank (they share one in-progress folder)."""
    if not distributed.current().active:
        return run_id
    shared = [run_id]
    torch.distributed.broadcast_object_list(shared, src=0)
    return str(shared[0])


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
    copy_training_records(experiment.partial_dir, folder)


PARTIAL_ONLY = ("config.json", "state.json")


def copy_training_records(partial: Path | None, folder: Path) -> None:
    """``metrics.jsonl`` and the loggers' files from the in-progress folder (not the
    checkpoints) into the run folder."""
    if partial is None or not partial.is_dir():
        return
    for item in partial.iterdir():
        if item.name in PARTIAL_ONLY or item.name.startswith(".") or item.suffix == ".pt":
            continue
        if item.is_dir():
            shutil.copytree(item, folder / item.name)
        else:
            shutil.copy2(item, folder / item.name)
