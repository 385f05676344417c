"""The inverse contrastive loss against a hand-computed example."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Batch, Encoded, Task
from harness.nn.impulse import ImpulseResponseAugmentation, IRBank, IRConfig
from harness.registry.config import build_dataclass, resolve
from harness.registry.plugins import load_plugins
from harness.run.experiment import Experiment
from harness_plugins.methods.icl import (
    InverseContrastive,
    inverse_contrastive_loss,
    same_device_pairs,
)
from tests.conftest import TOY_PLUGIN


def test_icl_matches_hand_computed_pairs():
    # Three embeddings on a line: z0=0, z1=3, z2=4 (1-D); devices a, a, b.
    z = torch.tensor([[0.0], [3.0], [4.0]])
    devices = torch.tensor([0, 0, 1])
    alpha, beta = 0.2, 1.0
    # Ordered pairs i != j: (0,1),(1,0) same device -> f = exp((alpha - 3)/beta)
    # (0,2),(2,0) different -> g = 16; (1,2),(2,1) different -> g = 1.
    expected = (2 * math.exp(alpha - 3.0) + 2 * 16.0 + 2 * 1.0) / 6
    loss = inverse_contrastive_loss(z, devices, alpha, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_icl_barrier_strength_scales_exponent():
    z = torch.tensor([[0.0, 0.0], [0.6, 0.8]])  # distance 1
    devices = torch.tensor([2, 2])
    loss = inverse_contrastive_loss(z, devices, alpha=0.4, beta=0.5)
    assert loss.item() == pytest.approx(math.exp((0.4 - 1.0) / 0.5), rel=1e-6)


def test_icl_ignores_unknown_devices_and_has_finite_gradients():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    devices = torch.tensor([0, 1, -1])
    loss = inverse_contrastive_loss(z, devices, alpha=0.2, beta=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)  # identical cross-device pair: g = 0
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize(("devices", "apart"), [([0, 0], True), ([0, 1], False)])
def test_icl_gradient_direction(devices, apart):
    """Same-device pairs are pushed apart, cross-device pairs pulled together."""
    z = torch.tensor([[0.0], [0.5]], requires_grad=True)
    inverse_contrastive_loss(z, torch.tensor(devices), alpha=1.0, beta=1.0).backward()
    step = -z.grad[:, 0]  # gradient-descent direction
    distance_change = step[1] - step[0]
    assert (distance_change > 0) == apart


# -- device classes of augmented clips (Section 3: "augmentation leads to more device classes") --


class TwoMicrophones(ImpulseResponseAugmentation):
    """Three responses: microphone m1 at 0 and 90 degrees, m2 at 0 degrees."""

    name = "two-mics"
    description = "test bank"

    def embedded_bank(self, sample_rate: int) -> IRBank:
        irs = torch.zeros(3, 8)
        irs[:, 0] = 1.0
        irs[1, 2] = irs[2, 4] = 0.5
        meta = [
            {"microphone": "m1", "angle": 0.0, "distance": 50.0},
            {"microphone": "m1", "angle": 90.0, "distance": 50.0},
            {"microphone": "m2", "angle": 0.0, "distance": 50.0},
        ]
        return IRBank(irs, sample_rate, meta)


def hand_built_batch() -> Batch:
    """Five clips recorded by a, a, b, a and an unknown device."""
    devices = torch.tensor([0, 0, 1, 0, -1])
    return Batch(torch.randn(5, 64), torch.zeros(5, dtype=torch.long), devices, torch.arange(5))


def augmented(
    batch: Batch, monkeypatch, draws: list[int], **options
) -> tuple[Task, TwoMicrophones]:
    """Convolve every eligible clip (p = 1), drawing the responses ``draws`` in order."""
    task = Task(["scene"], ["a", "b"], 16000)
    aug = TwoMicrophones(build_dataclass(IRConfig, {"p": 1.0, **options}, "aug.two-mics"))
    aug.setup(task)
    monkeypatch.setattr(torch, "randint", lambda *args, **kw: torch.tensor(draws))
    aug(batch.wave, batch)
    monkeypatch.undo()
    return task, aug


def off_diagonal_pairs(devices: Tensor) -> set[tuple[int, int]]:
    same = same_device_pairs(devices) & ~torch.eye(len(devices), dtype=torch.bool)
    return {(i, j) for i, j in same.nonzero().tolist() if i < j}


def test_recording_devices_give_the_pairs_before_augmentation():
    batch = hand_built_batch()
    assert torch.equal(batch.device_classes(), batch.device)
    assert off_diagonal_pairs(batch.device_classes()) == {(0, 1), (0, 3), (1, 3)}


def test_dir_convolved_clips_become_devices_of_their_microphone(monkeypatch):
    batch = hand_built_batch()
    # clips 0, 1, 3 (device a) get responses 0 (m1 0 deg), 1 (m1 90 deg), 2 (m2)
    task, _ = augmented(batch, monkeypatch, [0, 1, 2])
    assert task.device_classes == ["a", "b", "a*m1", "a*m2"]
    assert batch.device_class.tolist() == [2, 2, 1, 3, -1]
    assert off_diagonal_pairs(batch.device_classes()) == {(0, 1)}  # same microphone
    assert batch.device.tolist() == [0, 0, 1, 0, -1]  # the recording devices are kept


def test_one_device_class_per_impulse_response_option(monkeypatch):
    batch = hand_built_batch()
    task, _ = augmented(batch, monkeypatch, [0, 1, 0], device_class="response")
    assert task.device_classes[2:] == ["a*m1@0deg/50cm", "a*m1@90deg/50cm", "a*m2@0deg/50cm"]
    assert batch.device_class.tolist() == [2, 3, 1, 2, -1]
    assert off_diagonal_pairs(batch.device_classes()) == {(0, 3)}  # same response


def test_keep_option_leaves_the_recording_devices(monkeypatch):
    batch = hand_built_batch()
    task, _ = augmented(batch, monkeypatch, [0, 1, 2], device_class="keep")
    assert task.num_device_classes == 2
    assert off_diagonal_pairs(batch.device_classes()) == {(0, 1), (0, 3), (1, 3)}


def test_all_devices_keep_the_recording_device_in_the_new_class(monkeypatch):
    batch = hand_built_batch()
    # clips 0-3 are eligible (the unknown one too, but it stays unknown); b and a both get m1
    task, _ = augmented(batch, monkeypatch, [0, 2, 0, 1, 0], devices=["all"])
    assert task.device_classes == ["a", "b", "a*m1", "a*m2", "b*m1", "b*m2"]
    assert batch.device_class.tolist() == [2, 3, 4, 2, -1]
    assert off_diagonal_pairs(batch.device_classes()) == {(0, 3)}


def test_icl_step_pairs_clips_by_their_device_classes(monkeypatch):
    torch.manual_seed(0)
    backbone = nn.Linear(64, 4)
    backbone.embed_dim = 4

    class Wrapped(nn.Module):
        def forward(self, features):
            z = backbone(features)
            return Encoded(z, z.unsqueeze(1))

    method = InverseContrastive(InverseContrastive.Config())
    method.head = nn.Linear(4, 1)
    method.logits = lambda encoded: method.head(encoded.embedding)
    batch = hand_built_batch()
    augmented(batch, monkeypatch, [0, 1, 2])
    batch.features = batch.wave
    out = method.training_step(batch, Wrapped())
    z = F.normalize(backbone(batch.wave), dim=-1)  # the default: unit-norm embeddings
    with_classes = inverse_contrastive_loss(z, batch.device_class, 0.2, 1.0).item()
    with_recording = inverse_contrastive_loss(z, batch.device, 0.2, 1.0).item()
    assert out.logs["icl"] == pytest.approx(with_classes, rel=1e-6)
    assert with_classes != pytest.approx(with_recording, rel=1e-3)


def test_training_sees_augmented_devices_and_evaluation_the_real_ones(tmp_path):
    """An icl + vintage run: training batches carry new classes, protocols the real devices."""
    plugins = load_plugins([str(TOY_PLUGIN)])
    raw = {
        "run": {"epochs": 1, "batch_size": 8, "seed": 0},
        "backbone": {"name": "toy"},
        "method": {"name": "icl"},
        "aug": {"names": ["vintage"], "vintage": {"p": 1.0}},
        "dataset": {"name": "toy-tones", "root": str(tmp_path)},
        "protocol": {"names": ["device-logloss", "device-probe"]},
    }
    experiment = Experiment(resolve(raw, plugins))
    experiment.setup()
    assert experiment.task.devices == ["a", "b", "s4"]
    assert experiment.task.num_device_classes == 3 + 66  # a x 66 vintage microphones
    seen = []
    step = experiment.method.training_step
    experiment.method.training_step = lambda batch, bb: (
        seen.append((batch.device.clone(), batch.device_class.clone())) or step(batch, bb)
    )
    experiment.train()
    devices = torch.cat([d for d, _ in seen])
    classes = torch.cat([c for _, c in seen])
    assert set(devices.tolist()) <= {0, 1}
    assert (classes[devices == 0] >= 3).all() and (classes[devices == 1] == 1).all()
    metrics, _ = experiment.evaluate()
    recording = {c.device for c in experiment.splits.eval}
    assert {k.split("/")[-1] for k in metrics if k.startswith("device-logloss/logloss/")} >= (
        recording
    )
    assert not any("*" in k for k in metrics)
    assert set(experiment.parts.audio("train").devices.tolist()) == {0, 1}
    assert "device-probe/recall/a" in metrics and "device-probe/recall/b" in metrics


def test_normalize_option_measures_distances_between_unit_embeddings_and_logs_both_terms():
    """``method.normalize = true``: ICL on unit-norm rows (chord distances), CE on the logits."""
    method = InverseContrastive(
        InverseContrastive.Config(alpha=0.2, lambda_icl=0.5, normalize=True)
    )
    method.head = lambda encoded: encoded.embedding
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # unit rows: e1, e1, e2
    batch = Batch(
        wave=z, label=torch.tensor([0, 1, 1]), device=torch.tensor([0, 0, 1]),
        index=torch.arange(3), features=z,
    )  # fmt: skip
    out = method.training_step(batch, lambda x: Encoded(embedding=x, tokens=x[:, None]))
    ce = F.cross_entropy(z, batch.label).item()
    # same device (0, 1): distance 0 (clamped to 1e-6), f = exp(0.2 - 1e-6); the other four
    # ordered pairs cross devices at chord distance sqrt(2): g = 2
    icl = (2 * math.exp(0.2 - 1e-6) + 4 * 2.0) / 6
    assert out.logs["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out.logs["icl"].item() == pytest.approx(icl, rel=1e-6)
    assert set(out.logs) == {"ce", "icl"}
    assert out.loss.item() == pytest.approx(ce + 0.5 * icl, rel=1e-6)
