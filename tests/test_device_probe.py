"""Device probe on hand-built embeddings: informative -> high accuracy, noise -> chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from harness.api import Backbone, Batch, Clip, DataSplits, Encoded, EvalContext, Method, Task
from harness.data.loader import ClipAudio
from harness.engine.trainer import standalone, standalone_services
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError, HarnessError
from harness_plugins.protocols.device_probe import (
    DeviceProbe,
    EncodedHead,
    ProbeStep,
    balanced_class_weights,
    probe_metrics,
    relabel,
    render_table,
)

TAU_DEVICES = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
# TAU22-like imbalance: device a dominates the training split; s4-s6 are unseen
TRAIN_COUNTS = {"a": 400, "b": 40, "c": 40, "s1": 40, "s2": 40, "s3": 40}
EVAL_COUNTS = dict.fromkeys(TAU_DEVICES, 50)
DIM = 24


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny probes run fastest single-threaded (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyBackbone(Backbone):
    name = "tiny"
    description = "test backbone"
    sample_rate = 16000

    def __init__(self, head_factory=None) -> None:
        super().__init__(None)
        self.embed_dim = DIM
        self.blocks = nn.ModuleList()
        self.head_factory = head_factory
        self.heads_built = 0

    def build_head(self, num_classes: int) -> nn.Module:
        self.heads_built += 1
        if self.head_factory is not None:
            return self.head_factory(num_classes)
        return super().build_head(num_classes)


class SecondTokenHead(nn.Module):
    """A head that needs two tokens, so it cannot run on bare clip embeddings."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, num_classes)

    def forward(self, encoded: Encoded) -> Tensor:
        return self.linear(encoded.tokens[:, 1])


def device_indices(counts: dict[str, int]) -> Tensor:
    return torch.tensor([TAU_DEVICES.index(d) for d, n in counts.items() for _ in range(n)])


def audio_of(devices: Tensor) -> ClipAudio:
    clips = [
        Clip(Path(f"clip{i}.wav"), 0, TAU_DEVICES[d] if d >= 0 else "")
        for i, d in enumerate(devices.tolist())
    ]
    zeros = torch.zeros(len(clips), dtype=torch.long)
    return ClipAudio(clips, torch.zeros(len(clips), 4), zeros, devices, 16000)


def informative(devices: Tensor, gen: torch.Generator) -> Tensor:
    """A one-hot device code in the first dimensions plus noise of the same scale."""
    x = 0.25 * torch.randn(len(devices), DIM, generator=gen)
    x[torch.arange(len(devices)), devices] += 1.0
    return x


def noise(devices: Tensor, gen: torch.Generator) -> Tensor:
    return torch.randn(len(devices), DIM, generator=gen)


def make_ctx(
    embed_fn=informative,
    train_devices: Tensor | None = None,
    eval_devices: Tensor | None = None,
    seed: int = 0,
    backbone: Backbone | None = None,
) -> EvalContext:
    gen = torch.Generator().manual_seed(100 + seed)
    devices = {
        "train": device_indices(TRAIN_COUNTS) if train_devices is None else train_devices,
        "eval": device_indices(EVAL_COUNTS) if eval_devices is None else eval_devices,
    }
    audio = {split: audio_of(d) for split, d in devices.items()}
    embeddings = {split: embed_fn(d, gen) for split, d in devices.items()}

    def no_predict(split: str) -> Tensor:
        raise AssertionError("the device probe must not use the scene classifier")

    return EvalContext(
        backbone=backbone or TinyBackbone(),
        method=Method(None),
        task=Task(classes=["scene"], devices=TAU_DEVICES, sample_rate=16000),
        splits=DataSplits(["scene"], audio["train"].clips, audio["eval"].clips, 1.0, TAU_DEVICES),
        torch_device=torch.device("cpu"),
        batch_size=128,
        seed=seed,
        audio=audio.__getitem__,
        predict=no_predict,
        embed=embeddings.__getitem__,
        **standalone_services(torch.device("cpu"), 128),
    )


def probe(**config) -> DeviceProbe:
    return DeviceProbe(DeviceProbe.Config(**config))


