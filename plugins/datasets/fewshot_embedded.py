"""The embedded few-shot benchmark: synthetic sound classes generated on first use.

A deterministic generator writes ``classes`` sound classes (default 50, as in
ESC-50) in the ESC-50 layout, plus a pool of unlabeled clips in AudioMAE's
JSON layout, into the cache folder (``$HARNESS_CACHE``)::

    fewshot-embedded/<key>/meta/esc50.csv        the labeled clips, 5 folds
    fewshot-embedded/<key>/audio/*.wav
    fewshot-embedded/<key>/pool/pool.json        {"data": [{"wav": ..., "labels": ...}]}
    fewshot-embedded/<key>/splits/{train,val,test}.txt   class splits (60/20/20)
    fewshot-embedded/<key>/meta/generator.json   the settings and the seconds it took

Each class belongs to one of eight families of sounds (harmonic tones, band
noise, sirens, impulse trains, FM bells, vowels, crackle, chords) and draws
its own family parameters; every clip then varies pitch, timbre (harmonic
weights), envelope, timing (onset, rate), background noise (SNR) and gain, so
classes overlap the way real recordings do. Pool clips come from sound classes
of the same families that are not among the labeled ones, like tuning on
AudioSet and testing on ESC-50.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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
    progress,
)
from harness_plugins.datasets._common import (
    check_generated_size,
    clip_count,
    outside_domains,
    read_audioset_json,
)
from harness_plugins.datasets._esc50_layout import FOLDS, read_esc50, split_by_fold
from harness_plugins.datasets._synth import (
    bandpass,
    envelope,
    harmonic_stack,
    jitter,
    log_uniform,
    semitones,
)

GENERATOR_VERSION = 1
FAMILIES = ("harmonic", "noise", "siren", "impulses", "bell", "vowel", "crackle", "chord")
CLASS_SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}

Params = dict[str, float]


# -- families: class parameters and one clip ----------------------------------
#
# ``make_<family>(rng, u)`` draws a class's parameters; ``u`` in [0, 1) spreads the
# family's main parameter over its range so classes of one family differ.
# ``render_<family>(p, rng, n, sr)`` renders one clip's sound event of n samples.


def make_harmonic(rng: np.random.Generator, u: float) -> Params:
    n_harm = int(rng.integers(3, 13))
    tilt = rng.uniform(0.5, 0.95)
    odd_only = rng.uniform() < 0.3
    p: Params = {
        "f0": log_uniform(rng, 110, 1760, u),
        "vib_depth": rng.uniform(0.0, 0.02),
        "vib_rate": rng.uniform(3, 7),
        "attack": log_uniform(rng, 0.005, 0.1),
        "decay": log_uniform(rng, 0.1, 1.0),
        "sustain": rng.uniform(0.0, 0.8),
        "pitch_spread": rng.uniform(0.2, 0.8),
        "n_harm": float(n_harm),
    }
    for k in range(1, n_harm + 1):
        p[f"h{k}"] = 0.0 if odd_only and k % 2 == 0 else tilt**k * rng.uniform(0.2, 1.0)
    return p


def harmonic_weights(p: Params, rng: np.random.Generator, sigma: float = 0.25) -> np.ndarray:
    """The class's harmonic weights, each varied by a log-normal factor."""
    weights = np.array([p[f"h{k}"] for k in range(1, int(p["n_harm"]) + 1)])
    return weights * np.exp(rng.normal(0.0, sigma, size=weights.shape))


