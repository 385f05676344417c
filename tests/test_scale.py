"""The DataLoader path, the decoded-audio cache, precision and DDP (issue 8)."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip
from harness.data.audio_cache import FULL_SCALE, ROUNDING, CachedWaves, cached_audio
from harness.data.loader import Loader, load_clips, resolve_workers, split_audio
from harness.run.experiment import check_precision
from harness.util.cache import DONE_MARKER
from harness.util.errors import UsageError

from .conftest import run_cli, toy_run_args

FILE_RATE, RATE = 22050, 16000


def write_clips(folder: Path, count: int = 10, seed: int = 0) -> list[Clip]:
    """Noise clips of varying length (some shorter than the clip length) at 22.05 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        n = int(FILE_RATE * (0.3 + 0.05 * i))
        wave = (0.9 * rng.uniform(-1, 1, n)).astype(np.float32)
        path = folder / f"clip{i}.wav"
        sf.write(path, wave, FILE_RATE, subtype="FLOAT")
        clips.append(Clip(path, i % 3, "ab"[i % 2]))
    return clips


def epochs_of(loader: Loader, generator: torch.Generator, epochs: int = 2):
    return [
        [(b.index.clone(), b.wave.clone()) for b in loader.epoch(generator)] for _ in range(epochs)
    ]


def test_loader_gives_the_in_memory_clips_in_the_same_order(tmp_path):
    clips = write_clips(tmp_path / "wav")
    memory = load_clips(clips, RATE, 0.5, ["a", "b"])
    lazy = split_audio(clips, RATE, 0.5, ["a", "b"])
    reference = Loader(memory, 4, torch.device("cpu"), drop_last=True)
    streamed = Loader(lazy, 4, torch.device("cpu"), drop_last=True, workers=2)
    ref = epochs_of(reference, torch.Generator().manual_seed(3))
    got = epochs_of(streamed, torch.Generator().manual_seed(3))
    assert [len(e) for e in got] == [2, 2]  # 10 clips, batch 4, last partial batch dropped
    assert not torch.equal(ref[0][0][0], ref[1][0][0])  # a fresh permutation per epoch
    for ref_epoch, got_epoch in zip(ref, got, strict=True):
        for (ref_idx, ref_wave), (idx, wave) in zip(ref_epoch, got_epoch, strict=True):
            assert torch.equal(idx, ref_idx)
            # per-clip resampling with the same kernel as the in-memory batch resampling
            torch.testing.assert_close(wave, ref_wave, atol=1e-6, rtol=0)
    in_order = Loader(lazy, 4, torch.device("cpu"), workers=1)
    labels = torch.cat([b.label for b in in_order.epoch()])
    assert labels.tolist() == [c.label for c in clips]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR2"])
def test_data_workers_survive_the_signals_a_cluster_sends_the_whole_job(tmp_path, name):
    """SLURM preemption signals every process of the job step (SIGTERM, then submitit's
    USR2); a worker killed by them would fail the run instead of letting the main process
    checkpoint and requeue, so workers ignore them."""
    import signal

    clips = write_clips(tmp_path / "wav")
    lazy = split_audio(clips, RATE, 0.5, ["a", "b"])
    loader = Loader(lazy, 2, torch.device("cpu"), workers=1)
    batches = loader.epoch()
    first = next(batches)
    (worker,) = loader.loader._iterator._workers
    os.kill(worker.pid, getattr(signal, name))
    rest = list(batches)  # without the fix: "DataLoader worker ... is killed by signal"
    assert worker.is_alive()
    assert torch.cat([first.index] + [b.index for b in rest]).tolist() == list(range(10))


