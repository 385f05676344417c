"""Waveform sources, samplers and loaders (harness.data.loader) against hand-worked examples."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip, FeatureData
from harness.data import loader as data_module
from harness.data.loader import (
    ClipAudio,
    FeatureLoader,
    OrderSampler,
    TensorWaves,
    batches,
    device_indices,
    ignore_job_signals,
    load_clips,
    num_batches,
)

CPU = torch.device("cpu")


def test_indexing_a_source_gives_a_lazy_subset_in_that_order():
    source = TensorWaves(torch.arange(12, dtype=torch.float32).reshape(4, 3))
    picked = source[torch.tensor([True, False, True, True])]
    assert len(picked) == 3 and picked.length == 3 and picked.shape == (3, 3)
    assert picked.rows.dtype == np.int64
    assert [picked.read(i)[0] for i in range(3)] == [0.0, 6.0, 9.0]
    one = source[2]  # a single index is a subset of one clip
    assert len(one) == 1 and one.read(0).tolist() == [6.0, 7.0, 8.0]
    nested = picked[[2, 0]]
    assert [nested.read(i)[0] for i in range(2)] == [9.0, 0.0]


def test_device_indices_are_longs_with_minus_one_for_unknown_devices():
    clips = [Clip("a.wav", 0, "b"), Clip("b.wav", 0, "x"), Clip("c.wav", 0, "a")]
    indices = device_indices(clips, ["a", "b"])
    assert indices.dtype == torch.long and indices.tolist() == [1, -1, 0]


def test_the_sampler_defaults_to_the_whole_batch_of_one_process():
    sampler = OrderSampler(5, 2, drop_last=False)
    sampler.start_pass(None, 0)
    assert list(sampler) == [[0, 1], [2, 3], [4]] and len(sampler) == 3


def test_feature_batches_follow_drop_last_and_each_ranks_share():
    data = FeatureData(torch.arange(10.0).unsqueeze(1), torch.arange(10) % 2)
    whole = FeatureLoader(data, 4, CPU, drop_last=False)
    assert [b.index.tolist() for b in whole.epoch()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = FeatureLoader(data, 4, CPU, drop_last=True)
    assert len(dropped) == 2 and [len(b.index) for b in dropped.epoch()] == [4, 4]
    second = FeatureLoader(data, 4, CPU, drop_last=True, rank=1, world=2)
    assert [b.index.tolist() for b in second.epoch()] == [[1, 3], [5, 7]]
    (batch, *_) = second.epoch()
    assert batch.features[:, 0].tolist() == [1.0, 3.0] and batch.label.tolist() == [1, 1]
    assert batch.device.tolist() == [-1, -1] and batch.wave.shape == (2, 0)
    skipped = FeatureLoader(data, 4, CPU)
    assert [b.index.tolist() for b in skipped.epoch(skip=2)] == [[8, 9]]


def test_num_batches():
    assert [num_batches(10, 4), num_batches(10, 4, True), num_batches(3, 4, True)] == [3, 2, 1]


def test_batches_of_an_in_memory_split_in_order_or_shuffled():
    audio = ClipAudio(
        clips=[Clip(f"{i}.wav", i % 3) for i in range(5)],
        wave=torch.arange(5.0).unsqueeze(1).repeat(1, 4),
        labels=torch.arange(5) % 3,
        devices=torch.zeros(5, dtype=torch.long),
        sample_rate=8000,
    )
    ordered = list(batches(audio, 2, CPU))
    assert [b.index.tolist() for b in ordered] == [[0, 1], [2, 3], [4]]
    assert ordered[1].wave[:, 0].tolist() == [2.0, 3.0] and ordered[2].label.tolist() == [1]
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    shuffled = batches(audio, 5, CPU, torch.Generator().manual_seed(3), drop_last=True)
    assert [b.index.tolist() for b in shuffled] == [order]


def test_load_clips_resamples_each_rate_once_and_fits_the_length(tmp_path, monkeypatch):
    shown: list[tuple] = []
    real = data_module.progress
    monkeypatch.setattr(
        data_module, "progress", lambda items, **kw: shown.append(kw) or real(items, **kw)
    )
    monkeypatch.setattr(data_module, "RESAMPLE_CHUNK", 2)  # several chunks of one rate
    clips = []
    for i, rate in enumerate((8000, 16000, 8000, 8000)):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.full(rate // 2, 0.1 * (i + 1), np.float32), rate)  # 0.5 s
        clips.append(Clip(path, i, "a"))
    audio = load_clips(clips, 8000, 1.0, ["a"])
    assert shown == [{"desc": "loading audio", "unit": "clip"}]
    assert audio.wave.shape == (4, 8000) and audio.labels.tolist() == [0, 1, 2, 3]
    for i in range(4):  # the first half second holds the clip (after resampling), then zeros
        assert audio.wave[i, 1000:3000].mean().item() == pytest.approx(0.1 * (i + 1), abs=2e-3)
        assert audio.wave[i, 4100:].abs().max().item() == 0.0


def test_data_workers_ignore_the_signals_of_a_cluster_job():
    saved = {n: signal.getsignal(n) for n in data_module.JOB_SIGNALS}
    try:
        ignore_job_signals(0)
        assert {signal.getsignal(n) for n in data_module.JOB_SIGNALS} == {signal.SIG_IGN}
        assert signal.SIGTERM in data_module.JOB_SIGNALS
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
