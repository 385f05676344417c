"""Per-device log-loss and accuracy against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import log_loss as sk_log_loss

from harness_plugins.protocols.device_logloss import (
    device_metrics,
    group_devices,
    log_loss,
    render_table,
    table_columns,
)

DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    n, classes = 180, 10
    logits = rng.normal(size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, classes, size=n)
    labels[:10] = np.arange(10)  # every class occurs
    devices = [DEVICES[i % 9] for i in range(n)]
    return probs, labels, devices


def test_log_loss_matches_sklearn(predictions):
    probs, labels, _ = predictions
    assert log_loss(probs, labels) == pytest.approx(sk_log_loss(labels, probs, labels=range(10)))


def test_log_loss_clips_zero_probabilities():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert log_loss(probs, np.array([1, 1])) == pytest.approx(-np.log(1e-15) / 2)


def test_per_device_and_group_metrics_match_sklearn(predictions):
    probs, labels, devices = predictions
    metrics = device_metrics(probs, labels, devices)
    device_array = np.array(devices)
    for device in DEVICES:
        mask = device_array == device
        expected = sk_log_loss(labels[mask], probs[mask], labels=range(10))
        assert metrics[f"logloss/{device}"] == pytest.approx(expected)
        assert metrics[f"acc/{device}"] == pytest.approx(
            accuracy_score(labels[mask], probs[mask].argmax(1))
        )
    real = np.mean([metrics[f"logloss/{d}"] for d in ("a", "b", "c")])
    assert metrics["logloss/real"] == pytest.approx(real)
    unseen = np.mean([metrics[f"acc/{d}"] for d in ("s4", "s5", "s6")])
    assert metrics["acc/unseen"] == pytest.approx(unseen)
    assert metrics["logloss/overall"] == pytest.approx(sk_log_loss(labels, probs, labels=range(10)))


def test_groups_follow_table_3_and_keep_unknown_devices():
    assert group_devices(["s4", "a", "x"]) == {"real": ["a"], "unseen": ["s4"], "other": ["x"]}
    labels = [c.label for c in table_columns(DEVICES, "logloss")]
    real, seen, unseen = ["A", "B", "C"], ["S1", "S2", "S3"], ["S4", "S5", "S6"]
    assert labels == [*real, "Avg.", *seen, "Avg.", *unseen, "Avg.", "Overall"]


def test_table_shows_both_metrics(predictions):
    probs, labels, devices = predictions
    metrics = device_metrics(probs, labels, devices)
    table = render_table(metrics, DEVICES)
    assert "Real A" in table and "Unseen Avg." in table
    overall = next(line for line in table.splitlines() if line.startswith("| Overall"))
    cells = [cell.strip() for cell in overall.strip("|").split("|")]
    assert cells == [
        "Overall",
        f"{metrics['logloss/overall']:.3f}",
        f"{100 * metrics['acc/overall']:.2f}",
    ]
    assert f"{metrics['logloss/a']:.3f}" in table and "accuracy (%)" in table


def test_console_table_fits_100_columns():
    devices = [*DEVICES, *(f"phone-{i}" for i in range(8))]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=4 * len(devices))
    labels = rng.integers(0, 3, size=len(probs))
    per_clip = [d for d in devices for _ in range(4)]
    table = render_table(device_metrics(probs, labels, per_clip), devices)
    assert max(len(line) for line in table.splitlines()) <= 100
    overall = next(line for line in table.splitlines() if line.startswith("| Overall"))
    assert f"{device_metrics(probs, labels, per_clip)['logloss/overall']:.3f}" in overall


def test_columns_name_each_device_its_group_and_which_way_is_better():
    def rows(metric):
        return [
            (c.key, c.label, c.group, c.higher_is_better) for c in table_columns(devices, metric)
        ]

    devices = ["x9", "s4", "a", "b"]
    assert rows("logloss") == [
        ("logloss/a", "A", "Real", False), ("logloss/b", "B", "Real", False),
        ("logloss/real", "Avg.", "Real", False),
        ("logloss/s4", "S4", "Unseen", False), ("logloss/unseen", "Avg.", "Unseen", False),
        ("logloss/x9", "X9", "Other", False),  # no average for devices outside Table 3
        ("logloss/overall", "Overall", "", False),
    ]  # fmt: skip
    assert rows("acc") == [
        ("acc/a", "A acc.", "Real", True), ("acc/b", "B acc.", "Real", True),
        ("acc/real", "Avg. acc.", "Real", True),
        ("acc/s4", "S4 acc.", "Unseen", True), ("acc/unseen", "Avg. acc.", "Unseen", True),
        ("acc/x9", "X9 acc.", "Other", True), ("acc/overall", "Overall acc.", "", True),
    ]  # fmt: skip


def test_log_loss_renormalises_rows():
    probs = np.array([[2.0, 2.0], [1.0, 3.0]])  # rows as 0.5/0.5 and 0.25/0.75
    assert log_loss(probs, np.array([0, 1])) == pytest.approx((np.log(2) - np.log(0.75)) / 2)


def test_evaluate_names_a_clip_without_device_unknown_and_tables_every_device():
    from types import SimpleNamespace

    import torch

    from harness.api import Clip
    from harness_plugins.protocols.device_logloss import DeviceLogLoss

    clips = [Clip("x.wav", 0, "a"), Clip("y.wav", 1, ""), Clip("z.wav", 1, "x9")]
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]], dtype=torch.float32)
    ctx = SimpleNamespace(
        predict=lambda split: probs,
        audio=lambda split: SimpleNamespace(clips=clips, labels=torch.tensor([0, 1, 1])),
    )
    result = DeviceLogLoss(DeviceLogLoss.Config()).evaluate(ctx)
    assert result.metrics["logloss/unknown"] == pytest.approx(-np.log(0.6))
    assert result.metrics["logloss/x9"] == pytest.approx(np.log(2))
    lines = result.table.splitlines()
    assert lines[0].split("|")[1].strip() == "device"
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels == ["Real A", "Real Avg.", "Other UNKNOWN", "Other X9", "Overall"]
    # log-loss of A: -log 0.8 with three decimals, the numbers left as text
    assert lines[2].split("|")[2].strip() == f"{-np.log(0.8):.3f}"
