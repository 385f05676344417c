"""Tests that bite (issue 23, item 9): every statistic the harness fits on data is fitted on the
training split, seen with an evaluation split from another distribution.

Tests whose train and eval data come from one distribution cannot tell a statistic fitted on
the wrong split: here the evaluation embeddings are shifted by a constant, so fitting on them
gives a measurably different answer, and each test asserts the answer of a fit on the train
split computed independently (or that nothing fitted moves when only the eval split changes).

What the harness fits, and where it is checked:

- ``linear``: the probe's ``StandardScaler`` and logistic regression (train split);
- ``device-probe``: the device classifier (train split);
- ``fewshot``: class centroids from the support clips only (never the queries); the global
  centring before euclidean distances is exempt by construction (distances are unchanged by
  a translation, checked below);
- ``finetune`` (multi-label): the prior baseline's class frequencies (train split). Exempt as
  unobservable: a score constant over clips ranks every clip equally, so its AP is the class's
  prevalence and its AUC 0.5 whatever the frequencies (checked below);
- t-SNE in ``harness plot`` embeds one set of clips at once for display (no split, nothing is
  applied to other data): not a fit to check.
"""

from __future__ import annotations

import types
from typing import ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from harness_plugins.protocols._multilabel import multi_label_scores, prior_scores
from harness_plugins.protocols.fewshot import Episodes, episode_accuracies
from harness_plugins.protocols.finetune import multi_label_metrics
from harness_plugins.protocols.linear import Linear
from tests.test_device_probe import informative, make_ctx, probe
from tests.test_linear_finetune import embedding_context

SHIFT = 3.0


