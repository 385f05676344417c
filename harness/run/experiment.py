"""A run from configuration to record, reading top to bottom as its data path.

:func:`run_experiment` checks cheaply (:mod:`harness.run.preflight`), builds the parts
(:mod:`harness.run.components`: data set -> loader -> augmentations -> front-end ->
backbone -> method), trains the method (:mod:`harness.run.training`, through the engine's
one trainer, checkpointing into :mod:`harness.run.checkpoints`), evaluates the protocols
(:mod:`harness.run.evaluation`) and stores the record and run folder
(:mod:`harness.run.record`) as one unit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import harness
from harness.api import Backbone, DataSplits, Method, Task
from harness.engine import distributed
from harness.engine.resume import (
    Partial,
    check_fits,
    find_resume,
    load_checkpoint,
    partial_root,
    rank_file,
    remove_partial,
)
from harness.engine.trainer import Engine
from harness.registry.config import RunConfig
from harness.results.store import (
    SAMPLES_FILE,
    ResultStore,
    RunRecord,
    commit_run,
    new_run_id,
    recover,
)
from harness.run.checkpoints import Checkpoints
from harness.run.components import (
    RunLog,
    RunParts,
    check_precision,
    hold_out,
    process_device,
    seed_everything,
)
from harness.run.evaluation import Evaluation
from harness.run.preflight import check_audio_headers, check_metrics, check_output_folder
from harness.run.record import (
    KEY_PACKAGES,
    RunResult,
    clip_predictions,
    config_lines,
    describe_parameters,
    environment,
    git_commit,
    parameter_counts,
    provenance,
    write_run_folder,
    write_samples,
)
from harness.run.training import MethodTraining
from harness.util.cache import clean_stale_cache
from harness.util.errors import HarnessError, Interrupted, UsageError, storage_error
from harness.util.faults import checkpoint
from harness.util.files import check_free_space, check_name_lengths

__all__ = [
    "KEY_PACKAGES",
    "Experiment",
    "RunResult",
    "check_metrics",
    "check_precision",
    "environment",
    "git_commit",
    "hold_out",
    "run_experiment",
    "seed_everything",
    "write_run_folder",
]


class Experiment:
    """One configured run: its parts, the engine that trains and infers, the method's
    training, the evaluation, and the in-progress folder."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.ranks = distributed.env_ranks()
        self.device = process_device(cfg.run.device, self.ranks)
        check_precision(self.device, cfg.run.precision)
        self.log = RunLog(self.ranks.is_main)
        self.parts = RunParts(cfg, self.ranks, self.device, self.log)
        if cfg.run.log_samples and not self.parts.method.supervised:
            raise UsageError(
                f"--log-samples needs class probabilities, and method '{cfg.method.name}' "
                "trains no classifier"
            )
        self.checkpoints = Checkpoints(cfg, self.ranks, self.log, self.global_step)
        self.engine = Engine(
            self.device,
            self.ranks,
            cfg.run.precision,
            cfg.run.sync_every,
            self.checkpoints.log_event,
            workers=self.parts.workers,
            log_every=cfg.run.log_every,
        )
        """The one trainer and inference call: the method's stages and protocols' trainings."""
        self.evaluation = Evaluation(self.parts, self.engine, lambda: self.partial_dir)
        self.training = MethodTraining(
            self.parts, self.engine, self.checkpoints, self.evaluation.validate
        )

    def global_step(self) -> int:
        return self.engine.global_step

    # -- what the run's parts are ---------------------------------------------

    @property
    def backbone(self) -> Backbone:
        return self.parts.backbone

    @property
    def method(self) -> Method:
        return self.parts.method

    @property
    def splits(self) -> DataSplits:
        return self.parts.splits

    @property
    def task(self) -> Task:
        return self.parts.task

    @property
    def has_valid(self) -> bool:
        return self.parts.has_valid

    @property
    def log_lines(self) -> list[str]:
        return self.log.lines

    @property
    def partial_dir(self) -> Path | None:
        """The in-progress folder checkpoints go to (None: no checkpoints)."""
        return self.checkpoints.folder

    @partial_dir.setter
    def partial_dir(self, folder: Path | None) -> None:
        self.checkpoints.folder = folder

    # -- the run, step by step ------------------------------------------------

    def setup(self) -> None:
        self.parts.setup()
        for line in config_lines(self.cfg):
            self.log(line)
        self.log(describe_parameters(self.parameter_counts()))

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Total and trainable parameters of the backbone, the method's own, and both."""
        return parameter_counts({"backbone": self.backbone, "method": self.method})

    def train(self) -> None:
        self.training.train()

    def predict(self, split: str) -> Tensor:
        return self.evaluation.predict(split)

    def embed(self, split: str) -> Tensor:
        return self.evaluation.embeddings(split)

    def evaluate(self) -> tuple[dict[str, float], dict[str, str]]:
        return self.evaluation.evaluate()

    def evaluate_ema(self) -> tuple[dict[str, float], dict[str, str]]:
        """Every protocol again on the moving average of the weights (``run.ema``): metrics
        and tables named ``ema/<protocol>...``; the live weights are back afterwards."""
        ema = self.training.ema
        if ema is None:
            return {}, {}
        self.log(f"evaluating the moving average of the weights (decay {ema.decay})")
        with ema.swapped_in():
            metrics, tables = Evaluation(
                self.parts, self.engine, lambda: self.partial_dir, prefix="ema-"
            ).evaluate()
        return (
            {f"ema/{key}": value for key, value in metrics.items()},
            {f"ema/{key}": table for key, table in tables.items()},
        )

    def samples(self) -> list[dict[str, Any]]:
        """Per-clip predictions of the evaluation split (``--log-samples``)."""
        return clip_predictions(self.parts.splits, self.evaluation.predict("eval"))

    def close(self) -> None:
        self.checkpoints.close()
        self.parts.close()
        distributed.close()


