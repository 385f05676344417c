"""The embedded TAU22-style benchmark: plan, layout, determinism, devices and learnability."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.fft as sfft
import soundfile as sf

from harness.registry.plugins import load_plugins
from harness_plugins.datasets import tau22_embedded as te
from harness_plugins.datasets._tau22_layout import DEVICE_ORDER, load_tau22
from harness_plugins.datasets.tau22_embedded import Tau22Embedded

SMALL = 0.1


def embedded(cache: Path, **config) -> Tau22Embedded:
    return Tau22Embedded(Tau22Embedded.Config(cache=str(cache), **config))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    return embedded(tmp_path_factory.mktemp("embedded"), scale=SMALL).folder()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the plan (no audio) ------------------------------------------------------


def default_plan() -> list[te.Recording]:
    return te.make_plan(Tau22Embedded(Tau22Embedded.Config()).sizes(), seed=0)


def files_per_device(plan: list[te.Recording], split: str) -> Counter:
    return Counter(d for r in plan if r.split == split for d in r.devices for _ in r.seconds)


def test_default_sizes_match_tau22_proportions():
    plan = default_plan()
    train = files_per_device(plan, "train")
    assert train == {"a": 1000, "b": 120, "c": 120, "s1": 120, "s2": 120, "s3": 120}
    assert train["a"] / sum(train.values()) == pytest.approx(0.625)
    assert files_per_device(plan, "eval") == dict.fromkeys(DEVICE_ORDER, 200)


def test_every_scene_in_both_splits_and_locations_disjoint():
    plan = default_plan()
    for split in ("train", "eval"):
        assert Counter(
            r.scene for r in plan if r.split == split and "a" in r.devices
        ) == dict.fromkeys(te.SCENES, 10 if split == "train" else 20)
    train_places = {r.identifier for r in plan if r.split == "train"}
    eval_places = {r.identifier for r in plan if r.split == "eval"}
    assert train_places.isdisjoint(eval_places)
    assert len({r.segment for r in plan}) == len(plan)


def test_other_devices_record_in_parallel_with_a():
    for rec in default_plan():
        assert rec.devices[0] == "a"
        if rec.split == "train":
            assert set(rec.devices) <= set(te.TRAIN_DEVICES)
            assert rec.seconds == tuple(range(10))
        else:
            assert rec.devices == DEVICE_ORDER
            assert len(rec.seconds) == 1  # one second of each of the 200 recordings


def test_scale_shrinks_but_keeps_every_scene():
    sizes = Tau22Embedded(Tau22Embedded.Config(scale=SMALL)).sizes()
    assert sizes == te.Sizes(10, 1, 20, 20)


# -- the generated folder -----------------------------------------------------


def test_generated_folder_is_the_tau22_layout(small_folder: Path):
    assert (small_folder / "meta.csv").read_text().splitlines()[0] == (
        "filename\tscene_label\tidentifier\tsource_label"
    )
    for fold in ("fold1_train.csv", "fold1_evaluate.csv"):
        header = (small_folder / "evaluation_setup" / fold).read_text().splitlines()[0]
        assert header == "filename\tscene_label"
    info = sf.info(str(next((small_folder / "audio").iterdir())))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (
        44100,
        44100,
        1,
        "PCM_16",
    )
    assert small_folder.name == f"tau22-embedded-v{te.GENERATOR_VERSION}-seed0-a10-o1-e20x20"


def test_loader_reads_what_the_plan_promised(small_folder: Path):
    splits = load_tau22(small_folder)
    plan = te.make_plan(te.Sizes(10, 1, 20, 20), seed=0)
    assert Counter(c.device for c in splits.train) == files_per_device(plan, "train")
    assert Counter(c.device for c in splits.eval) == files_per_device(plan, "eval")
    assert splits.classes == sorted(te.SCENES)
    assert splits.devices == list(DEVICE_ORDER)
    assert not {"s4", "s5", "s6"} & {c.device for c in splits.train}
    assert {c.meta["identifier"] for c in splits.train}.isdisjoint(
        {c.meta["identifier"] for c in splits.eval}
    )


def test_merged_training_recordings_are_ten_seconds(small_folder: Path):
    splits = load_tau22(small_folder, merge_segments=True)
    assert splits.train_clip_seconds == 10.0
    assert len(splits.train) == 15
    assert all(
        [p.name.split("-")[-2] for p in c.segments] == list("0123456789") for c in splits.train
    )


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, small_folder: Path):
    again = embedded(tmp_path / "again", scale=SMALL).folder()
    other = embedded(tmp_path / "other", scale=SMALL, seed=1).folder()
    names = sorted((small_folder / "audio").iterdir())[::37]
    for path in names:
        assert digest(again / "audio" / path.name) == digest(path)
    assert digest(again / "meta.csv") == digest(small_folder / "meta.csv")
    first_other = sorted((other / "audio").iterdir())[0]
    first = sorted((small_folder / "audio").iterdir())[0]
    assert digest(first_other) != digest(first)


def test_generated_once_then_reused(tmp_path: Path, monkeypatch):
    dataset = embedded(tmp_path, scale=SMALL)
    folder = dataset.folder()
    stamp = (folder / ".done").stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("regenerated")

    monkeypatch.setattr(te, "write_dataset", fail)
    assert dataset.folder() == folder
    assert (folder / ".done").stat().st_mtime_ns == stamp


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch):
    calls = []

    def record_then_fail(rec, scene, seed):
        calls.append(rec)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(rec, scene, seed)

    original = te.record
    monkeypatch.setattr(te, "record", record_then_fail)
    with pytest.raises(KeyboardInterrupt):
        embedded(tmp_path, scale=SMALL).folder()
    assert list(tmp_path.iterdir()) == []


def test_cache_folder_comes_from_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(te, "write_dataset", lambda folder, *args: None)
    folder = Tau22Embedded(Tau22Embedded.Config(scale=SMALL)).folder()
    assert folder.parent == tmp_path / "cache"


def test_registered_as_a_dataset():
    assert load_plugins()["dataset"].get("tau22-embedded").cls is Tau22Embedded


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="scale must be positive"):
        Tau22Embedded.Config(scale=0)
    with pytest.raises(ValueError, match="train_clips_a must be at least 1"):
        Tau22Embedded.Config(train_clips_a=0)


# -- devices ------------------------------------------------------------------


def rendered_spectrum(device: str, signal: np.ndarray) -> np.ndarray:
    n = signal.shape[-1]
    out = te.render(sfft.rfft(signal[None], axis=1), n, device, np.random.default_rng(0))
    return np.abs(sfft.rfft(out[0]))


def test_linear_devices_apply_their_frequency_response():
    n = 44100
    impulse = np.zeros(n, np.float32)
    impulse[n // 2] = 1e4  # loud enough to bury the self-noise; these devices are linear
    for device in ("a", "s1", "s5"):
        measured = rendered_spectrum(device, impulse) / 1e4
        expected = te.device_response(device, n)
        band = slice(200, 3000)  # 200 Hz .. 3 kHz (s5's mains hum sits at 50 and 150 Hz)
        np.testing.assert_allclose(measured[band], expected[band], rtol=0.02)


def test_self_noise_has_the_documented_level():
    silence = np.zeros((1, 44100), np.float32)
    for device in ("a", "b", "s5"):
        model = te.DEVICE_MODELS[device]
        out = te.render(sfft.rfft(silence, axis=1), 44100, device, np.random.default_rng(1))
        hum = 10 ** ((model.noise_dbfs + 2) / 20) * np.sqrt(0.5 + 0.125) if model.hum_hz else 0.0
        expected = np.sqrt(10 ** (model.noise_dbfs / 10) + hum**2)
        assert te.rms(out) == pytest.approx(expected, rel=0.15)


def test_clipping_devices_add_harmonics_and_linear_ones_do_not():
    t = np.arange(44100) / 44100
    sine = (0.2 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    for device, distorts in (("a", False), ("c", True), ("s4", True)):
        spectrum = rendered_spectrum(device, sine)
        harmonics = spectrum[1000] + spectrum[1500]
        assert bool(harmonics / spectrum[500] > 0.01) == distorts, device


def test_unseen_devices_differ_from_seen_ones_in_band_energy(small_folder: Path):
    """Long-term spectra of the same evaluation seconds: s4 lacks lows, s5 lacks highs."""
    splits = load_tau22(small_folder)
    stems = {c.path.name.rsplit("-", 1)[0] for c in splits.eval}

    def band_db(device: str, low: int, high: int) -> float:
        power = 0.0
        for stem in stems:
            x, _ = sf.read(small_folder / "audio" / f"{stem}-{device}.wav")
            power += np.mean(np.abs(sfft.rfft(x))[low:high] ** 2)
        return 10 * np.log10(power)

    assert band_db("s4", 50, 200) < band_db("a", 50, 200) - 10
    assert band_db("s5", 6000, 12000) < band_db("a", 6000, 12000) - 10
    assert band_db("c", 10000, 16000) < band_db("a", 10000, 16000) - 10


# -- learnability (a cheap proxy for the transformer) ------------------------


@pytest.mark.slow
def test_scenes_are_learnable_and_unseen_devices_are_harder(tmp_path: Path):
    """Logistic regression on mean/std log-mel bands, trained on the training split."""
    import torch
    import torchaudio
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    from harness.data.loader import load_clips

    splits = embedded(tmp_path, scale=0.3).load()
    mel = torchaudio.transforms.MelSpectrogram(32000, n_fft=1024, hop_length=320, n_mels=64)

    def features(clips):
        audio = load_clips(clips, 32000, 1.0, splits.devices)
        logmel = torch.log(mel(audio.wave) + 1e-5)
        stats = torch.cat([logmel.mean(-1), logmel.std(-1)], 1).numpy()
        return stats, audio.labels.numpy(), np.array([c.device for c in clips])

    x_train, y_train, _ = features(splits.train)
    x_eval, y_eval, devices = features(splits.eval)
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    probs = model.predict_proba(scaler.transform(x_eval))
    on_a = devices == "a"
    unseen = np.isin(devices, ["s4", "s5", "s6"])
    accuracy_a = np.mean(probs[on_a].argmax(1) == y_eval[on_a])
    assert accuracy_a >= 0.3  # chance is 0.1
    loss_a = log_loss(y_eval[on_a], probs[on_a], labels=range(10))
    loss_unseen = log_loss(y_eval[unseen], probs[unseen], labels=range(10))
    assert loss_unseen > loss_a + 0.3