def two_classes(per_class: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """Class 0 around -1, class 1 around +1 on the first axis; ``shift`` moves every clip."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(per_class)
    x = 0.3 * torch.randn(len(labels), 4, generator=gen, dtype=torch.float64)
    x[:, 0] += 2.0 * labels - 1.0 + shift
    return x, labels.tolist()


def sklearn_probe_accuracy(train_x, train_y, eval_x, eval_y, refit_on_eval: bool) -> float:
    """Eval accuracy (%) of a standardised logistic regression; ``refit_on_eval``: the eval
    split standardised with its own statistics (the bug)."""
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(train_x), train_y)
    scaled = StandardScaler().fit_transform(eval_x) if refit_on_eval else scaler.transform(eval_x)
    return 100 * float(np.mean(model.predict(scaled) == np.asarray(eval_y)))


class RecordingScaler(StandardScaler):
    """scikit-learn's scaler, keeping the mean of every fit."""

    means: ClassVar[list[np.ndarray]] = []

    def fit(self, x, y=None, sample_weight=None):
        fitted = super().fit(x, y, sample_weight)
        RecordingScaler.means.append(fitted.mean_.copy())
        return fitted


def test_linear_probe_standardises_with_the_train_split_statistics(monkeypatch):
    monkeypatch.setattr("sklearn.preprocessing.StandardScaler", RecordingScaler)
    RecordingScaler.means = []
    train_x, train_y = two_classes(30, seed=0)
    eval_x, eval_y = two_classes(30, seed=1, shift=SHIFT)
    train_x, eval_x = train_x.float(), eval_x.float()
    ctx, _ = embedding_context(
        {"train": train_x, "eval": eval_x}, {"train": train_y, "eval": eval_y}
    )
    metrics = Linear(Linear.Config(cache=False)).evaluate(ctx).metrics
    assert len(RecordingScaler.means) == 1
    assert np.allclose(RecordingScaler.means[0], train_x.double().mean(0).numpy())
    assert not np.allclose(RecordingScaler.means[0], eval_x.double().mean(0).numpy(), atol=1)
    args = (train_x.double().numpy(), train_y, eval_x.double().numpy(), eval_y)
    right = sklearn_probe_accuracy(*args, refit_on_eval=False)
    wrong = sklearn_probe_accuracy(*args, refit_on_eval=True)
    assert wrong - right > 30  # the shift is visible: re-centring on eval would undo it
    assert metrics["acc"] == right


def shifted_eval(shift: float):
    """``informative`` device codes; the second split asked for (eval) moved by ``shift``."""
    calls = []

    def embed(devices, gen):
        calls.append(1)
        x = informative(devices, gen)
        if len(calls) == 2:
            x[:, 0] += shift  # every eval clip looks more like device "a"
        return x

    return embed


def test_device_probe_is_fitted_on_the_train_split_only():
    train = torch.arange(3).repeat_interleave(40)
    evaluation = torch.arange(3).repeat_interleave(20)

    def result(shift: float) -> dict[str, float]:
        ctx = make_ctx(shifted_eval(shift), train_devices=train, eval_devices=evaluation)
        return probe(max_epochs=30, head="linear").evaluate(ctx).metrics

    same, moved = result(0.0), result(SHIFT)
    assert moved["train_accuracy"] == same["train_accuracy"]
    assert moved["epochs"] == same["epochs"]
    assert moved["accuracy"] < same["accuracy"]  # the shift is seen, not fitted away


def one_episode(support: list[list[int]], query: list[list[int]]) -> Episodes:
    return Episodes(torch.tensor([[0, 1]]), torch.tensor([support]), torch.tensor([query]))


def test_fewshot_centroids_come_from_the_support_clips_only():
    """Support of class 0 at 0 and of class 1 at 10; class 0's queries are shifted to 6.
    Support centroids (0, 10): class 0's queries are nearer 10, accuracy 1/2. Centroids from
    the queries (6, 16) or from support and queries (3, 13) would give 1."""
    points = [0.0, 0.0, 10.0, 10.0, 6.0, 6.0, 16.0, 16.0]
    embeddings = torch.tensor([[p, 1.0] for p in points])
    episodes = one_episode([[0, 1], [2, 3]], [[4, 5], [6, 7]])
    assert episode_accuracies(embeddings, episodes, "euclidean").tolist() == [0.5]
    # the global centring is harmless: a translation of every clip changes no distance
    moved = embeddings + torch.tensor([[-50.0, 7.0]])
    assert episode_accuracies(moved, episodes, "euclidean").tolist() == [0.5]


def test_fewshot_cosine_centroids_come_from_the_support_clips_only():
    """Support directions 0 and 90 degrees; class 0's queries at 60 degrees are nearer the
    class 1 centroid; query centroids (60, 90 degrees) would classify them right."""
    angles = np.radians([0, 0, 90, 90, 60, 60, 90, 90])
    embeddings = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    episodes = one_episode([[0, 1], [2, 3]], [[4, 5], [6, 7]])
    assert episode_accuracies(embeddings, episodes, "cosine").tolist() == [0.5]


def test_finetune_prior_uses_the_train_frequencies_and_they_cannot_change_its_metrics():
    train = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    evaluation = torch.tensor([[0, 1, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1], [0, 1, 0]])
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ctx = types.SimpleNamespace(
        torch_device=torch.device("cpu"), infer=lambda fn, split, frontend: logits
    )
    classifier = torch.nn.Linear(1, 1)
    metrics = multi_label_metrics(
        ctx,
        classifier,
        None,
        types.SimpleNamespace(targets=train),
        types.SimpleNamespace(targets=evaluation),
    )
    assert np.allclose(prior_scores(train.numpy(), 2), [[0.75, 0.25, 0.25]] * 2)
    eval_fitted = multi_label_scores(prior_scores(evaluation.numpy(), 5), evaluation.numpy())
    # constant scores: AP = prevalence of each class in eval, whichever frequencies are used
    assert metrics["prior_map"] == 100 * eval_fitted.mean_ap
    assert metrics["prior_map"] == 100 * float(np.mean([1 / 5, 4 / 5, 3 / 5]))
