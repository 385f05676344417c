"""The DIR generator (seed 000 Sec. 5.3): conditions, training, storage, the augmentation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.api import Batch, Task
from harness.cli.dirgen import embedded_traits, load_bank
from harness.nn.dirgen import (
    DirGenerator,
    condition_vector,
    dataset,
    load_generator,
    save_generator,
)
from harness.run.dirgen import train_generator
from harness.util.errors import DataError, UsageError
from harness_plugins.augmentations.dirgen import DirGenAugmentation


def test_condition_vector_hand_computed() -> None:
    c = condition_vector("cardioid", "dynamic", "large", 90.0, 50.0)
    pattern, transducer, large = [0, 0, 1, 0, 0, 0], [0, 1, 0], [1]
    expected = [*pattern, *transducer, *large, 0.5 * math.cos(math.pi / 2), 0.5]
    assert c.shape == (12,)
    assert torch.allclose(c, torch.tensor(expected, dtype=torch.float32), atol=1e-7)
    with pytest.raises(UsageError, match="unknown pattern"):
        condition_vector("shotgun", "dynamic", "large", 0.0, 5.0)


@pytest.fixture(scope="module")
def small_data() -> tuple[torch.Tensor, torch.Tensor]:
    conditions, irs = dataset(load_bank("", 16000), embedded_traits())
    assert conditions.shape == (5400, 12) and irs.shape == (5400, 1024)
    assert torch.allclose(irs.norm(dim=1), torch.ones(5400), atol=1e-5)
    pick = torch.randperm(5400, generator=torch.Generator().manual_seed(0))[:320]
    return conditions[pick], irs[pick]


def test_generator_trains_with_a_decreasing_loss_on_cpu(small_data) -> None:
    conditions, irs = small_data
    _, info = train_generator(
        conditions, irs, epochs=50, batch_size=16, test_share=0.1, seed=0, max_steps=20
    )
    mse = [h["mse"] for h in info["history"]]
    loss = [h["loss_g"] for h in info["history"]]
    assert len(mse) == 20
    assert np.mean(mse[-5:]) < 0.5 * np.mean(mse[:5])
    assert np.mean(loss[-5:]) < np.mean(loss[:5])
    assert math.isfinite(info["test_mse"]) and info["test"] == 32
    assert info["zero_mse"] == pytest.approx(1 / 1024, rel=1e-3)  # unit-energy responses


def test_stored_generator_loads_back_and_refuses_other_files(tmp_path) -> None:
    torch.manual_seed(0)
    generator = DirGenerator().eval()
    save_generator(tmp_path / "g.pt", generator, 16000, {"test_mse": 0.01})
    loaded, info = load_generator(tmp_path / "g.pt")
    c = torch.stack([condition_vector("omni", "condenser", "small", 0.0, 5.0)])
    with torch.no_grad():
        assert torch.equal(loaded(c), generator(c))
    assert info["test_mse"] == 0.01 and info["sample_rate"] == 16000
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a DIR generator"):
        load_generator(tmp_path / "other.pt")


def augmentation(tmp_path, **options) -> DirGenAugmentation:
    torch.manual_seed(1)
    save_generator(tmp_path / "g.pt", DirGenerator().eval(), 16000, {"test_mse": 0.0})
    aug = DirGenAugmentation(DirGenAugmentation.Config(model=str(tmp_path / "g.pt"), **options))
    aug.setup(Task(["a"], ["a"], 16000))
    return aug


def batch_of(wave: torch.Tensor) -> Batch:
    n = wave.shape[0]
    zeros = torch.zeros(n, dtype=torch.long)
    return Batch(wave=wave, label=zeros, device=zeros, index=torch.arange(n))


def test_augmentation_output_is_the_convolution_with_the_generated_responses(tmp_path) -> None:
    aug = augmentation(tmp_path, p=0.5)
    wave = torch.randn(6, 4000, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(1)  # the first draw (p = 0.5) picks 3 of the 6 clips
    out = aug(wave, batch_of(wave))
    chosen = aug.last_chosen
    assert 0 < chosen.sum() < 6
    irs = aug.last_irs.numpy()
    for row, clip in enumerate(torch.nonzero(chosen).flatten().tolist()):
        expected = np.convolve(wave[clip].numpy(), irs[row])[:4000]
        assert np.abs(out[clip].numpy() - expected).max() < 1e-4
    assert torch.equal(out[~chosen], wave[~chosen])
    with torch.no_grad():
        direct = aug.generator(aug.last_conditions)
    assert np.allclose(irs, (direct / direct.norm(dim=1, keepdim=True)).numpy(), atol=1e-6)


def test_chosen_traits_fix_the_conditions(tmp_path) -> None:
    aug = augmentation(
        tmp_path, pattern="figure-8", transducer="ribbon", diaphragm="large", angle=180, distance=20
    )
    wave = torch.randn(3, 2000)
    aug(wave, batch_of(wave))
    expected = condition_vector("figure-8", "ribbon", "large", 180.0, 20.0)
    assert torch.allclose(aug.last_conditions, expected.expand(3, -1))


def test_convolved_clips_get_the_class_of_their_device_and_generated_microphone(tmp_path) -> None:
    torch.manual_seed(1)
    save_generator(tmp_path / "g.pt", DirGenerator().eval(), 16000, {"test_mse": 0.0})
    config = DirGenAugmentation.Config(
        model=str(tmp_path / "g.pt"), p=0.5, pattern="cardioid", transducer="ribbon"
    )
    aug = DirGenAugmentation(config)
    task = Task(["scene"], ["a", "b"], 16000)
    aug.setup(task)
    assert task.num_device_classes == 2 + 2 * len(aug.microphones)
    wave = torch.randn(8, 1000)
    batch = Batch(
        wave=wave,
        label=torch.zeros(8, dtype=torch.long),
        device=torch.tensor([0, 1, 0, 1, -1, 0, 1, 1]),
        index=torch.arange(8),
    )
    torch.manual_seed(3)
    aug(wave, batch)
    chosen = aug.last_chosen
    assert 0 < chosen.sum() < 8
    classes = batch.device_classes()
    assert torch.equal(classes[~chosen], batch.device[~chosen])  # untouched clips keep theirs
    for clip in torch.nonzero(chosen).flatten().tolist():
        device = int(batch.device[clip])
        if device < 0:
            assert classes[clip] == -1
            continue
        name = task.device_classes[int(classes[clip])]
        assert name.startswith(f"{task.devices[device]}*dirgen:cardioid/ribbon/")


def test_keep_adds_no_device_classes(tmp_path) -> None:
    aug = augmentation(tmp_path, device_class="keep")
    wave = torch.randn(4, 500)
    batch = batch_of(wave)
    aug(wave, batch)
    assert torch.equal(batch.device_classes(), batch.device)


def test_missing_model_is_a_usage_error() -> None:
    aug = DirGenAugmentation(DirGenAugmentation.Config())
    with pytest.raises(UsageError, match="aug.dirgen.model"):
        aug.setup(Task(["a"], [], 16000))


def test_command_trains_and_stores_model_and_test_mse(tmp_path) -> None:
    from harness.cli.main import main

    out = tmp_path / "dirgen"
    main(["dirgen", "train", "--max-steps", "3", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and math.isfinite(metrics["test_mse"])
    assert metrics["test_responses"] == 540
    _, info = load_generator(out / "dirgen.pt")
    assert info["test_mse"] == pytest.approx(metrics["test_mse"])
