"""Label-weighted sampling (issue 22, item 2: AudioMAE's sampler for the unbalanced
AudioSet-2M): the weights, the draw's statistics, its determinism, exact resume, DDP shares,
and its refusal with streamed shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import Clip, Sampling
from harness.data.loader import ClipAudio, Loader, label_weights
from harness.util.errors import UsageError
from tests.conftest import run_cli
from tests.test_resume import args as resume_args
from tests.test_resume import assert_same_run, finished

CPU = torch.device("cpu")


def toy_audio(labels: list[int], targets: torch.Tensor | None = None) -> ClipAudio:
    """A split of one-sample clips whose waveform is the clip's index (so batches name it)."""
    n = len(labels)
    wave = torch.arange(n, dtype=torch.float32)[:, None]
    label = torch.tensor(labels, dtype=torch.long)
    clips = [Clip(Path(f"{i}.wav"), labels[i]) for i in range(n)]
    return ClipAudio(clips, wave, label, torch.full((n,), -1), 16000, targets)


def drawn(loader: Loader, seed: int, skip: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return [i for batch in loader.epoch(generator, skip) for i in batch.index.tolist()]


def test_weights_are_the_sum_of_inverse_label_counts_by_hand():
    # multi-label: clip 0 {0}, clip 1 {0, 1}, clip 2 {1, 2}, clip 3 no label
    # label counts 2, 2, 1 -> 1/2; 1/2 + 1/2; 1/2 + 1/1; 0
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.float32)
    weights = label_weights(torch.full((4,), -1), targets)
    assert weights.tolist() == [0.5, 1.0, 1.5, 0.0]
    # single-label: three clips of class 0, one of class 2, one unlabeled (class 1 unused)
    single = label_weights(torch.tensor([0, 0, 2, 0, -1]))
    expected = torch.tensor([1 / 3, 1 / 3, 1.0, 1 / 3, 0.0], dtype=torch.float64)
    assert torch.allclose(single, expected)


def test_drawn_label_frequencies_approach_balanced():
    """Class 0 has 90 clips, class 1 nine, class 2 one: uniform sampling sees them 90:9:1,
    label-weighted draws each class with probability 1/3."""
    labels = [0] * 90 + [1] * 9 + [2]
    audio = toy_audio(labels)
    sampling = Sampling("label-weighted", samples_per_epoch=30_000, replacement=True)
    loader = Loader(audio, 100, CPU, drop_last=True, sampling=sampling)
    picks = np.asarray(drawn(loader, seed=3))
    assert len(picks) == 30_000
    shares = np.bincount(np.asarray(labels)[picks], minlength=3) / len(picks)
    # binomial standard deviation at p = 1/3, n = 30000 is 0.0027: 0.015 is over 5 of them
    assert np.abs(shares - 1 / 3).max() < 0.015, shares
    # multi-label: each clip is drawn in proportion to its weight
    generator = torch.Generator().manual_seed(0)
    targets = torch.rand(60, 5, generator=generator) < torch.tensor([0.8, 0.4, 0.2, 0.1, 0.05])
    targets[:, 0] |= targets.sum(1) == 0  # every clip carries a label
    multi = toy_audio([-1] * 60, targets.float())
    loader = Loader(multi, 100, CPU, True, sampling=sampling)
    counts = np.bincount(drawn(loader, seed=4), minlength=60) / 30_000
    weights = label_weights(multi.labels, multi.targets).numpy()
    expected = weights / weights.sum()
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected.max() / 30_000)
    rare = targets[:, 4].numpy()  # the rarest label gets more of the draw than of the clips
    assert counts[rare].sum() > 2 * rare.mean()


def test_without_replacement_each_clip_is_drawn_at_most_once_and_unlabeled_never():
    labels = [0] * 20 + [1] * 5 + [-1] * 5
    sampling = Sampling("label-weighted", samples_per_epoch=24)
    loader = Loader(toy_audio(labels), 8, CPU, drop_last=True, sampling=sampling)
    assert len(loader) == 3
    picks = drawn(loader, seed=1)
    assert len(picks) == len(set(picks)) == 24
    assert not set(picks) & set(range(25, 30))
    with pytest.raises(UsageError, match="exceeds the 25 labeled training clips"):
        Loader(toy_audio(labels), 8, CPU, True, sampling=Sampling("label-weighted", 26))
    with pytest.raises(UsageError, match="no training clip carries a label"):
        Loader(toy_audio([-1] * 4), 2, CPU, True, sampling=Sampling("label-weighted"))


