"""GPU throughput (issue 8); every case skips without CUDA. Run with ``benchmarks/gpu.sh``.

1. PaSST-S (``passt`` size ``base``, 1 s clips, frequency patchout 6 of 12 rows, ICL's
   cross-entropy step) training throughput in clips/s and model FLOP utilisation (MFU:
   FLOPs of forward + backward counted by ``torch.utils.flop_counter`` on one batch, per
   second, over the device's dense peak) in fp32, bf16 and bf16 + ``torch.compile``.
2. The data path in clips/s: the decoded-audio cache and decoding WAV files with
   resampling, each through the DataLoader with the run's default workers, against the
   bf16 training step.
3. AudioMAE-base MAE pretraining (mask ratio 0.8) throughput in clips/s (bf16).

Peak dense TFLOP/s per precision come from :data:`PEAK_TFLOPS` by device name, or from
``HARNESS_PEAK_TFLOPS`` (one number, used for every precision).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from harness.data.loader import Loader, resolve_workers, split_audio
from harness.registry.config import resolve
from harness.registry.plugins import load_plugins

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BATCH = 64
STEPS = 20
PEAK_TFLOPS = {
    # dense tensor-core peaks (fp32 runs as TF32 when allowed; plain fp32 much lower)
    "H200": {"fp32": 67.0, "bf16": 989.0},
    "H100": {"fp32": 67.0, "bf16": 989.0},
    "A100": {"fp32": 19.5, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "bf16": 362.0},
}


def peak_tflops(precision: str) -> float | None:
    if os.environ.get("HARNESS_PEAK_TFLOPS"):
        return float(os.environ["HARNESS_PEAK_TFLOPS"])
    name = torch.cuda.get_device_name()
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def build(backbone: dict, method: str):
    cfg = resolve(
        {"backbone": backbone, "method": {"name": method}, "dataset": {"name": "tau22-embedded"}},
        load_plugins(),
    )
    model, head = cfg.backbone.build().cuda(), cfg.method.build()
    from harness.api import Task

    task = Task([str(i) for i in range(10)], ["a"], model.sample_rate, model.time_axis)
    head.setup(model, task)
    head.cuda()
    return model, head


def batch_of(model, seconds: float = 1.0):
    from harness.api import Batch

    wave = torch.randn(BATCH, round(seconds * model.sample_rate), device="cuda") * 0.1
    label = torch.randint(0, 10, (BATCH,), device="cuda")
    batch = Batch(wave, label, torch.zeros_like(label), torch.arange(BATCH, device="cuda"))
    with torch.no_grad():
        batch.features = model.frontend().cuda().train()(wave)
    return batch


def clips_per_second(model, method, batch, precision: str) -> tuple[float, float]:
    """Training clips/s and FLOPs per clip (forward + backward) of ``method``'s step."""
    dtype = {"bf16": torch.bfloat16}.get(precision)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-4)

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = method.training_step(batch, model).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (and compilation)
        step()
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = method.training_step(batch, model).loss
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / STEPS
    return BATCH / seconds, counter.get_total_flops() / BATCH


@pytest.mark.parametrize("precision,compiled", [("fp32", False), ("bf16", False), ("bf16", True)])
@pytest.mark.benchmark(group="gpu-passt")
def test_passt_s_training_throughput(benchmark, precision, compiled):
    torch.backends.cuda.matmul.allow_tf32 = True
    model, method = build({"name": "passt", "size": "base", "s_patchout_f": 6}, "ce")
    if compiled:
        model.compile()
    model.train()
    batch = batch_of(model)
    rate, flops = benchmark.pedantic(
        clips_per_second, args=(model, method, batch, precision), rounds=1, iterations=1
    )
    peak = peak_tflops(precision)
    mfu = rate * flops / (peak * 1e12) if peak else float("nan")
    benchmark.extra_info.update({"clips_s": rate, "gflop_per_clip": flops / 1e9, "mfu": mfu})
    label = precision + (" + compile" if compiled else "")
    print(f"\nPaSST-S 1 s {label}: {rate:.0f} clips/s, {flops / 1e9:.1f} GFLOP/clip, MFU {mfu:.1%}")


@pytest.mark.parametrize("source", ["cache", "wav"])
@pytest.mark.benchmark(group="gpu-data")
def test_data_path_against_the_training_step(benchmark, source, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    from harness.data.audio_cache import cached_audio

    cfg = resolve({"dataset": {"name": "tau22-embedded", "scale": 0.5}}, load_plugins())
    splits = cfg.dataset.build().load()
    audio = split_audio(splits.train, 32000, 1.0, splits.devices)
    workers = resolve_workers(None)
    if source == "cache":
        audio = cached_audio(audio, "auto", workers)
    loader = Loader(audio, BATCH, torch.device("cuda"), drop_last=True, workers=workers)

    def epoch() -> float:
        started, n = time.perf_counter(), 0
        for batch in loader.epoch(torch.Generator().manual_seed(0)):
            n += batch.wave.shape[0]
        torch.cuda.synchronize()
        return n / (time.perf_counter() - started)

    epoch()  # starts the persistent workers
    rate = benchmark.pedantic(epoch, rounds=2, iterations=1)
    model, method = build({"name": "passt", "size": "base"}, "ce")
    train_rate, _ = clips_per_second(model.train(), method, batch_of(model), "bf16")
    benchmark.extra_info.update({"data_clips_s": rate, "train_clips_s": train_rate})
    print(
        f"\ndata path ({source}, {workers} workers): {rate:.0f} clips/s = "
        f"{rate / train_rate:.1f}x the PaSST-S bf16 step ({train_rate:.0f} clips/s)"
    )


@pytest.mark.benchmark(group="gpu-mae")
def test_audiomae_base_pretraining_throughput(benchmark):
    model, method = build({"name": "audiomae", "size": "base"}, "mae")
    model.train()
    batch = batch_of(model, seconds=10.0)
    rate, flops = benchmark.pedantic(
        clips_per_second, args=(model, method, batch, "bf16"), rounds=1, iterations=1
    )
    peak = peak_tflops("bf16")
    mfu = rate * flops / (peak * 1e12) if peak else float("nan")
    benchmark.extra_info.update({"clips_s": rate, "mfu": mfu})
    print(f"\nAudioMAE-base MAE pretraining (10 s, bf16): {rate:.0f} clips/s, MFU {mfu:.1%}")