def render_harmonic(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0 = semitones(rng, p["f0"], p["pitch_spread"])
    t = np.arange(n) / sr
    depth = jitter(rng, p["vib_depth"] + 1e-4, 0.3)
    rate = jitter(rng, p["vib_rate"], 0.1)
    freq = f0 * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    tone = harmonic_stack(freq, harmonic_weights(p, rng), sr, rng.uniform(0, 2 * np.pi))
    env = envelope(n, sr, jitter(rng, p["attack"], 0.2), jitter(rng, p["decay"], 0.2), p["sustain"])
    return tone * env


def make_noise(rng: np.random.Generator, u: float) -> Params:
    return {
        "center": log_uniform(rng, 200, 6000, u),
        "octaves": rng.uniform(0.15, 1.2),
        "am_rate": rng.uniform(0.0, 12.0),
        "am_depth": rng.uniform(0.0, 0.9),
        "attack": log_uniform(rng, 0.02, 0.3),
    }


def render_noise(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    center = jitter(rng, p["center"], 0.07)
    half = 2 ** (jitter(rng, p["octaves"], 0.15) / 2)
    band = bandpass(rng.normal(size=n), center / half, center * half, sr)
    t = np.arange(n) / sr
    am = 1 - p["am_depth"] * 0.5 * (
        1 + np.sin(2 * np.pi * jitter(rng, p["am_rate"] + 0.1, 0.1) * t)
    )
    return band * am * envelope(n, sr, jitter(rng, p["attack"], 0.3), 10.0, 1.0)


def make_siren(rng: np.random.Generator, u: float) -> Params:
    return {
        "low": log_uniform(rng, 300, 1500, u),
        "ratio": rng.uniform(1.2, 3.0),
        "rate": log_uniform(rng, 0.5, 6.0),
        "h2": rng.uniform(0.0, 0.6),
        "h3": rng.uniform(0.0, 0.3),
    }


def render_siren(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    low = semitones(rng, p["low"], 0.5)
    rate = jitter(rng, p["rate"], 0.1)
    sweep = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    freq = low * jitter(rng, p["ratio"], 0.05) ** sweep
    tone = harmonic_stack(
        freq, np.array([1.0, p["h2"], p["h3"]]) * np.exp(rng.normal(0, 0.2, 3)), sr
    )
    return tone * envelope(n, sr, 0.03, 10.0, 1.0)


def make_impulses(rng: np.random.Generator, u: float) -> Params:
    return {
        "resonance": log_uniform(rng, 300, 5000, u),
        "rate": log_uniform(rng, 2, 20),
        "irregularity": rng.uniform(0.0, 0.3),
        "tau": log_uniform(rng, 0.003, 0.05),
        "click": rng.uniform(0.0, 0.5),
    }


def render_impulses(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    period = 1.0 / jitter(rng, p["rate"], 0.1)
    resonance = semitones(rng, p["resonance"], 0.3)
    tau = jitter(rng, p["tau"], 0.2)
    length = min(n, int(6 * tau * sr) + 1)
    t = np.arange(length) / sr
    hit = np.sin(2 * np.pi * resonance * t) * np.exp(-t / tau)
    hit[: min(length, 16)] += p["click"] * rng.normal(size=min(length, 16))
    out = np.zeros(n)
    when = rng.uniform(0, period)
    while when < n / sr:
        start = int(when * sr)
        stop = min(n, start + length)
        out[start:stop] += hit[: stop - start] * rng.uniform(0.6, 1.0)
        when += period * (1 + p["irregularity"] * rng.normal())
        when = max(when, start / sr + 0.002)
    return out


def make_bell(rng: np.random.Generator, u: float) -> Params:
    return {
        "carrier": log_uniform(rng, 200, 2000, u),
        "ratio": rng.uniform(0.5, 4.0),
        "index": rng.uniform(0.5, 8.0),
        "decay": log_uniform(rng, 0.1, 0.8),
    }


def render_bell(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    carrier = semitones(rng, p["carrier"], 0.4)
    modulator = carrier * jitter(rng, p["ratio"], 0.02)
    decay = jitter(rng, p["decay"], 0.2)
    index = jitter(rng, p["index"], 0.2) * np.exp(-t / decay)
    tone = np.sin(2 * np.pi * carrier * t + index * np.sin(2 * np.pi * modulator * t))
    return tone * envelope(n, sr, 0.002, decay, 0.0)


def make_vowel(rng: np.random.Generator, u: float) -> Params:
    return {
        "f1": log_uniform(rng, 250, 900, u),
        "f2": log_uniform(rng, 800, 2500),
        "f3": rng.uniform(2000, 3500),
        "bandwidth": rng.uniform(60, 150),
        "f0": log_uniform(rng, 90, 260),
    }


def render_vowel(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0 = semitones(rng, p["f0"], 2.0)
    t = np.arange(n) / sr
    glide = 1 + rng.normal(0, 0.03) * t / max(t[-1], 1e-3)
    freq = f0 * glide * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    formants = [semitones(rng, p[f], 0.5) for f in ("f1", "f2", "f3")]
    width = jitter(rng, p["bandwidth"], 0.2)
    harmonics = f0 * np.arange(1, int(0.45 * sr / f0))
    weights = sum(1 / (1 + ((harmonics - f) / width) ** 2) for f in formants) / np.sqrt(
        np.arange(1, len(harmonics) + 1)
    )
    tone = harmonic_stack(freq, weights, sr)
    return tone * envelope(n, sr, jitter(rng, 0.04, 0.3), 10.0, 1.0)


def make_crackle(rng: np.random.Generator, u: float) -> Params:
    return {
        "density": log_uniform(rng, 20, 300, u),
        "center": log_uniform(rng, 500, 6000),
        "rumble": rng.uniform(0.0, 0.5),
    }


def render_crackle(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    density = jitter(rng, p["density"], 0.2)
    events = rng.uniform(size=n) < density / sr
    pops = events * rng.lognormal(0.0, 0.7, size=n) * rng.choice([-1.0, 1.0], size=n)
    center = jitter(rng, p["center"], 0.1)
    crackle = bandpass(pops, center / 1.6, center * 1.6, sr) * 8
    rumble = bandpass(rng.normal(size=n), 40, 200, sr) * p["rumble"]
    return crackle + rumble


def make_chord(rng: np.random.Generator, u: float) -> Params:
    intervals = rng.choice([3, 4, 5, 7, 8, 9, 12], size=2, replace=False)
    return {
        "root": log_uniform(rng, 130, 1000, u),
        "i1": float(intervals[0]),
        "i2": float(intervals[1]),
        "n_harm": float(rng.integers(1, 5)),
        "tremolo": rng.uniform(0.0, 8.0),
        "decay": log_uniform(rng, 0.2, 1.5),
    }


def render_chord(p: Params, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    root = semitones(rng, p["root"], 0.5)
    weights = 0.7 ** np.arange(int(p["n_harm"]))
    out = np.zeros(n)
    for step in (0.0, p["i1"], p["i2"]):
        freq = np.full(n, root * 2 ** (step / 12))
        out += harmonic_stack(freq, weights * np.exp(rng.normal(0, 0.2, len(weights))), sr)
    tremolo = 1 - 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * jitter(rng, p["tremolo"] + 0.1, 0.1) * t))
    return out * tremolo * envelope(n, sr, 0.01, jitter(rng, p["decay"], 0.2), 0.2)


MAKERS: dict[str, Callable[[np.random.Generator, float], Params]] = {
    "harmonic": make_harmonic,
    "noise": make_noise,
    "siren": make_siren,
    "impulses": make_impulses,
    "bell": make_bell,
    "vowel": make_vowel,
    "crackle": make_crackle,
    "chord": make_chord,
}
RENDERERS: dict[str, Callable[[Params, np.random.Generator, int, int], np.ndarray]] = {
    "harmonic": render_harmonic,
    "noise": render_noise,
    "siren": render_siren,
    "impulses": render_impulses,
    "bell": render_bell,
    "vowel": render_vowel,
    "crackle": render_crackle,
    "chord": render_chord,
}


# -- classes and clips --------------------------------------------------------


@dataclass(frozen=True)
class SoundClass:
    name: str
    family: str
    params: Params


def sound_classes(count: int, seed: int, stream: int = 0) -> list[SoundClass]:
    """``count`` classes spread round-robin over the families.

    The main parameter of the j-th class of a family sits in the j-th of equal
    slices of its range, so classes of one family are near but distinct.
    """
    per_family = [len(range(f, count, len(FAMILIES))) for f in range(len(FAMILIES))]
    classes = []
    for index in range(count):
        family_index = index % len(FAMILIES)
        family = FAMILIES[family_index]
        rng = np.random.default_rng([seed, stream, index])
        slot = index // len(FAMILIES)
        u = (slot + rng.uniform(0.15, 0.85)) / per_family[family_index]
        classes.append(SoundClass(f"{family}_{slot:02d}", family, MAKERS[family](rng, u)))
    return classes


def render_clip(sound: SoundClass, rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """One clip: the class's event at a random onset and length, background noise, gain."""
    n = round(seconds * sr)
    onset = int(rng.uniform(0.0, 0.25) * n)
    length = max(int(rng.uniform(0.55, 1.0) * (n - onset)), 1)
    event = RENDERERS[sound.family](sound.params, rng, length, sr)
    event /= np.max(np.abs(event)) + 1e-9
    clip = np.zeros(n)
    clip[onset : onset + length] = event
    noise = rng.normal(size=n)
    from scipy import signal  # heavy import, only when generating

    noise = signal.lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], noise)
    snr_db = rng.uniform(8.0, 30.0)
    power = np.mean(clip**2) + 1e-12
    clip += noise * np.sqrt(power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return (clip / (np.max(np.abs(clip)) + 1e-9) * rng.uniform(0.3, 0.9)).astype(np.float32)


# -- writing the data set -----------------------------------------------------


@dataclass(frozen=True)
class GeneratorSettings:
    classes: int
    clips_per_class: int
    pool_clips: int
    pool_classes: int
    seconds: float
    sample_rate: int
    seed: int

    def key(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return f"v{GENERATOR_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def generate(settings: GeneratorSettings, root: Path) -> None:
    """Write the labeled clips (ESC-50 layout), the pool (AudioMAE JSON) and class splits."""
    started = time.perf_counter()
    s = settings
    labeled = sound_classes(s.classes, s.seed, stream=0)
    pool_sources = sound_classes(s.pool_classes, s.seed, stream=1)
    (root / "meta").mkdir()
    (root / "audio").mkdir()
    (root / "pool" / "audio").mkdir(parents=True)
    jobs = [(target, i) for target in range(s.classes) for i in range(s.clips_per_class)]
    jobs += [(-1, k) for k in range(s.pool_clips)]
    rows, pool = [], []
    for target, i in progress(jobs, desc="generating fewshot-embedded", unit="clip"):
        if target >= 0:
            rng = np.random.default_rng([s.seed, 2, target, i])
            fold = i % len(FOLDS) + 1
            src = 100000 + 1000 * target + i
            filename = f"{fold}-{src}-A-{target}.wav"
            clip = render_clip(labeled[target], rng, s.seconds, s.sample_rate)
            sf.write(root / "audio" / filename, clip, s.sample_rate, subtype="PCM_16")
            rows.append(f"{filename},{fold},{target},{labeled[target].name},False,{src},A")
        else:
            source = pool_sources[i % len(pool_sources)]
            rng = np.random.default_rng([s.seed, 3, i])
            relative = f"audio/pool_{i:05d}.wav"
            clip = render_clip(source, rng, s.seconds, s.sample_rate)
            sf.write(root / "pool" / relative, clip, s.sample_rate, subtype="PCM_16")
            pool.append({"wav": relative, "labels": f"pool/{source.name}"})
    header = "filename,fold,target,category,esc10,src_file,take"
    (root / "meta" / "esc50.csv").write_text("\n".join([header, *rows]) + "\n")
    (root / "pool" / "pool.json").write_text(json.dumps({"data": pool}, indent=1) + "\n")
    write_class_splits(root / "splits", [c.name for c in labeled], s.seed)
    seconds = round(time.perf_counter() - started, 2)
    info = {"version": GENERATOR_VERSION, **asdict(s), "generation_seconds": seconds}
    (root / "meta" / "generator.json").write_text(json.dumps(info, indent=2) + "\n")
    note(f"fewshot-embedded: generated {len(jobs)} clips in {seconds:.1f} s")


def write_class_splits(folder: Path, names: list[str], seed: int) -> None:
    """Disjoint train/val/test class lists (one name per line), as MetaAudio splits classes."""
    folder.mkdir()
    order = list(names)
    random.Random(seed).shuffle(order)
    n_train = round(CLASS_SPLIT["train"] * len(order))
    n_val = round(CLASS_SPLIT["val"] * len(order))
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    for split, members in parts.items():
        (folder / f"{split}.txt").write_text("".join(f"{m}\n" for m in sorted(members)))


class FewshotEmbedded(Dataset):
    name = "fewshot-embedded"
    generator_version = GENERATOR_VERSION
    description = (
        "Synthetic few-shot benchmark: 50 sound classes of 8 families in the ESC-50 layout, "
        "plus an unlabeled pool; generated into the cache folder on first use."
    )

    @dataclass
    class Config:
        classes: int = 50
        clips_per_class: int = 30
        pool_clips: int = 512
        pool_classes: int = 64
        """Sound classes the pool's clips come from (not among the labeled ones)."""
        seconds: float = 1.0
        sample_rate: int = 16000
        seed: int = 0
        """Seed of the generator (the data set itself), not of the run."""
        train: Literal["pool", "labeled"] = "pool"
        """Train split: the unlabeled pool (tuning) or the labeled clips outside ``fold``."""
        fold: int = 0
        """Eval fold 1-5, or 0 for every labeled clip (few-shot evaluation)."""

        domains = domain_map(
            classes=clip_count("Labeled sound classes.", low=2),
            clips_per_class=clip_count("Labeled clips per class (at least fold)."),
            pool_clips=clip_count("Clips of the unlabeled pool."),
            pool_classes=clip_count("Sound classes the pool's clips come from."),
            seconds=Domain(gt=0, le=60, help="Seconds per generated clip."),
            sample_rate=between(1000, 192000, "Sample rate of the generated clips (Hz)."),
            seed=non_negative("Seed of the generator (the data set itself), not of the run."),
            fold=between(0, 5, "Eval fold 1-5, or 0 for every labeled clip."),
        )

        def __post_init__(self) -> None:
            for name in ("classes", "clips_per_class", "pool_clips", "pool_classes", "sample_rate"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
            if self.classes < 2:
                raise ValueError(f"classes must be at least 2, got {self.classes}")
            if self.seconds <= 0:
                raise ValueError(f"seconds must be positive, got {self.seconds}")
            if self.fold not in (0, *FOLDS):
                raise ValueError(f"fold must be 0 (all clips) or 1-5, got {self.fold}")
            if self.train == "labeled" and self.fold == 0:
                raise ValueError(
                    "train=labeled needs an eval fold 1-5 (fold=0 puts every clip in eval)"
                )
            if outside_domains(self):
                return  # the field's own range is the message
            if self.fold > self.clips_per_class:
                raise ValueError(
                    f"fold {self.fold} holds no clip with clips_per_class "
                    f"{self.clips_per_class} (clip i of a class is in fold i % 5 + 1): "
                    f"clips_per_class must be at least {self.fold}"
                )
            check_generated_size(
                self.classes * self.clips_per_class + self.pool_clips,
                self.seconds,
                self.sample_rate,
                "classes x clips_per_class + pool_clips",
            )

    def settings(self) -> GeneratorSettings:
        cfg = self.config
        return GeneratorSettings(
            classes=cfg.classes,
            clips_per_class=cfg.clips_per_class,
            pool_clips=cfg.pool_clips,
            pool_classes=cfg.pool_classes,
            seconds=cfg.seconds,
            sample_rate=cfg.sample_rate,
            seed=cfg.seed,
        )

    def root(self) -> Path:
        """The generated data set's folder (generated now unless already complete)."""
        settings = self.settings()
        folder = cache_root() / "fewshot-embedded" / settings.key()
        return build_once(folder, lambda tmp: generate(settings, tmp))

    def load(self) -> DataSplits:
        cfg = self.config
        root = self.root()
        table = read_esc50(root, dataset=self.name)
        if cfg.fold == 0:
            labeled_train, eval_ = [], [c for f in FOLDS for c in table.clips_by_fold[f]]
        else:
            labeled_train, eval_ = split_by_fold(table, cfg.fold)
        pool = (
            read_audioset_json(root / "pool" / "pool.json", self.name)
            if cfg.train == "pool"
            else []
        )
        return DataSplits(
            classes=table.classes,
            train=pool if cfg.train == "pool" else labeled_train,
            eval=eval_,
            clip_seconds=cfg.seconds,
            root=root,
            fold_key="fold" if cfg.train == "labeled" else "",
        )


@hookimpl
def register_datasets(register) -> None:
    register(FewshotEmbedded)
