"""Memory and data throughput at scale (issue 8): the data path does not grow with the data.

1. Peak resident memory of a whole 1-epoch ``harness run`` (``/usr/bin/time -f %M``: the
   largest process, DataLoader workers included) at ``dataset.scale=4`` is at most 1.25x
   that at ``dataset.scale=1``. The data set is generated before each measured run; the
   measured run builds the decoded-audio cache, trains one epoch and evaluates.
2. One epoch of data (every train clip, read in batches of 32 through the DataLoader in
   this process) from the decoded-audio cache is at least 10x faster than decoding the
   WAV files and resampling them (44.1 -> 32 kHz), in CPU time of this process.

Run with ``python -m pytest tests/benchmarks/test_data_scale.py --benchmark-only -s``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.data.audio_cache import cached_audio
from harness.data.loader import Loader, split_audio
from harness.registry.config import resolve
from harness.registry.plugins import load_plugins

MAX_MEMORY_RATIO = 1.25
MIN_SPEEDUP = 10.0
RUN = ["--method", "ce", "--aug", "none", "--epochs", "1", "--device", "cpu"]


def peak_rss_mb(args: list[str], env: dict) -> float:
    """Peak RSS in MB of ``harness`` run with ``args`` (GNU time, else getrusage)."""
    command = [sys.executable, "-m", "harness", *args]
    if Path("/usr/bin/time").exists():
        done = subprocess.run(
            ["/usr/bin/time", "-f", "MAXRSS %M", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return int(re.findall(r"MAXRSS (\d+)", done.stderr)[-1]) / 1024
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024


def generate(scale: int, env: dict) -> None:
    """Write the embedded data set at ``scale`` (not part of the measured run)."""
    code = (
        "from harness.registry.plugins import load_plugins; "
        "from harness.registry.config import resolve;"
        f"resolve({{'dataset': {{'name': 'tau22-embedded', 'scale': {scale}}}}}, "
        "load_plugins()).dataset.build().load()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=1200)


@pytest.mark.benchmark(group="scale")
def test_peak_memory_does_not_grow_with_the_data(benchmark, tmp_path):
    env = {**os.environ, "HARNESS_PROGRESS": "0", "HARNESS_CACHE": str(tmp_path / "cache")}
    peaks = {}
    for scale in (1, 4):
        generate(scale, env)
        args = ["run", *RUN, "--set", f"dataset.scale={scale}", "--out", str(tmp_path / "runs")]
        if scale == 4:
            peaks[scale] = benchmark.pedantic(peak_rss_mb, args=(args, env), rounds=1, iterations=1)
        else:
            peaks[scale] = peak_rss_mb(args, env)
        shutil.rmtree(tmp_path / "cache" / "audio")
    ratio = peaks[4] / peaks[1]
    benchmark.extra_info.update({"peak_mb_scale1": peaks[1], "peak_mb_scale4": peaks[4]})
    print(f"\npeak RSS: scale 1 {peaks[1]:.0f} MB, scale 4 {peaks[4]:.0f} MB = {ratio:.2f}x")
    assert ratio <= MAX_MEMORY_RATIO


def epoch_cpu_seconds(loader: Loader) -> tuple[float, int]:
    started, clips = time.process_time(), 0
    for batch in loader.epoch(torch.Generator().manual_seed(0)):
        clips += batch.wave.shape[0]
    return time.process_time() - started, clips


@pytest.mark.benchmark(group="scale")
def test_cached_epoch_is_much_faster_than_decoding(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    cfg = resolve({"dataset": {"name": "tau22-embedded", "scale": 0.25}}, load_plugins())
    splits = cfg.dataset.build().load()
    decoded = split_audio(splits.train, 32000, 1.0, splits.devices)
    cached = cached_audio(decoded, "auto")
    cpu = torch.device("cpu")
    decode_s, n = epoch_cpu_seconds(Loader(decoded, 32, cpu, drop_last=True))
    cache_s, _ = benchmark.pedantic(
        epoch_cpu_seconds, args=(Loader(cached, 32, cpu, drop_last=True),), rounds=3
    )
    cache_s = min(epoch_cpu_seconds(Loader(cached, 32, cpu, drop_last=True))[0], cache_s)
    speedup = decode_s / cache_s
    benchmark.extra_info.update({"decode_clips_s": n / decode_s, "cache_clips_s": n / cache_s})
    print(
        f"\nepoch of {n} clips: decoding WAVs + resampling {n / decode_s:.0f} clips/s, "
        f"decoded cache {n / cache_s:.0f} clips/s = {speedup:.1f}x"
    )
    assert speedup >= MIN_SPEEDUP