def test_same_seed_same_order_and_a_resumed_epoch_continues_it():
    labels = [0] * 40 + [1] * 8 + [2] * 2
    sampling = Sampling("label-weighted", samples_per_epoch=40, replacement=True)
    loader = Loader(toy_audio(labels), 4, CPU, drop_last=True, sampling=sampling)
    first, again, other = drawn(loader, 7), drawn(loader, 7), drawn(loader, 8)
    assert first == again and first != other
    # waveforms are the clips drawn (the batch is the clips, not only the indices)
    batch = next(iter(loader.epoch(torch.Generator().manual_seed(7))))
    assert batch.wave[:, 0].long().tolist() == first[:4]
    # the engine resumes an epoch from the generator state saved at its start, skipping the
    # batches done: the rest of the same draw
    generator = torch.Generator().manual_seed(7)
    saved = generator.get_state()
    done = list(loader.epoch(generator))[:3]
    assert [i for b in done for i in b.index.tolist()] == first[:12]
    resumed = torch.Generator()
    resumed.set_state(saved)
    rest = [i for b in loader.epoch(resumed, skip=3) for i in b.index.tolist()]
    assert rest == first[12:]


def test_uniform_sampling_is_the_permutation_of_before():
    """The default keeps every earlier run's order: one randperm of the epoch generator."""
    loader = Loader(toy_audio([0] * 10), 5, CPU, drop_last=True, sampling=Sampling())
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2)).tolist()
    assert drawn(loader, 2) == order


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from harness.api import Sampling
from harness.data.loader import ClipAudio, Loader
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 3, dtype=torch.long)
audio = ClipAudio([], torch.zeros(39, 1), labels, labels, 16000)
sampling = Sampling("label-weighted", samples_per_epoch=26)
loader = Loader(audio, 6, torch.device("cpu"), True, 0, rank, world, sampling)
seen = [b.index.tolist() for b in loader.epoch(torch.Generator().manual_seed(5))]
count = torch.tensor([len(seen)])
dist.all_reduce(count, op=dist.ReduceOp.MAX)
assert count.item() == len(seen)
json.dump(seen, open(f"{sys.argv[1]}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_gloo_processes_draw_disjoint_equal_shares_of_one_draw(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    batches = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(batches[0]) == len(batches[1]) == 26 // 6
    assert all(len(b) == 3 for rank in batches for b in rank)
    # the same draw as one process: rank r takes every 2nd clip of each global batch
    labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 3)
    single = Loader(toy_audio(labels.tolist()), 6, CPU, True,
                    sampling=Sampling("label-weighted", samples_per_epoch=26))  # fmt: skip
    whole = [b.index.tolist() for b in single.epoch(torch.Generator().manual_seed(5))]
    for rank in range(2):
        assert batches[rank] == [b[rank::2] for b in whole]
    shares = [{i for b in rank for i in b} for rank in batches]
    assert not shares[0] & shares[1]  # without replacement: no clip on both ranks
    assert shares[0] | shares[1] == {i for b in whole for i in b}


WEIGHTED = ("--set", "run.sampler=label-weighted", "--set", "run.samples_per_epoch=16")


@pytest.mark.slow
def test_a_sigkilled_weighted_run_resumes_the_same_draw_bit_for_bit(tmp_path):
    extra = (*WEIGHTED, "--set", "run.checkpoint_every_steps=1")
    reference = run_cli(*resume_args(tmp_path, "a", *extra))
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(
        *resume_args(tmp_path, "b", *extra), env={"HARNESS_TEST_KILL_AT": "checkpoint 1:1:1"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_cli(*resume_args(tmp_path, "b", *extra), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(finished(tmp_path / "a"), finished(tmp_path / "b"))
    log = (finished(tmp_path / "a") / "log.txt").read_text()
    assert "epoch 1/3" in log
    uniform = run_cli(*resume_args(tmp_path, "c", "--set", "run.checkpoint_every_steps=1"))
    assert uniform.returncode == 0, uniform.stderr
    a, c = (json.loads((finished(tmp_path / d) / "metrics.json").read_text()) for d in "ac")
    assert a != c  # the weighted draw is another training than the uniform one


def test_weighted_sampling_with_shards_is_a_one_line_error(tmp_path):
    out = tmp_path / "x"
    refused = run_cli(*resume_args(tmp_path, "x", "--set", "run.data_source=shards",
                                   "--set", f"run.shards={tmp_path}", *WEIGHTED))  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot draw from streamed shards" in lines[0], refused.stderr
    assert not out.exists() or not any(p.name.endswith(".sqlite") for p in out.iterdir())


def test_the_audioset_2m_recipe_has_the_published_values_and_sampler():
    from harness_plugins.protocols.finetune import RECIPE_SAMPLING, Finetune, recipe_sampling

    cfg = Finetune.Config(recipe="audioset-2m")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_fraction) == (100, 256, 1e-3, 0.1)
    assert (cfg.mixup, cfg.freqm, cfg.timem, cfg.layer_decay) == (0.5, 48, 192, 0.75)
    assert RECIPE_SAMPLING["audioset-2m"] == Sampling("label-weighted", 200_000, False)
    targets = torch.tensor([[1, 0], [0, 1], [0, 0]], dtype=torch.float32)
    small = recipe_sampling("audioset-2m", toy_audio([-1] * 3, targets))
    assert small == Sampling("label-weighted", 2, False)  # at most the labeled clips
    assert recipe_sampling("audioset-20k", toy_audio([-1] * 3, targets)) == Sampling()