@pytest.mark.parametrize("leave", ["loader", "pass only"])
def test_a_process_with_open_data_workers_exits(tmp_path, leave):
    """Workers ignore SIGTERM, which multiprocessing's exit handler stops daemons with before
    waiting for them forever: the harness stops open loaders' workers at exit itself, and
    the workers of a pass whose loader is gone (a pass kept alive by a traceback)."""
    import subprocess
    import sys

    write_clips(tmp_path / "wav")
    code = f"""
from pathlib import Path
import torch
from harness.api import Clip
from harness.data.loader import Loader, split_audio
clips = [Clip(p, 0, "a") for p in sorted(Path({str(tmp_path / "wav")!r}).glob("*.wav"))]
loader = Loader(split_audio(clips, 16000, 0.5, ["a"]), 2, torch.device("cpu"), workers=1)
batches = loader.epoch()
next(batches)  # a pass left open: its persistent worker is alive
(worker,) = loader.loader._iterator._workers
print(worker.pid, flush=True)
if {leave!r} == "pass only":
    kept = loader.loader._iterator
    del batches, loader
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the worker is gone too


def test_an_unclosed_loader_in_a_reference_cycle_stops_its_workers_when_collected(tmp_path):
    """Collected in a cycle (an Experiment never closed), a pass's queues may be finalized
    before the pass: torch's shutdown then cannot reach the workers, waits twice 5 s and
    leaves them running (they ignore SIGTERM). The loader kills them itself."""
    import gc

    clips = write_clips(tmp_path / "wav")
    loader = Loader(split_audio(clips, RATE, 0.5, ["a", "b"]), 2, torch.device("cpu"), workers=1)
    assert len(list(loader.epoch())) == 5
    (worker,) = loader.loader._iterator._workers
    loader.cycle = loader  # only the cycle collector frees it
    del loader
    gc.collect()
    worker.join(timeout=1)
    assert not worker.is_alive()


def test_cache_equals_direct_decoding_within_int16_rounding(tmp_path):
    clips = write_clips(tmp_path / "wav")
    lazy = split_audio(clips, RATE, 0.5, [])
    direct = load_clips(clips, RATE, 0.5, [])
    cached = cached_audio(lazy, str(tmp_path / "cache"), workers=0)
    source = cached.wave
    assert isinstance(source, CachedWaves)
    for i in range(len(clips)):
        row = source.read(i)
        # int16 rounding: |x - round(x * 32767 / s) * s / 32767| <= 0.5 * s / 32767
        bound = ROUNDING * float(source.scales[i]) + 1e-7
        assert np.abs(row - direct.wave[i].numpy()).max() <= bound
    assert source.scales.min() >= 1.0
    # each row uses the int16 range (the quantisation is not coarser than it must be)
    raw = np.frombuffer((source.folder / "waves.npy").read_bytes()[source.offset :], np.int16)
    assert np.abs(raw).max() > FULL_SCALE // 2


def test_cache_is_rebuilt_when_a_file_changes(tmp_path):
    clips = write_clips(tmp_path / "wav")
    first = cached_audio(split_audio(clips, RATE, 0.5, []), str(tmp_path / "cache")).wave
    sf.write(clips[2].path, np.zeros(FILE_RATE // 2, np.float32), FILE_RATE, subtype="FLOAT")
    second = cached_audio(split_audio(clips, RATE, 0.5, []), str(tmp_path / "cache")).wave
    assert second.folder != first.folder
    assert np.abs(first.read(2)).max() > 0.1 and np.abs(second.read(2)).max() == 0
    np.testing.assert_array_equal(first.read(3), second.read(3))
    again = cached_audio(split_audio(clips, RATE, 0.5, []), str(tmp_path / "cache")).wave
    assert again.folder == second.folder


def build_in_process(args) -> str:
    clips, folder = args
    audio = cached_audio(split_audio(clips, RATE, 0.5, []), folder, workers=0)
    return str(audio.wave.folder)


def test_two_processes_building_at_once_give_one_valid_cache(tmp_path):
    clips = write_clips(tmp_path / "wav", count=24)
    folder = str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(2) as pool:
        built = pool.map(build_in_process, [(clips, folder)] * 2)
    assert built[0] == built[1]
    entries = os.listdir(folder)
    assert entries == [Path(built[0]).name]  # no temporary folder left behind
    source = CachedWaves(Path(built[0]))
    assert (source.folder / DONE_MARKER).is_file()
    direct = load_clips(clips, RATE, 0.5, [])
    assert json.loads((source.folder / "index.json").read_text())["shape"] == [24, 8000]
    for i in range(24):
        assert np.abs(source.read(i) - direct.wave[i].numpy()).max() <= ROUNDING * 2


def test_segmented_clips_from_the_cache_keep_their_length(tmp_path):
    clips = write_clips(tmp_path / "wav", count=4)
    merged = [Clip(clips[0].path, 0, "a", segments=tuple(c.path for c in clips))]
    cached = cached_audio(split_audio(merged, RATE, 2.0, []), str(tmp_path / "cache")).wave
    direct = load_clips(merged, RATE, 2.0, [])
    assert cached.shape == (1, 32000)
    bound = ROUNDING * float(cached.scales[0]) + 1e-7
    assert np.abs(cached.read(0) - direct.wave[0].numpy()).max() <= bound


def test_workers_auto_and_negative():
    assert 0 <= resolve_workers(None) <= 8
    assert resolve_workers(3) == 3
    with pytest.raises(UsageError, match="run.workers"):
        resolve_workers(-1)


def test_bf16_refused_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(UsageError, match="bf16.*Tesla T4"):
        check_precision(torch.device("cuda"), "bf16")
    check_precision(torch.device("cuda"), "fp16")
    check_precision(torch.device("cpu"), "bf16")


def assert_refused(result, text: str, store: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert not store.exists()


def test_bad_scale_settings_are_one_line_errors(tmp_path):
    store = tmp_path / "runs" / "results.sqlite"
    result = run_cli(*toy_run_args(tmp_path, "--set", "run.workers=-1"))
    assert_refused(result, "run.workers: -1 must be >= 0", store)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli(*toy_run_args(tmp_path, "--set", f"run.audio_cache={blocker}/cache"))
    assert_refused(result, f"{blocker}/cache is not writable", store)
    if not torch.cuda.is_available():
        result = run_cli(*toy_run_args(tmp_path, "--nproc", "2"))
        assert_refused(result, "--nproc 2 needs 2 GPUs but 0 are present", store)


def metrics_of(store: Path) -> list[dict]:
    with sqlite3.connect(store) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT metrics_json FROM runs")]


def test_bf16_with_accumulation_and_clipping_trains_on_cpu(tmp_path):
    result = run_cli(
        *toy_run_args(
            tmp_path,
            "--device",
            "cpu",
            "--set",
            "run.precision=bf16",
            "--set",
            "run.grad_accum=2",
            "--set",
            "run.grad_clip=1.0",
            "--set",
            "run.sync_every=1",
        )
    )
    assert result.returncode == 0, result.stderr
    (metrics,) = metrics_of(tmp_path / "runs" / "results.sqlite")
    assert all(np.isfinite(v) for v in metrics.values())


DIVERGING_METHOD = """
import torch
from harness import hookimpl
from harness.api import StepOutput
from harness_plugins.methods.ce import CrossEntropy


