"""harness.api.testing: the helpers behave as the core does; the example plugin's tests use them."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.api.testing import (
    TinyBackbone,
    apply_augmentation,
    build,
    make_batch,
    make_task,
    training_step,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harness-focal-loss"


def test_batch_and_task_shapes():
    task = make_task(num_classes=4, devices=("a", "b"))
    backbone = TinyBackbone()
    batch = make_batch(task, backbone, batch_size=5, seconds=0.5, seed=1)
    assert batch.wave.shape == (5, 4000) and batch.label.tolist() == [0, 1, 2, 3, 0]
    assert batch.device.tolist() == [0, 1, 0, 1, 0]
    assert batch.features.shape == (5, 1, 16, 30)  # (4000 - 256) // 128 + 1 frames
    again = make_batch(task, backbone, batch_size=5, seconds=0.5, seed=1)
    assert torch.equal(batch.wave, again.wave)
    assert backbone(batch.features).embedding.shape == (5, 16)


def test_training_step_with_a_builtin_method():
    from harness_plugins.methods.ce import CrossEntropy

    task = make_task()
    backbone = TinyBackbone()
    out = training_step(CrossEntropy, backbone, task, make_batch(task, backbone))
    assert abs(out.loss.item() - math.log(3)) < 0.5  # near chance for a fresh head


def test_apply_augmentation_is_reproducible_and_uses_the_right_input():
    from harness_plugins.augmentations.specaugment import SpecAugment

    task = make_task()
    batch = make_batch(task, TinyBackbone(), batch_size=3)
    first = apply_augmentation(SpecAugment, task, batch, seed=3)
    second = apply_augmentation(SpecAugment, task, batch, seed=3)
    assert first.shape == batch.features.shape and torch.equal(first, second)
    with pytest.raises(TypeError, match="has no field 'nope'"):
        build(SpecAugment, nope=1)


def test_example_plugin_tests_pass_with_the_helpers():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "4 passed" in result.stdout
