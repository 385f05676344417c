"""Batched DIR convolution: 64 clips x 1 s at 32 kHz with 1024-tap impulse responses.

Ours: :func:`harness.nn.impulse.convolve` (batched overlap-save real FFTs), and
the ``multidir`` augmentation's full forward pass (clip selection, IR draw,
convolution, write-back) with every clip chosen. Reference: a per-example
``scipy.signal.fftconvolve`` loop keeping the first T samples, measured in the
same run; the speed-up is stored in ``extra_info`` and printed.

scipy runs on one core, so the like-for-like comparison (asserted: ours must
not be slower) runs torch on one thread too; torch's default thread count is
measured and reported beside it. On a machine shared with other busy
processes, OpenMP's spin-waiting threads can make the default several times
slower than one thread; ``OMP_WAIT_POLICY=PASSIVE`` avoids that.

Run with ``python -m pytest tests/benchmarks/test_dir_convolution.py --benchmark-only -s``.
"""

from __future__ import annotations

import timeit

import numpy as np
import pytest
import scipy.signal
import torch

from harness.api import Batch, Task
from harness.nn.impulse import convolve
from harness_plugins.augmentations.multidir import MultiDir
from tests.benchmarks.claims import assert_claim

CLIPS, FRAMES, TAPS = 64, 32000, 1024


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    envelope = np.exp(-np.arange(TAPS) / 150.0)
    return {
        "wave": rng.standard_normal((CLIPS, FRAMES)).astype(np.float32),
        "irs": (rng.standard_normal((CLIPS, TAPS)) * envelope).astype(np.float32),
    }


def scipy_loop(wave: np.ndarray, irs: np.ndarray) -> np.ndarray:
    return np.stack(
        [scipy.signal.fftconvolve(w, h)[: w.shape[-1]] for w, h in zip(wave, irs, strict=True)]
    )


def reference_seconds(data: dict[str, np.ndarray]) -> float:
    return min(timeit.repeat(lambda: scipy_loop(data["wave"], data["irs"]), number=1, repeat=7))


def report(benchmark, name: str, reference: float) -> float:
    ratio = reference / benchmark.stats.stats.min
    benchmark.extra_info["reference_scipy_loop_s"] = reference
    benchmark.extra_info["speedup_vs_scipy_loop"] = ratio
    print(
        f"\n{name}: {ratio:.2f}x the speed of a scipy fftconvolve loop ({reference * 1e3:.1f} ms)"
    )
    return ratio


@pytest.mark.benchmark(group="dir-convolution")
def test_scipy_fftconvolve_loop(benchmark, data) -> None:
    out = benchmark(scipy_loop, data["wave"], data["irs"])
    assert out.shape == (CLIPS, FRAMES)


@pytest.fixture(params=["1-thread", "torch-default"])
def threads(request):
    before = torch.get_num_threads()
    if request.param == "1-thread":
        torch.set_num_threads(1)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.benchmark(group="dir-convolution")
def test_batched_convolution(benchmark, data, threads) -> None:
    wave, irs = torch.from_numpy(data["wave"]), torch.from_numpy(data["irs"])
    out = benchmark(convolve, wave, irs)
    reference = scipy_loop(data["wave"], data["irs"])
    assert np.abs(out.numpy() - reference).max() <= 1e-5 * np.abs(reference).max()
    ratio = report(benchmark, f"batched convolve ({threads})", reference_seconds(data))
    assert_claim(f"dir-convolution-{threads}", ratio, guard=1.0)


@pytest.mark.benchmark(group="dir-convolution")
def test_multidir_augmentation_forward(benchmark, data, threads) -> None:
    aug = MultiDir(MultiDir.Config(p=1.0, devices=["all"]))
    aug.setup(Task(classes=["x"], devices=["a"], sample_rate=32000))
    wave = torch.from_numpy(data["wave"])
    zeros = torch.zeros(CLIPS, dtype=torch.long)
    batch = Batch(wave=wave, label=zeros, device=zeros, index=torch.arange(CLIPS))
    out = benchmark(aug, wave, batch)
    assert out.shape == wave.shape and not torch.equal(out, wave)
    ratio = report(benchmark, f"multidir forward ({threads})", reference_seconds(data))
    if threads == "1-thread":
        assert ratio >= 1.0
