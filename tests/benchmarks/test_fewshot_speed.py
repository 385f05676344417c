"""Few-shot evaluation: 600 episodes of 5-way 1-shot with 15 queries per class.

Cached embeddings of 2,000 clips x 768 dims (50 classes x 40 clips, ESC-50's
shape). Ours: the ``fewshot`` protocol's whole ``evaluate`` on those
embeddings (episode sampling, batched centroids and distances, mean and CI).
Reference: the same episodes classified one at a time by scikit-learn's
``NearestCentroid`` (fit + predict per episode), measured in the same run; the
speed-up (best times of both, as the machine may be shared) is stored in
``extra_info`` and printed. Targets: at least 20x the reference and under 0.2 s.

Run with ``python -m pytest tests/benchmarks/test_fewshot_speed.py --benchmark-only -s``.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestCentroid

from harness.api import Clip, DataSplits, EvalContext, Task
from harness_plugins.protocols.fewshot import (
    Fewshot,
    class_members,
    episode_seed,
    sample_episodes,
)
from tests.benchmarks.claims import assert_claim

CLASSES, PER_CLASS, DIM = 50, 40, 768
N_WAY, K_SHOT, QUERIES, EPISODES, SEED = 5, 1, 15, 600, 0
REFERENCE_REPEATS = 2


@pytest.fixture(scope="module")
def cached() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    centers = torch.randn(CLASSES, DIM, generator=gen)
    embeddings = centers[labels] + 3.0 * torch.randn(len(labels), DIM, generator=gen)
    return embeddings, labels


def context(embeddings: torch.Tensor, labels: torch.Tensor) -> EvalContext:
    classes = [f"class{i}" for i in range(CLASSES)]
    clips = [Clip(path=f"/cached/{i}.wav", label=int(y)) for i, y in enumerate(labels)]

    def unused(split):
        raise AssertionError("not used")

    return EvalContext(
        backbone=None,
        method=None,
        task=Task(classes, [], 16000),
        splits=DataSplits(classes, [], clips, clip_seconds=5.0),
        torch_device=torch.device("cpu"),
        batch_size=128,
        seed=SEED,
        audio=unused,
        predict=unused,
        embed=lambda split, cache=True: embeddings,
        train=unused,
        infer=unused,
    )


def sklearn_loop(x: np.ndarray, support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Per-episode nearest centroid with scikit-learn, the straightforward way."""
    support_y = np.repeat(np.arange(N_WAY), K_SHOT)
    query_y = np.repeat(np.arange(N_WAY), QUERIES)
    accuracies = np.empty(len(support))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 1-shot: no within-class variance
        for e in range(len(support)):
            clf = NearestCentroid().fit(x[support[e].reshape(-1)], support_y)
            accuracies[e] = np.mean(clf.predict(x[query[e].reshape(-1)]) == query_y)
    return accuracies


@pytest.mark.benchmark(group="fewshot-600-episodes")
def test_fewshot_protocol_vs_sklearn_nearest_centroid_loop(benchmark, cached) -> None:
    embeddings, labels = cached
    protocol = Fewshot(Fewshot.Config(n_way=N_WAY, k_shot=K_SHOT, queries=QUERIES, cache=False))
    ctx = context(embeddings, labels)
    result = benchmark(protocol.evaluate, ctx)

    generator = torch.Generator().manual_seed(episode_seed(SEED, N_WAY, K_SHOT, QUERIES))
    episodes = sample_episodes(
        class_members(labels, range(CLASSES)), N_WAY, K_SHOT, QUERIES, EPISODES, generator
    )
    x, support, query = embeddings.numpy(), episodes.support.numpy(), episodes.query.numpy()
    timings = []
    for _ in range(REFERENCE_REPEATS):
        started = time.perf_counter()
        reference_acc = sklearn_loop(x, support, query)
        timings.append(time.perf_counter() - started)
    assert result.metrics["acc"] == pytest.approx(100 * reference_acc.mean(), abs=1e-9)

    reference, ours = min(timings), benchmark.stats.stats.min
    ratio = reference / ours
    benchmark.extra_info["reference_sklearn_loop_s"] = reference
    benchmark.extra_info["speedup_vs_sklearn_loop"] = ratio
    print(
        f"\nfewshot 600 episodes: {ours * 1e3:.1f} ms (best round), {ratio:.1f}x the speed of a "
        f"per-episode NearestCentroid loop ({reference * 1e3:.0f} ms)"
    )
    assert_claim("fewshot-vs-sklearn-loop", ratio, guard=20.0)
    load = os.getloadavg()[0]
    benchmark.extra_info["load_average"] = load
    if load <= (os.cpu_count() or 1):
        assert ours < 0.2
    else:  # other processes hold the cores; the time says little about this code
        print(f"absolute target (< 0.2 s) not checked: load average {load:.1f}")