class Diverging(CrossEntropy):
    name = "diverging"
    description = "Cross-entropy whose loss turns infinite from the third step on (tests)."
    steps = 0

    def training_step(self, batch, backbone):
        out = super().training_step(batch, backbone)
        self.steps += 1
        return StepOutput(out.loss * (float("inf") if self.steps > 2 else 1.0), out.logs)


@hookimpl
def register_methods(register):
    register(Diverging)
"""


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    plugin = tmp_path / "diverging.py"
    plugin.write_text(DIVERGING_METHOD)
    args = toy_run_args(tmp_path, "--device", "cpu")
    args[args.index("--method") + 1] = "diverging"
    result = run_cli("--plugin", str(plugin), *args)
    assert result.returncode == 2, result.stderr
    assert "training diverged: the loss was not finite" in result.stderr
    assert not (tmp_path / "runs" / "results.sqlite").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with the scaler needs CUDA")
def test_fp16_with_the_scaler_trains_on_cuda(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--device", "cuda", "--set", "run.precision=fp16"))
    assert result.returncode == 0, result.stderr


def test_two_gloo_processes_match_one_process_and_store_one_row(tmp_path):
    """DDP splits each global batch of 8 over 2 ranks (4 clips each, the same clips as one
    process's batch) and averages the gradients, so the runs agree up to float rounding in
    the gradient reduction: metrics within 1e-4."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    # the protocols' trainings (device probe, fine-tuning) run through the engine under DDP too
    protocols = ("--protocol", "device-logloss,device-probe,finetune")
    protocols += ("--set", "protocol.finetune.epochs=1")
    one = run_cli(*toy_run_args(tmp_path / "one", "--device", "cpu", *protocols))
    assert one.returncode == 0, one.stderr
    two = run_cli(*toy_run_args(tmp_path / "two", "--device", "cpu", "--nproc", "2", *protocols))
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("stored run") == 1
    (single,) = metrics_of(tmp_path / "one" / "runs" / "results.sqlite")
    (ddp,) = metrics_of(tmp_path / "two" / "runs" / "results.sqlite")
    assert len(list((tmp_path / "two" / "runs").glob("2*"))) == 1
    assert single.keys() == ddp.keys()
    # the per-epoch representation health probe runs under DDP too, with the same values
    assert {"health/effective_rank", "health/relative_spread", "health/collapsed"} <= ddp.keys()
    for key in single:
        assert ddp[key] == pytest.approx(single[key], abs=1e-4), key


class Queueing(torch.nn.Module):
    """A linear layer and a FIFO buffer of what it saw, like NNCLR's support queue."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("queue", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queue = torch.cat([self.queue[len(x) :], x[:, 0].detach()])
        return self.linear(x).mean()


def ddp_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from harness.engine.trainer import wrap_ddp

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = wrap_ddp(Queueing(), torch.device("cpu"))
    x = torch.full((2, 2), float(rank + 1))  # each rank sees only its own clips
    model(x).backward()
    model(x).backward()
    torch.save({"queue": model.module.queue, "grad": model.module.linear.weight.grad}, out)
    dist.destroy_process_group()


def test_ddp_keeps_each_ranks_queue_and_averages_gradients(tmp_path):
    """Across ranks a method's cross-sample state stays local (NNCLR's queue holds the
    rank's own embeddings; DDP broadcasts no buffers), while gradients are averaged."""
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=ddp_rank, args=(r, str(tmp_path / "init"), str(tmp_path / f"{r}.pt")))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["queue"].tolist() == [1.0] * 4
    assert results[1]["queue"].tolist() == [2.0] * 4
    # d mean(w.x + b) / dw = mean(x) per rank: 1 and 2; averaged 1.5, two backward passes
    for r in range(2):
        assert results[r]["grad"].tolist() == [[3.0, 3.0]]


