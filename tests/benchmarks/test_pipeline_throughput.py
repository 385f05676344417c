"""The data pipeline keeps up with training: clips/s of the pipeline vs the model's step.

Pipeline, per batch of 32 clips: read the WAV files and resample 44.1 -> 32 kHz (the
runner does this once per run and keeps the waveforms in memory), then on every step
multi-angle DIR convolution with the study's defaults (probability 0.6 for device-a
clips, 62.5 % of the training data), PaSST's mel front-end (training mode, with
its frequency-cutoff jitter) and SpecAugment. Reference, measured in the same run: one
training step (forward, ICL loss, backward, Adam) of the default PaSST on the same
batch. Reported: the per-step pipeline, the first epoch (reading every batch) and the
average over a 10-epoch run, each as a multiple of the training step's throughput.
Asserted: the 10-epoch average is at least 3x against PaSST ``small`` (see
``MINIMUM_RATIO`` for ``tiny``). Times are CPU time of this process
(``time.process_time``), so other busy processes on a shared machine do not skew the
ratio; the pipeline and the model run one after the other in the same process.

Run with ``python -m pytest tests/benchmarks/test_pipeline_throughput.py --benchmark-only -s``.
"""

from __future__ import annotations

import time
import timeit

import pytest
import torch

from harness.api import Batch, Task
from harness.data.loader import load_clips
from harness.registry.config import resolve
from harness.registry.plugins import load_plugins
from tests.benchmarks.claims import assert_claim

BATCH = 32
MINIMUM_RATIO = {"small": 3.0, "tiny": 1.0}
"""3x is asserted against PaSST ``small``. Against ``tiny`` (0.37M parameters, the CPU
default) the mel front-end alone costs about 45 % of a training step (measured 2026-12-01:
1.4x and 2.1x in two idle runs; 3.0x in an earlier session), so the guard there is that the
pipeline keeps up with training (1x)."""

DEVICES = ["a", "b", "c", "s1", "s2", "s3"]


@pytest.fixture(scope="module", params=["tiny", "small"])
def setup(request, tmp_path_factory):
    import os

    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    plugins = load_plugins()
    cfg = resolve(
        {
            "method": {"name": "icl"},
            "backbone": {"name": "passt", "size": request.param},
            "aug": {
                "names": ["multidir", "specaugment"],
                "multidir": {"p": 1.0, "devices": ["all"]},
            },
            "dataset": {"name": "tau22-embedded", "scale": 0.1},
        },
        plugins,
    )
    splits = cfg.dataset.build().load()
    backbone = cfg.backbone.build()
    task = Task(splits.classes, splits.devices, backbone.sample_rate, backbone.time_axis)
    frontend = backbone.frontend().train()
    dir_aug, spec_aug = (a.build() for a in cfg.augs)
    for aug in (dir_aug, spec_aug):
        aug.setup(task)
    method = cfg.method.build()
    method.setup(backbone, task)
    optimizer = torch.optim.Adam([*backbone.parameters(), *method.parameters()], lr=1e-3)
    return {
        "size": request.param,
        "clips": splits.train[:BATCH],
        "splits": splits,
        "backbone": backbone.train(),
        "frontend": frontend,
        "augs": (dir_aug, spec_aug),
        "method": method,
        "optimizer": optimizer,
    }


def load(s) -> Batch:
    """Read and resample a batch of WAV files (the runner does this once per run)."""
    audio = load_clips(s["clips"], 32000, 1.0, s["splits"].devices, desc="bench")
    return Batch(audio.wave, audio.labels, audio.devices, torch.arange(len(audio)))


def transform(s, batch: Batch) -> Batch:
    """What every training step does: DIR convolution, the mel front-end, SpecAugment."""
    dir_aug, spec_aug = s["augs"]
    wave = dir_aug(batch.wave, batch)
    with torch.no_grad():
        features = s["frontend"](wave)
    batch.features = spec_aug(features, batch)
    return batch


def train_step(s, batch: Batch) -> None:
    output = s["method"].training_step(batch, s["backbone"])
    s["optimizer"].zero_grad()
    output.loss.backward()
    s["optimizer"].step()


def best_of(fn, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat, timer=time.process_time))


@pytest.mark.benchmark(group="pipeline", timer=time.process_time)
def test_pipeline_keeps_up_with_training(benchmark, setup) -> None:
    batch = load(setup)
    benchmark(transform, setup, batch)
    assert batch.features.shape[0] == BATCH
    per_step = benchmark.stats.stats.min
    loading = best_of(lambda: load(setup), repeat=3)
    step = best_of(lambda: train_step(setup, batch))
    epochs = 10
    cold = per_step + loading
    averaged = per_step + loading / epochs
    info = {
        "train_step_s": step,
        "transform_s": per_step,
        "load_resample_s": loading,
        "warm_vs_train": step / per_step,
        "first_epoch_vs_train": step / cold,
        "ten_epoch_average_vs_train": step / averaged,
    }
    benchmark.extra_info.update(info)
    print(
        f"\npasst {setup['size']}: training step {BATCH / step:.0f} clips/s; "
        f"pipeline per step (DIR, mel, SpecAugment) "
        f"{BATCH / per_step:.0f} clips/s = {step / per_step:.1f}x; with reading and resampling "
        f"every batch (first epoch) {step / cold:.1f}x; averaged over {epochs} epochs "
        f"{step / averaged:.1f}x"
    )
    ratio = step / averaged
    assert_claim(f"pipeline-vs-step-{setup['size']}", ratio, guard=MINIMUM_RATIO[setup["size"]])
