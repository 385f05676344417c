"""Backbone training-step speed and memory.

* Throughput of one training step (forward, classification loss, backward, gradients
  released; no optimiser step) for every registered backbone at ``tiny`` and ``base``,
  batch 32 and 2 of 1 s clips.
* PaSST against the reference implementation (``hear21passt``'s ``PaSST``, explicit
  softmax attention) at identical configurations: same architecture, weights, input and
  patchout. The reference step runs in pytest-benchmark's untimed ``setup`` before every
  timed round of ours, so both are measured interleaved under the same machine load; the
  speed-up (reference min / ours min) is stored in ``extra_info`` and printed.
* The patchout speed-up: our step without patchout against ours with it, interleaved alike.
* Peak memory per step: what a step needs on top of the weights (activations, gradients,
  temporaries). CUDA: ``torch.cuda.max_memory_allocated`` above the memory held
  before the step. CPU: each measurement runs in a fresh process with a fixed glibc mmap
  threshold (``MALLOC_MMAP_THRESHOLD_=65536``, so freed tensors go back to the OS), after
  one warm-up step; the peak resident set is reset through ``/proc/self/clear_refs`` and
  the step's peak (``VmHWM``) minus the resident set before it is reported (Linux only).

Run with ``python -m pytest tests/benchmarks/test_backbone_speed.py --benchmark-only -s``;
``HARNESS_BENCH_THREADS=N`` pins torch to N CPU threads (steadier ratios on a shared machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.registry.config import build_dataclass
from harness.registry.plugins import load_plugins
from harness_plugins.backbones.passt import SIZES, PaSST
from tests.benchmarks.claims import CLAIMS, assert_claim

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if int(os.environ.get("HARNESS_BENCH_THREADS", "0")) > 0:
    torch.set_num_threads(int(os.environ["HARNESS_BENCH_THREADS"]))
CLASSES = 10


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


# -- throughput per family -----------------------------------------------------------

REGISTRY = load_plugins()["backbone"]
THROUGHPUT_BATCH = {"tiny": 32, "base": 2}


def family_cases() -> list[tuple[str, str]]:
    cases = []
    for entry in REGISTRY:
        hint = typing.get_type_hints(entry.cls.Config).get("size")
        sizes = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
        cases += [(entry.name, size) for size in THROUGHPUT_BATCH if size in sizes]
    return cases


def classifier_step(model: nn.Module, head: nn.Module, features: torch.Tensor) -> Callable:
    labels = torch.arange(features.shape[0], device=features.device) % CLASSES

    def step() -> None:
        F.cross_entropy(head(model(features)), labels).backward()
        model.zero_grad(set_to_none=True)  # between steps only the weights are held
        head.zero_grad(set_to_none=True)
        synchronize()

    return step


@pytest.mark.parametrize(("name", "size"), family_cases(), ids=lambda v: str(v))
def test_training_step_throughput(benchmark, name: str, size: str) -> None:
    cls = REGISTRY.get(name).cls
    torch.manual_seed(0)
    model = cls(build_dataclass(cls.Config, {"size": size}, "backbone")).to(DEVICE).train()
    batch = THROUGHPUT_BATCH[size]
    wave = torch.randn(batch, model.sample_rate, device=DEVICE) * 0.1
    with torch.no_grad():
        features = model.frontend().to(DEVICE).eval()(wave)
    step = classifier_step(model, model.build_head(CLASSES).to(DEVICE), features)
    benchmark.group = f"throughput-{size}"
    benchmark.pedantic(step, rounds=10 if size == "tiny" else 3, warmup_rounds=1)
    clips_per_s = batch / benchmark.stats.stats.min
    benchmark.extra_info.update(batch=batch, clip_seconds=1.0, clips_per_s=clips_per_s)
    print(f"\n{name} {size}: {clips_per_s:.1f} clips/s (batch {batch} x 1 s)")


# -- PaSST against hear21passt ---------------------------------------------------------


@dataclass(frozen=True)
class StepConfig:
    size: str
    frames: int
    """Spectrogram frames per clip (100 per second)."""
    batch: int
    s_patchout_t: int = 0
    s_patchout_f: int = 0

    @property
    def table_frames(self) -> int:
        return SIZES[self.size].input_tdim

    def without_patchout(self) -> StepConfig:
        return StepConfig(self.size, self.frames, self.batch)


COMPARED = {
    "base-10s": StepConfig("base", 998, 1),
    "base-10s-patchout-t40-f4": StepConfig("base", 998, 1, s_patchout_t=40, s_patchout_f=4),
    "base-1s-patchout-f6": StepConfig("base", 100, 8, s_patchout_f=6),
    "tiny-1s-patchout-f6": StepConfig("tiny", 100, 32, s_patchout_f=6),
}
PATCHOUT = ["base-10s-patchout-t40-f4", "base-1s-patchout-f6", "tiny-1s-patchout-f6"]


def rounds(config: StepConfig) -> int:
    return 10 if config.size == "tiny" else 5


def passt_step(config: StepConfig, reference: bool) -> Callable[[], None]:
    """One seeded training step of ours or the reference, with identical weights."""
    torch.manual_seed(0)
    patchout = {"s_patchout_t": config.s_patchout_t, "s_patchout_f": config.s_patchout_f}
    ours = PaSST(PaSST.Config(size=config.size, input_tdim=config.table_frames, **patchout))
    head = ours.build_head(CLASSES)
    if reference:
        model = reference_passt(config, patchout)
        model.load_state_dict(ours.state_dict() | head.state_dict())
        model.to(DEVICE).train()
        features = spectrogram(config)
        labels = torch.arange(config.batch, device=DEVICE) % CLASSES

        def step() -> None:
            F.cross_entropy(model(features)[0], labels).backward()
            model.zero_grad(set_to_none=True)
            synchronize()

        return step
    ours.to(DEVICE).train()
    return classifier_step(ours, head.to(DEVICE), spectrogram(config))


def reference_passt(config: StepConfig, patchout: dict[str, int]) -> nn.Module:
    passt = pytest.importorskip("hear21passt.models.passt")
    passt.first_RUN = False
    arch = SIZES[config.size]
    return passt.PaSST(
        img_size=(128, config.table_frames),
        patch_size=16,
        stride=10,
        in_chans=1,
        num_classes=CLASSES,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        distilled=True,
        **patchout,
    )


def spectrogram(config: StepConfig) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(config.batch, 1, 128, config.frames, generator=generator).to(DEVICE)


def interleaved(benchmark, ours: Callable, other: Callable, rounds: int) -> list[float]:
    """Benchmark ``ours``; time ``other`` in the untimed setup before each round."""
    other_times: list[float] = []

    def setup() -> None:
        started = time.perf_counter()
        other()
        other_times.append(time.perf_counter() - started)

    benchmark.pedantic(ours, setup=setup, rounds=rounds, warmup_rounds=1)
    return other_times


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(COMPARED))
def test_passt_step_vs_hear21passt(benchmark, name: str) -> None:
    config = COMPARED[name]
    reference_step = passt_step(config, reference=True)
    our_step = passt_step(config, reference=False)
    benchmark.group = f"passt-vs-hear21passt-{name}"
    reference_times = interleaved(benchmark, our_step, reference_step, rounds(config))
    ratio = min(reference_times) / benchmark.stats.stats.min
    benchmark.extra_info.update(
        config=config.__dict__, reference_min_s=min(reference_times), speedup_vs_hear21passt=ratio
    )
    print(f"\n{name}: {ratio:.2f}x faster than hear21passt (min {min(reference_times):.3f} s)")
    assert_claim(f"passt-vs-hear21passt-{name}", ratio, guard=0.9 if "patchout" in name else 1.0)


@pytest.mark.parametrize("name", PATCHOUT)
def test_patchout_speedup(benchmark, name: str) -> None:
    config = COMPARED[name]
    with_patchout = passt_step(config, reference=False)
    without = passt_step(config.without_patchout(), reference=False)
    benchmark.group = f"patchout-{name}"
    without_times = interleaved(benchmark, with_patchout, without, rounds(config))
    ratio = min(without_times) / benchmark.stats.stats.min
    benchmark.extra_info.update(config=config.__dict__, no_patchout_min_s=min(without_times))
    benchmark.extra_info["patchout_speedup"] = ratio
    print(f"\n{name}: patchout makes the step {ratio:.2f}x faster")
    assert_claim(f"patchout-{name}", ratio, guard=1.2)


# -- peak memory per step --------------------------------------------------------------


def step_peak_mb(name: str, reference: bool) -> float:
    """Peak memory of one steady-state training step, in MiB (see the module docstring)."""
    if DEVICE.type == "cuda":
        step = passt_step(COMPARED[name], reference)
        step()
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return (torch.cuda.max_memory_allocated() - held) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("CPU peak memory is measured through /proc (Linux only)")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    impl = "reference" if reference else "ours"
    command = [sys.executable, "-m", "tests.benchmarks.test_backbone_speed", name, impl]
    root = Path(__file__).resolve().parents[2]  # where `tests` is importable
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_step_peak_mb(name: str, reference: bool) -> float:
    """In a fresh process: warm up, reset the peak RSS, run one step, return its growth."""
    step = passt_step(COMPARED[name], reference)
    step()
    Path("/proc/self/clear_refs").write_text("5")
    before = proc_status_kib("VmRSS")
    step()
    return (proc_status_kib("VmHWM") - before) / 1024


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["base-10s", "base-10s-patchout-t40-f4", "tiny-1s-patchout-f6"])
def test_peak_memory_per_step(benchmark, name: str) -> None:
    peaks: dict[str, float] = {}

    def measure() -> None:
        peaks["ours"] = step_peak_mb(name, reference=False)
        peaks["reference"] = step_peak_mb(name, reference=True)

    benchmark.group = "peak-memory"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = peaks["reference"] / peaks["ours"]
    benchmark.extra_info.update(
        device=DEVICE.type,
        peak_mb_ours=peaks["ours"],
        peak_mb_hear21passt=peaks["reference"],
        memory_ratio=ratio,
    )
    print(
        f"\n{name} peak memory per step ({DEVICE.type}): ours {peaks['ours']:.0f} MiB, "
        f"hear21passt {peaks['reference']:.0f} MiB ({ratio:.2f}x)"
    )
    if f"memory-{name}" in CLAIMS:  # tiny: no memory claim in the README
        assert_claim(f"memory-{name}", ratio, guard=1.0)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    print(cpu_step_peak_mb(sys.argv[1], reference=sys.argv[2] == "reference"))
