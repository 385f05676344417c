"""The embedded multi-label benchmark: AudioSet's layout, generated on first use.

A deterministic generator writes, into the cache folder (``$HARNESS_CACHE``), the files a
user has after downloading AudioSet, and reads them back through the ``audioset`` reader::

    audioset-embedded/<key>/class_labels_indices.csv
    audioset-embedded/<key>/balanced_train_segments.csv   comment lines, quoted label lists
    audioset-embedded/<key>/eval_segments.csv
    audioset-embedded/<key>/audio/{balanced_train,eval}/Y<ytid>.wav   (PANNs' file names)
    audioset-embedded/<key>/generator.json                the settings

Each class is one kind of sound event (a harmonic tone or a band of noise, each at its own
pitch or band). A clip holds 1 to ``max_events`` events of different classes at random
onsets and lengths, overlapping in time, over background noise; its label set is the
classes of its events. Classes are drawn with falling frequencies (a Zipf-like prior, as in
AudioSet, where speech and music dominate). ``missing`` listed train clips get no audio
file, as on every AudioSet mirror, so loading reports them in one line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from harness import hookimpl
from harness.api import (
    Dataset,
    DataSplits,
    Domain,
    between,
    build_once,
    cache_root,
    domain_map,
    non_negative,
    note,
)
from harness_plugins.datasets._audioset_layout import (
    Layout,
    Segment,
    load_layout,
    write_class_index,
    write_segments,
)
from harness_plugins.datasets._common import check_generated_size, clip_count, outside_domains
from harness_plugins.datasets._synth import ytid

GENERATOR_VERSION = 1
TONE_BASE_HZ = 180.0
NOISE_BANDS_HZ = ((300, 700), (900, 1600), (2000, 3200), (3600, 5200), (5600, 7600))


@dataclass(frozen=True)
class GeneratorSettings:
    classes: int
    train_clips: int
    eval_clips: int
    max_events: int
    missing: int
    seconds: float
    sample_rate: int
    seed: int

    def key(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return f"v{GENERATOR_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def class_names(count: int) -> list[str]:
    """Even classes are tones (rising pitch), odd classes noise bands (rising band)."""
    names = []
    for k in range(count):
        if k % 2 == 0:
            names.append(f"Tone {tone_hz(k):.0f} Hz")
        else:
            low, high = noise_band(k)
            names.append(f"Noise {low}-{high} Hz")
    return names


def tone_hz(k: int) -> float:
    return TONE_BASE_HZ * 1.6 ** (k // 2)


def noise_band(k: int) -> tuple[int, int]:
    return NOISE_BANDS_HZ[(k // 2) % len(NOISE_BANDS_HZ)]


def render_event(k: int, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """``n`` samples of one event of class ``k`` (a faded tone or noise band)."""
    t = np.arange(n) / sr
    if k % 2 == 0:
        f0 = tone_hz(k) * 2 ** (rng.normal(0, 0.03))
        weights = (1.0, 0.5, 0.25)
        x = sum(w * np.sin(2 * np.pi * f0 * (h + 1) * t) for h, w in enumerate(weights))
    else:
        low, high = noise_band(k)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spectrum[(freqs < low) | (freqs > high)] = 0
        x = np.fft.irfft(spectrum, n)
        x = x / (np.abs(x).max() + 1e-9)
    fade = min(n // 4, int(0.02 * sr))
    envelope = np.ones(n)
    if fade:
        ramp = np.linspace(0, 1, fade)
        envelope[:fade], envelope[-fade:] = ramp, ramp[::-1]
    return x * envelope


def render_clip(
    rng: np.random.Generator, settings: GeneratorSettings, prior: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """One clip and the sorted classes of its overlapping events."""
    s = settings
    length = round(s.seconds * s.sample_rate)
    count = int(rng.integers(1, s.max_events + 1))
    classes = sorted(int(k) for k in rng.choice(s.classes, size=count, replace=False, p=prior))
    clip = 0.02 * rng.standard_normal(length)
    for k in classes:
        n = int(length * rng.uniform(0.3, 0.8))
        start = int(rng.integers(0, length - n + 1))
        clip[start : start + n] += rng.uniform(0.2, 0.5) * render_event(k, rng, n, s.sample_rate)
    return (clip / max(1.0, np.abs(clip).max())).astype(np.float32), classes


def generate(settings: GeneratorSettings, root: Path) -> None:
    """Write the class index, both segment lists and the audio files."""
    s = settings
    mids = [f"/m/emb{k:03d}" for k in range(s.classes)]
    write_class_index(root / "class_labels_indices.csv", mids, class_names(s.classes))
    prior = 1.0 / np.arange(1, s.classes + 1) ** 0.7
    prior /= prior.sum()
    for split, count, listing, stream in (
        ("balanced_train", s.train_clips, "balanced_train_segments.csv", 0),
        ("eval", s.eval_clips, "eval_segments.csv", 1),
    ):
        folder = root / "audio" / split
        folder.mkdir(parents=True)
        segments = []
        for i in range(count):
            rng = np.random.default_rng([s.seed, stream, i])
            name = ytid(rng)
            clip, classes = render_clip(rng, s, prior)
            start = float(10 * (i % 30))
            segments.append(Segment(name, start, start + 10, tuple(mids[k] for k in classes)))
            if not (split == "balanced_train" and i >= count - s.missing):
                sf.write(folder / f"Y{name}.wav", clip, s.sample_rate, subtype="PCM_16")
        write_segments(root / listing, segments, s.classes)
    info = {"version": GENERATOR_VERSION, **asdict(s)}
    (root / "generator.json").write_text(json.dumps(info, indent=2) + "\n")
    note(f"audioset-embedded: generated {s.train_clips + s.eval_clips} clips")


class AudioSetEmbedded(Dataset):
    name = "audioset-embedded"
    generator_version = GENERATOR_VERSION
    description = (
        "Synthetic multi-label benchmark in AudioSet's published layout (segment CSVs, class "
        "index, Y<ytid>.wav): overlapping tone and noise events; generated on first use."
    )

    @dataclass
    class Config:
        classes: int = 10
        train_clips: int = 240
        eval_clips: int = 120
        max_events: int = 3
        """Most events (of different classes) in one clip."""
        missing: int = 2
        """Listed train clips written without an audio file (as on an AudioSet mirror)."""
        seconds: float = 2.0
        sample_rate: int = 16000
        seed: int = 0
        """Seed of the generator (the data set itself), not of the run."""

        domains = domain_map(
            classes=between(2, 2 * len(NOISE_BANDS_HZ), "Event classes (tones and noise bands)."),
            train_clips=clip_count("Clips listed in balanced_train_segments.csv."),
            eval_clips=clip_count("Clips listed in eval_segments.csv."),
            max_events=between(1, 2 * len(NOISE_BANDS_HZ), "Most events in one clip (<= classes)."),
            missing=clip_count("Listed train clips without an audio file (<= train_clips / 5).", 0),
            seconds=Domain(gt=0, le=60, help="Seconds per generated clip."),
            sample_rate=between(16000, 192000, "Sample rate of the generated clips (Hz)."),
            seed=non_negative("Seed of the generator (the data set itself), not of the run."),
        )

        def __post_init__(self) -> None:
            if outside_domains(self):
                return  # the field's own range is the message
            if self.max_events > self.classes:
                raise ValueError(
                    f"max_events ({self.max_events}) must be at most classes ({self.classes})"
                )
            if self.missing * 5 > self.train_clips:
                raise ValueError(f"missing ({self.missing}) must be at most a fifth of train_clips")
            check_generated_size(
                self.train_clips + self.eval_clips,
                self.seconds,
                self.sample_rate,
                "train_clips + eval_clips",
            )

    def settings(self) -> GeneratorSettings:
        cfg = self.config
        return GeneratorSettings(
            classes=cfg.classes,
            train_clips=cfg.train_clips,
            eval_clips=cfg.eval_clips,
            max_events=cfg.max_events,
            missing=cfg.missing,
            seconds=cfg.seconds,
            sample_rate=cfg.sample_rate,
            seed=cfg.seed,
        )

    def root(self) -> Path:
        """The generated data set's folder (generated now unless already complete)."""
        settings = self.settings()
        folder = cache_root() / "audioset-embedded" / settings.key()
        return build_once(folder, lambda tmp: generate(settings, tmp))

    def load(self) -> DataSplits:
        return load_layout(Layout(self.root()), self.config.seconds, self.name)

    def load_without_train(self) -> DataSplits:
        return load_layout(Layout(self.root()), self.config.seconds, self.name, train=False)


@hookimpl
def register_datasets(register) -> None:
    register(AudioSetEmbedded)