def toy_experiment(tmp_path: Path, **run):
    from harness.registry.config import resolve
    from harness.registry.plugins import load_plugins
    from harness.run.experiment import Experiment

    from .conftest import TOY_PLUGIN

    (tmp_path / "tones").mkdir(exist_ok=True)
    raw = {
        "backbone": {"name": "toy"},
        "dataset": {"name": "toy-tones", "root": str(tmp_path / "tones")},
        "method": {"name": "icl"},
        "run": {"epochs": 2, "batch_size": 6, "device": "cpu", "lr": 0.01, **run},
    }
    return Experiment(resolve(raw, load_plugins([str(TOY_PLUGIN)])))


def train_and_evaluate(experiment) -> dict[str, float]:
    experiment.setup()
    experiment.train()
    metrics, _ = experiment.evaluate()
    experiment.close()
    return metrics


def test_dataloader_run_gives_the_in_memory_metrics(tmp_path):
    """Workers decoding clips give the metrics of in-memory waveforms exactly (the toy files
    are at the backbone's rate: no resampling); the int16 cache within rounding."""
    streamed = train_and_evaluate(toy_experiment(tmp_path, audio_cache="off", workers=1))
    memory = toy_experiment(tmp_path, audio_cache="off")
    for split in ("train", "eval"):
        lazy = memory.parts.audio(split)
        memory.parts._audio[split] = load_clips(
            lazy.clips, lazy.sample_rate, 0.5, memory.splits.devices
        )
    in_memory = train_and_evaluate(memory)
    assert streamed and streamed == in_memory
    cached = train_and_evaluate(toy_experiment(tmp_path, audio_cache=str(tmp_path / "c")))
    for key, value in in_memory.items():
        assert cached[key] == pytest.approx(value, abs=1e-3), key


def test_icl_pairs_stay_within_a_ranks_share():
    """Under DDP rank r steps on clips r, r+W, ... of each global batch (``OrderSampler``), and a
    method's step sees only that share: ICL's pairs are the pairs inside the share (the ranks'
    losses are those of their shards by hand; pairs across ranks are not counted, so their
    mean differs from the one-process loss over all pairs of the global batch)."""
    from harness.data.loader import OrderSampler
    from harness_plugins.methods.icl import inverse_contrastive_loss

    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    shards = []
    for rank in range(2):
        sampler = OrderSampler(8, 8, drop_last=True, rank=rank, world=2)
        sampler.order = order
        (shard,) = list(sampler)
        shards.append(shard)
    assert shards == [order[0::2].tolist(), order[1::2].tolist()]
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(4))
    devices = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])

    def by_hand(rows: list[int]) -> float:
        terms = []
        for i in rows:
            for j in rows:
                if i != j:
                    d = float((z[i] - z[j]).norm())
                    terms.append(math.exp(0.2 - d) if devices[i] == devices[j] else d * d)
        return sum(terms) / len(terms)

    per_rank = [float(inverse_contrastive_loss(z[s], devices[s], 0.2, 1.0)) for s in shards]
    for shard, loss in zip(shards, per_rank, strict=True):
        assert loss == pytest.approx(by_hand(shard), rel=1e-5)
    full = float(inverse_contrastive_loss(z, devices, 0.2, 1.0))
    assert full == pytest.approx(by_hand(list(range(8))), rel=1e-5)
    assert sum(per_rank) / 2 != pytest.approx(full, rel=1e-3)