def test_registered_with_leaderboard_columns():
    entry = load_plugins()["protocol"].get("device-probe")
    assert entry.cls is DeviceProbe
    keys = {c.key: c for c in DeviceProbe.columns}
    assert set(keys) == {"accuracy", "balanced_accuracy", "chance"}
    assert not keys["accuracy"].higher_is_better  # lower = more device-invariant (Table 2)


def test_balanced_class_weights_hand_computed():
    weights = balanced_class_weights(torch.tensor([0, 0, 0, 1]), 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 2.0]))
    with pytest.raises(ValueError):
        balanced_class_weights(torch.tensor([0, 0]), 2)


def test_probe_metrics_hand_computed():
    metrics = probe_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2]), ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["recall/b"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert metrics["chance"] == pytest.approx(1 / 3)


def test_embeddings_that_encode_the_device_are_probed_accurately():
    backbone = TinyBackbone()
    result = probe().evaluate(make_ctx(informative, backbone=backbone))
    metrics = result.metrics
    assert backbone.heads_built == 1  # the scene head's architecture, for 6 devices
    assert metrics["accuracy"] > 0.9
    assert metrics["balanced_accuracy"] > 0.9
    assert metrics["chance"] == pytest.approx(1 / 6)
    # only the six training devices are probed; unseen s4-s6 are left out
    assert sorted(k for k in metrics if k.startswith("recall/")) == sorted(
        f"recall/{d}" for d in TRAIN_COUNTS
    )
    # balanced loss: the minority devices are recognised, not swallowed by device a
    assert min(metrics[f"recall/{d}"] for d in TRAIN_COUNTS) > 0.8
    assert 1 <= metrics["epochs"] <= 200
    assert "16.67 (1/6)" in result.table
    assert "s4" not in result.table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_embeddings_without_device_information_are_near_chance(seed: int):
    metrics = probe().evaluate(make_ctx(noise, seed=seed)).metrics
    # 300 balanced eval clips: one standard error of a 1/6 guess is 0.022
    assert abs(metrics["accuracy"] - 1 / 6) < 0.07
    assert abs(metrics["balanced_accuracy"] - 1 / 6) < 0.07


def test_linear_head_option():
    metrics = probe(head="linear").evaluate(make_ctx(informative)).metrics
    assert metrics["accuracy"] > 0.9


def test_deterministic_given_the_seed():
    first = probe().evaluate(make_ctx(noise, seed=3)).metrics
    second = probe().evaluate(make_ctx(noise, seed=3)).metrics
    assert first == second


def test_global_rng_is_left_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    ctx = make_ctx(informative)
    torch.manual_seed(11)
    probe(max_epochs=2).evaluate(ctx)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_ends_before_max_epochs():
    metrics = (
        probe(max_epochs=500, patience=3, min_delta=1e-2).evaluate(make_ctx(informative)).metrics
    )
    assert metrics["epochs"] < 500


def test_unknown_devices_are_ignored():
    train = torch.cat([device_indices(TRAIN_COUNTS), torch.full((30,), -1)])
    metrics = probe().evaluate(make_ctx(informative_or_noise, train_devices=train)).metrics
    assert metrics["chance"] == pytest.approx(1 / 6)
    assert metrics["accuracy"] > 0.9


def informative_or_noise(devices: Tensor, gen: torch.Generator) -> Tensor:
    """Informative rows for known devices, noise for unknown (-1) ones."""
    x = noise(devices, gen)
    known = devices >= 0
    x[known] = informative(devices[known], gen)
    return x


def test_one_training_device_is_a_data_error():
    with pytest.raises(DataError, match="at least 2"):
        probe().evaluate(make_ctx(train_devices=torch.zeros(20, dtype=torch.long)))


def test_no_eval_clips_of_training_devices_is_a_data_error():
    unseen = device_indices({"s4": 10, "s5": 10})
    with pytest.raises(DataError, match="no clips of the training devices"):
        probe().evaluate(make_ctx(eval_devices=unseen))


def test_head_that_needs_more_than_the_embedding_asks_for_linear():
    ctx = make_ctx(backbone=TinyBackbone(SecondTokenHead))
    with pytest.raises(HarnessError, match=r"head=linear"):
        probe().evaluate(ctx)
    assert probe(head="linear").evaluate(ctx).metrics["accuracy"] > 0.9


# -- window length: 1 s windows of merged 10 s training recordings ----------------------


class WindowBackbone(TinyBackbone):
    """Embeds a waveform window as its first DIM samples; records the lengths it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def frontend(self) -> nn.Module:
        return nn.Identity()

    def forward(self, features: Tensor) -> Encoded:
        self.lengths.append(features.shape[-1])
        return Encoded(features[:, :DIM], features[:, None, :DIM])


def merged_ctx(backbone: WindowBackbone, windows: int = 10) -> EvalContext:
    """Training recordings of ``windows`` x 2 DIM samples, evaluation clips of 2 DIM."""
    gen = torch.Generator().manual_seed(5)
    devices = {"train": device_indices(TRAIN_COUNTS), "eval": device_indices(EVAL_COUNTS)}
    lengths = {"train": windows * 2 * DIM, "eval": 2 * DIM}
    audio = {}
    for split, dev in devices.items():
        wave = 0.25 * torch.randn(len(dev), lengths[split], generator=gen)
        wave[torch.arange(len(dev)), dev] += 1.0  # the device code, in every window
        for w in range(1, lengths[split] // (2 * DIM)):
            wave[torch.arange(len(dev)), w * 2 * DIM + dev] += 1.0
        base = audio_of(dev)
        audio[split] = ClipAudio(base.clips, wave, base.labels, dev, 16000)

    def embed(split: str) -> Tensor:
        if lengths[split] != 2 * DIM:
            raise AssertionError("whole training recordings embedded")
        return audio[split].wave[:, :DIM]

    ctx = make_ctx(backbone=backbone)
    ctx.audio, ctx.embed = audio.__getitem__, embed
    return ctx


def test_probe_trains_on_windows_of_the_evaluation_length_under_merged_segments():
    backbone = WindowBackbone()
    ctx = merged_ctx(backbone)
    x, devices, seconds = DeviceProbe.split_data(ctx, "train", 2 * DIM)
    wave = ctx.audio("train").wave
    n = len(wave)
    assert x.shape == (10 * n, DIM) and seconds == 2 * DIM / 16000
    torch.testing.assert_close(x[1], wave[0, 2 * DIM : 3 * DIM][:DIM])  # clip 0, window 1
    torch.testing.assert_close(x[10 * 3 + 4], wave[3, 8 * DIM : 9 * DIM][:DIM])
    assert torch.equal(devices, device_indices(TRAIN_COUNTS).repeat_interleave(10))
    assert set(backbone.lengths) == {2 * DIM}

    metrics = probe().evaluate(merged_ctx(backbone)).metrics
    assert metrics["train_seconds"] == metrics["eval_seconds"] == 2 * DIM / 16000
    assert metrics["accuracy"] > 0.9


def test_whole_recordings_option_keeps_the_training_length():
    backbone = WindowBackbone()
    ctx = merged_ctx(backbone)
    ctx.embed = lambda split: ctx.audio(split).wave[:, :DIM]
    metrics = probe(train_window="whole").evaluate(ctx).metrics
    assert metrics["train_seconds"] == 10 * metrics["eval_seconds"]
    assert backbone.lengths == []  # nothing cut into windows


# -- what the probe asks the engine for, and its pieces, checked exactly ------------------


def test_the_training_job_carries_every_probe_setting():
    ctx = make_ctx(informative, seed=7)
    jobs = []

    def record(job):
        jobs.append(job)
        return standalone(ctx.torch_device).fit(job)

    ctx.train = record
    config = dict(lr=3e-3, weight_decay=0.01, batch_size=64, max_epochs=4, patience=2)
    metrics = probe(**config, min_delta=0.05).evaluate(ctx).metrics
    (job,) = jobs
    settings = job.phases[0].optimizer
    assert (job.name, job.epochs, job.batch_size, settings.lr) == ("device-probe", 4, 64, 3e-3)
    assert (settings.weight_decay, job.patience, job.min_delta) == (0.01, 2, 0.05)
    assert (job.drop_last, job.seed, job.log_epochs) == (False, 7, False)
    # class-balanced cross-entropy: n / (K n_k) for 400 clips of a and 40 of each other device
    counts = torch.tensor([400.0, 40, 40, 40, 40, 40])
    torch.testing.assert_close(job.model.weights, 600 / (6 * counts))
    assert "weights" in dict(job.model.named_buffers())
    assert 1 <= metrics["epochs"] <= 4


def test_probe_step_is_the_class_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    weights = torch.tensor([0.25, 3.0])
    step = ProbeStep(nn.Identity(), weights)
    empty = torch.zeros(3)
    loss = step(Batch(empty, labels, empty, empty, features=logits)).loss
    # weighted mean: sum_i w_{y_i} * nll_i / sum_i w_{y_i}
    nll = [np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(-1.0)), np.log(2.0)]
    expected = (0.25 * nll[0] + 3.0 * nll[1] + 0.25 * nll[2]) / (0.25 + 3.0 + 0.25)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_encoded_head_gives_the_head_one_token_per_clip():
    seen = []

    class FirstTokenHead(nn.Module):
        def forward(self, encoded: Encoded) -> Tensor:
            seen.append(encoded.tokens.shape)
            return encoded.tokens[:, 0] + encoded.embedding

    out = EncodedHead(FirstTokenHead())(torch.ones(3, 5))
    assert seen == [(3, 1, 5)]
    torch.testing.assert_close(out, torch.full((3, 5), 2.0))


def test_relabel_maps_training_devices_and_drops_the_rest():
    # task devices 0..3; the probe keeps devices 0 and 2 as classes 0 and 1
    to_probe = torch.tensor([0, -1, 1, -1])
    devices = torch.tensor([-1, 0, 1, 2, 3, 2])
    assert relabel(devices, to_probe).tolist() == [-1, 0, -1, 1, -1, 1]


def test_train_accuracy_is_reported():
    metrics = probe().evaluate(make_ctx(informative)).metrics
    assert 0.9 < metrics["train_accuracy"] <= 1.0
    metrics = probe(max_epochs=3).evaluate(make_ctx(noise)).metrics
    assert 0.0 < metrics["train_accuracy"] < 0.9


def test_no_eval_clips_error_names_the_training_devices():
    unseen = device_indices({"s4": 10})
    with pytest.raises(DataError, match="training devices a, b, c, s1, s2, s3$"):
        probe().evaluate(make_ctx(eval_devices=unseen))


def test_class_weights_error_names_the_problem():
    with pytest.raises(ValueError, match="^every class needs at least one training example$"):
        balanced_class_weights(torch.tensor([1, 1]), 2)


def test_render_table_hand_checked():
    metrics = {
        "recall/a": 0.5,
        "recall/b": 1.0,
        "accuracy": 0.75,
        "balanced_accuracy": 0.75,
        "chance": 0.5,
    }
    table = render_table(metrics, ["a", "b"], torch.tensor([3, 1]), torch.tensor([2, 2]))
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert [" ".join(line.split()) for line in lines] == [
        "| device | train clips | eval clips | device accuracy (%) | chance (%) |",
        "|-------------------|---------------|--------------|-----------------------|--------------|",
        "| a | 3 | 2 | 50.00 | |",
        "| b | 1 | 2 | 100.00 | |",
        "| accuracy | 4 | 4 | 75.00 | 50.00 (1/2) |",
        "| balanced accuracy | | | 75.00 | 50.00 (1/2) |",
    ]
    assert lines[2].endswith("|                 50.00 |              |")  # numbers to the right
    # a device without evaluation clips has no recall and no row
    del metrics["recall/b"]
    rows = render_table(metrics, ["a", "b"], torch.tensor([3, 1]), torch.tensor([2, 0]))
    assert [line.split("|")[1].strip() for line in rows.splitlines()[2:]] == [
        "a",
        "accuracy",
        "balanced accuracy",
    ]