def run_experiment(
    cfg: RunConfig,
    out_dir: Path,
    store: ResultStore,
    resume: str | None = None,
    resume_if_any: bool = False,
    command: Sequence[str] | None = None,
) -> RunResult:
    """Check cheaply, train, evaluate, and store one run (folder and row) as one unit.

    Training checkpoints into ``out_dir/.partial/<run id>/`` after every epoch.
    ``resume``: ``"auto"`` continues the newest interrupted run of this configuration in
    ``out_dir``, a path that one (an error when there is none); ``resume_if_any``: continue
    one if there is one, else start afresh. ``command``: the command line recorded in the
    run's provenance (default: this process's).
    """
    started = time.perf_counter()
    check_name_lengths(out_dir.absolute(), "output folder")
    check_name_lengths(store.path.absolute(), "results store")
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
    check_free_space(out_dir, run_folder_bytes(experiment), "run folder and checkpoints in")
    if partial is not None:
        run_id = partial.run_id
        created = datetime.fromisoformat(str(partial.state.get("created", created.isoformat())))
        experiment.checkpoints.resume_state = resume_checkpoint(partial, experiment)
    else:
        run_id = distributed_run_id(new_run_id(created, config_hash))
    experiment.partial_dir = partial_root(out_dir) / run_id
    experiment.checkpoints.created = created.isoformat()
    try:
        check_audio_headers(experiment.splits, skip=experiment.parts.file_free_splits())
        # read (and check) every sample before the first step
        for split in ("train", "eval", "valid") if experiment.has_valid else ("train", "eval"):
            experiment.parts.audio(split)
        experiment.setup()
        experiment.train()
        metrics, tables = experiment.evaluate()
        metrics |= experiment.training.health.metrics()
        ema_metrics, ema_tables = experiment.evaluate_ema()
        metrics, tables = metrics | ema_metrics, tables | ema_tables
        samples = experiment.samples() if cfg.run.log_samples else None
        parameters = experiment.parameter_counts()
        experiment.checkpoints.log_results(metrics)
    except BaseException as err:
        with contextlib.suppress(OSError):  # a full disk while closing must not hide err
            experiment.close()
        if experiment.ranks.is_main:
            discard_unstarted(experiment.partial_dir)
        keep_training_or_raise(experiment, err)
        raise
    try:
        experiment.close()
    except BaseException as err:
        keep_training_or_raise(experiment, err)
        raise
    try:
        check_metrics(metrics)
    except HarnessError:  # a resumed run would evaluate to the same metrics: nothing to keep
        if experiment.ranks.is_main:
            remove_partial(experiment.partial_dir)
        raise
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
        environment=environment(cfg.dataset.entry.cls)
        | provenance(command)
        | {"parameters": parameters, "classes": len(experiment.splits.classes)}
        | experiment.parts.train_origin(),
        duration_s=round(time.perf_counter() - started, 2),
    )
    if not experiment.ranks.is_main:
        return RunResult(record, {})  # rank 0 writes the one run folder and store row
    extra = {"ema.pt": experiment.training.ema.weights()} if experiment.training.ema else {}

    def write(tmp: Path) -> None:
        write_run_folder(tmp, record, experiment, tables, extra_weights=extra)
        if samples is not None:
            write_samples(tmp / SAMPLES_FILE, samples)

    try:
        commit_run(final_dir, store, record, write)
    except BaseException as err:  # nothing stored: a resume evaluates and stores it again
        keep_training_or_raise(experiment, err)
        raise
    checkpoint("renamed")  # the kill suite's stage: stored and in place, .partial not yet removed
    remove_partial(experiment.partial_dir)
    return RunResult(record, tables)


def run_folder_bytes(experiment: Experiment) -> int:
    """What a run writes to its output folder, about: its weights four times (the stored
    backbone, and a checkpoint's weights with two optimizer moments per parameter)."""
    tensors = [
        *experiment.backbone.parameters(),
        *experiment.backbone.buffers(),
        *experiment.method.parameters(),
    ]
    return 4 * sum(t.numel() * t.element_size() for t in tensors)


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
    check_fits(path, state["backbone"]["state_dict"], experiment.backbone, "backbone")
    return state


def keep_training_or_raise(experiment: Experiment, err: BaseException) -> None:
    """Re-raise a user-facing failure (a :class:`HarnessError`, or a full or read-only disk)
    as one line saying how to continue when its training is kept in ``.partial``; return
    for anything else (a bug, Ctrl-C), which the caller re-raises as it is."""
    failure = err if isinstance(err, HarnessError) else storage_error(err)
    if failure is None or isinstance(failure, Interrupted):
        return
    if experiment.ranks.is_main and experiment.partial_dir.is_dir():
        raise type(failure)(
            f"{failure} (its training is kept: continue it with --resume {experiment.partial_dir})"
        ) from None
    if failure is not err:
        raise failure from None


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
