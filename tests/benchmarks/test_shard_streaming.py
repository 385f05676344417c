"""Streaming from WebDataset shards (issue 22): throughput and memory.

1. One shuffled epoch (batches of 32, CPU time of the reading process, no workers) from
   local shards vs the decoded-audio cache vs decoding the WAV files with resampling
   (44.1 -> 32 kHz), in clips/s. The README's ratios are asserted on an idle machine
   (``claims.py``); the guards on a loaded one: shards faster than decoding, and at least a
   quarter of the cache's speed (both read int16 rows; shards add tar parsing, a CRC-32 and
   the shuffle buffer).
2. Peak RSS (``/usr/bin/time -f %M``, the largest process) of a process streaming one epoch
   with 2 workers from 4x as many shards (same clips per shard, same shuffle buffer) is at
   most 1.25x that from the smaller set: nothing grows with the shard count.

Run with ``python -m pytest tests/benchmarks/test_shard_streaming.py --benchmark-only -s``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip
from harness.data.audio_cache import cached_audio
from harness.data.loader import ClipAudio, Loader, TensorWaves, split_audio
from harness.data.shards import ShardLoader, read_manifest, write_shards
from tests.benchmarks.claims import assert_claim

CPU = torch.device("cpu")
MAX_MEMORY_RATIO = 1.25
FILE_RATE, RATE, CLIPS = 44100, 32000, 384


def write_wavs(folder: Path) -> list[Clip]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clips = []
    for i in range(CLIPS):
        path = folder / f"clip{i}.wav"
        sf.write(path, (0.5 * rng.uniform(-1, 1, FILE_RATE)).astype(np.float32), FILE_RATE)
        clips.append(Clip(path, i % 10, "ab"[i % 2]))
    return clips


def epoch_rate(loader: Loader | ShardLoader) -> float:
    """Clips per CPU second of one shuffled epoch."""
    started, clips = time.process_time(), 0
    for batch in loader.epoch(torch.Generator().manual_seed(0)):
        clips += batch.wave.shape[0]
    return clips / (time.process_time() - started)


@pytest.mark.benchmark(group="shards")
def test_streaming_from_shards_vs_cache_vs_decoding(benchmark, tmp_path):
    clips = write_wavs(tmp_path / "wav")
    decoded = split_audio(clips, RATE, 1.0, ["a", "b"])
    cached = cached_audio(decoded, str(tmp_path / "cache"))
    write_shards(decoded, tmp_path / "shards", 64)
    shards = read_manifest(str(tmp_path / "shards"))
    raw_rate = epoch_rate(Loader(decoded, 32, CPU, drop_last=True))
    cache_rate = max(epoch_rate(Loader(cached, 32, CPU, drop_last=True)) for _ in range(3))
    loader = ShardLoader(shards, decoded, 32, CPU, buffer=1000)
    shard_rate = benchmark.pedantic(epoch_rate, args=(loader,), rounds=3)
    shard_rate = max(shard_rate, epoch_rate(loader))
    benchmark.extra_info.update(
        {"raw_clips_s": raw_rate, "cache_clips_s": cache_rate, "shard_clips_s": shard_rate}
    )
    print(
        f"\none epoch of {CLIPS} clips of 1 s at 32 kHz: WAV decoding + resampling "
        f"{raw_rate:.0f} clips/s, decoded cache {cache_rate:.0f} clips/s, shards "
        f"{shard_rate:.0f} clips/s = {shard_rate / raw_rate:.1f}x decoding, "
        f"{shard_rate / cache_rate:.2f}x the cache"
    )
    assert_claim("shards-vs-wav-decoding", shard_rate / raw_rate, guard=1.0)
    assert_claim("shards-vs-cache", shard_rate / cache_rate, guard=0.25)


STREAM = """
import sys, torch
from harness.data.loader import ClipAudio
from harness.data.shards import ShardLoader, read_manifest
shards = read_manifest(sys.argv[1])
labels = torch.zeros(shards.clips, dtype=torch.long)
audio = ClipAudio([], torch.zeros(shards.clips, 1), labels, labels, 16000)
loader = ShardLoader(shards, audio, 32, torch.device("cpu"), workers=2, buffer=256)
print(sum(b.wave.shape[0] for b in loader.epoch(torch.Generator().manual_seed(0))))
"""


def write_noise_shards(folder: Path, count: int) -> None:
    """``count`` clips of 1 s at 16 kHz, 64 per shard (no audio files needed)."""
    wave = torch.from_numpy(np.random.default_rng(count).uniform(-1, 1, (count, 16000)))
    clips = [Clip(Path(f"clip{i}.wav"), i % 10) for i in range(count)]
    none = torch.zeros(count)
    audio = ClipAudio(clips, TensorWaves(wave.float()), none, none, 16000)
    write_shards(audio, folder, 64)


def stream_peak_mb(folder: Path) -> tuple[float, int]:
    done = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS %M", sys.executable, "-c", STREAM, str(folder)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return int(re.findall(r"MAXRSS (\d+)", done.stderr)[-1]) / 1024, int(done.stdout.split()[-1])


@pytest.mark.benchmark(group="shards")
@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs GNU time")
def test_peak_memory_is_flat_when_the_shard_count_grows_4x(benchmark, tmp_path):
    write_noise_shards(tmp_path / "small", 1024)
    write_noise_shards(tmp_path / "large", 4096)
    small, small_clips = stream_peak_mb(tmp_path / "small")
    large, large_clips = benchmark.pedantic(
        stream_peak_mb, args=(tmp_path / "large",), rounds=1, iterations=1
    )
    assert (small_clips, large_clips) == (1024, 4096)
    ratio = large / small
    benchmark.extra_info.update({"peak_mb_16_shards": small, "peak_mb_64_shards": large})
    print(f"\npeak RSS streaming 16 shards {small:.0f} MB, 64 shards {large:.0f} MB = {ratio:.2f}x")
    assert ratio <= MAX_MEMORY_RATIO
