"""The embedded device benchmark: synthetic acoustic scenes recorded by nine simulated devices.

A deterministic generator writes a small data set in exactly the layout of the TAU Urban
Acoustic Scenes 2022 Mobile development set (see :mod:`harness_plugins.datasets.tau22`) into
``$HARNESS_CACHE`` (default ``~/.cache/harness``), in a folder named by the generator version,
the seed and the sizes; the ``tau22`` loader then reads it like the real data. Generation
takes seconds, shows progress, and happens once: the folder is built in a temporary
directory and renamed into place with a done marker.

Recordings
    10 s at 44.1 kHz, cut into 1 s files ``k = 0 .. 9``. Each recording belongs to a scene,
    a city (12 European cities) and a location inside it (``identifier`` = ``city-location``).
    Training and evaluation recordings come from disjoint locations, as in TAU22's fold 1.

Scenes (what each is built from; every scene also hears its city's distant traffic)
    Noise beds are shaped in the short-time Fourier domain (random-phase frames, sqrt-Hann
    overlap-add) with a scene-specific spectrum and a modulation envelope; events and tones
    are synthesised in the time domain and reverberated with an exponentially decaying noise
    tail (long in halls and stations, short in vehicles and streets, none in the park).

    ==================  ==========================================================================
    airport             ventilation (hvac), dense babble, footsteps, rolling suitcases,
                        announcement chimes, close speech; long reverberation
    bus                 engine rumble with revving, engine harmonic hum, sparse babble, stop
                        beeps, pneumatic doors; short reverberation
    metro               loud rail rumble, wheel clacks over rail joints, brake squeal, motor
                        whine, ventilation, sparse babble
    metro_station       babble, arriving-train rumble, squeal, chimes, beeps, footsteps, hvac;
                        the longest reverberation
    park                gusty wind, bird song, faint voices and footsteps; no reverberation
    public_square       babble, footsteps, fountain hiss, passing cars, a few birds
    shopping_mall       dense babble, background music (chord sequences), footsteps, hvac,
                        till beeps, close speech; reverberant
    street_pedestrian   many footsteps, close speech, babble, passing cars, the odd horn
    street_traffic      dense passing cars (broadband swells), engine rumble, horns
    tram                rail rumble, electric motor whine sweeps, tram bell chimes, clacks,
                        babble, doors
    ==================  ==========================================================================

Variation
    Each city draws a spectral tilt, a level offset, a formant shift of its voices and its
    distant-traffic colour; each location perturbs every component's level (about +-3 dB),
    characteristic frequency (+-15 %), event rate or modulation rate (x/ 1.4) and the
    reverberation time; each 10 s segment adds a smaller perturbation and its own random
    event times. Scene classes share components, so single cues rarely decide a clip.

Devices (parametric models; no impulse-response bank, so DIR augmentation stays independent)
    Each device is a zero-phase frequency response (Butterworth high- and low-pass
    magnitudes, log-Gaussian peaks and notches, a spectral tilt), its own coloured self-noise
    (and mains hum), optional automatic gain control (frame-wise compression) and a memoryless
    nonlinearity (asymmetric tanh soft clipping). As in TAU22, devices ``a``, ``b`` and ``c``
    record the same scene at the same time, and ``s1`` .. ``s6`` are simulated from device
    ``a``'s recording (their model is applied on top of ``a``'s).

    ==  =========================================================================================
    a   reference binaural microphone: flat 20 Hz - 20 kHz, very low hiss
    b   phone: 120 Hz high-pass, 15 kHz low-pass, presence peak at 2.5 kHz, AGC, hiss
    c   action camera in its housing: 200 Hz high-pass, muffled above 7 kHz, 900 Hz housing
        resonance, soft clipping, louder self-noise
    s1  small electret: 80 Hz high-pass, 11 kHz low-pass, +5 dB at 1.5 kHz, brighter tilt
    s2  thin phone: 250 Hz high-pass, +6 dB at 5 kHz, a 300 Hz dip, AGC
    s3  cheap recorder: 9 kHz low-pass, dark tilt, 600 Hz bump, soft clipping
    s4  (unseen) tinny speakerphone: 400 Hz high-pass, 6 kHz low-pass, +9 dB at 2 kHz,
        asymmetric clipping
    s5  (unseen) muffled body-worn recorder: 3.5 kHz low-pass, boomy 250 Hz, loud pink noise
        and 50 Hz mains hum
    s6  (unseen) harsh device: notch at 1 kHz, peaks at 3.5 and 8 kHz, bright tilt, hard
        clipping after aggressive AGC
    ==  =========================================================================================

Sizes (defaults, multiplied by ``scale``)
    Training: 1000 files (100 recordings) from device ``a`` and 120 files (12 recordings,
    parallel to ``a``'s) from each of ``b``, ``c``, ``s1``, ``s2``, ``s3``: device ``a`` is
    62.5 % of the training data, as in TAU22. Evaluation: 200 recordings (20 per scene) at
    unseen locations, rendered by all nine devices; 200 files per device (one second of each
    recording, the same second for every device), so ``s4`` .. ``s6`` appear only here.
    Many recordings with one second each, because the recording, not the second, decides how
    much a metric moves with the choice of evaluation clips: one trained model's overall
    log-loss (CE, 10 epochs) varies with an sd of 0.128 over evaluation sets of 30 recordings
    x 70 files (the sizes before), 0.106 with all 300 seconds of those 30 recordings, and
    about 0.05 with 200 recordings (``benchmarks/power``, docs/statistics.md "How many
    seeds").

Difficulty (generator version 1, default sizes; chance is 10 %)
    Logistic regression on the mean and standard deviation of 64 log-mel bands, trained on
    the training split, reaches 67 % accuracy on device ``a`` and 29 % on ``s4`` .. ``s6``
    with seed 0 (seeds 1 and 2: 83 / 27 % and 73 / 21 %). The small PaSST trained with
    cross-entropy for 8 epochs (seed 0) reaches 47 % on device ``a`` (log-loss 1.44) and
    26 % on the unseen devices (log-loss 2.41).
"""

from __future__ import annotations

import functools
import json
import wave
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from harness import hookimpl
from harness.api import (
    DONE_MARKER,
    Dataset,
    DataSplits,
    Domain,
    build_once,
    cache_root,
    domain_map,
    non_negative,
    note,
    progress,
)
from harness_plugins.datasets._common import check_generated_size, clip_count, outside_domains
from harness_plugins.datasets._tau22_layout import DEVICE_ORDER, FOLD_DIR, META_FILE, load_tau22

GENERATOR_VERSION = 1
SAMPLE_RATE = 44100
SECONDS_PER_RECORDING = 10
SCENES = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)
CITIES = (
    "amsterdam",
    "barcelona",
    "helsinki",
    "lisbon",
    "london",
    "lyon",
    "madrid",
    "milan",
    "paris",
    "prague",
    "stockholm",
    "vienna",
)
TRAIN_DEVICES = ("a", "b", "c", "s1", "s2", "s3")
SEGMENTS_PER_LOCATION = 2
STFT_SIZE = 1024
STFT_HOP = STFT_SIZE // 2
RENDER_MARGIN = 4410
"""Samples of context on each side of a 1 s piece while a device renders it (0.1 s)."""


# -- scene recipes ------------------------------------------------------------

BED_KINDS = ("rumble", "hvac", "babble", "wind", "traffic", "hiss", "distant")
EVENT_KINDS = (
    "steps",
    "birds",
    "beeps",
    "chime",
    "horn",
    "squeal",
    "clacks",
    "speech",
    "rolling",
    "door",
)
TONE_KINDS = ("hum", "whine", "music")


@dataclass(frozen=True)
class Part:
    """One sound source of a scene.

    ``level`` is in dB relative to the noise bed. ``freq`` is the characteristic frequency in
    Hz (cut-off, centre, fundamental; a formant scale for voices). ``rate`` is the
    modulation rate (beds), the number of talkers (babble), cars per second (traffic),
    events per second (events) or the sweep / chord rate (tones).
    """

    kind: str
    level: float
    freq: float
    rate: float


@dataclass(frozen=True)
class Scene:
    level_dbfs: float
    reverb_s: float
    wet: float
    parts: tuple[Part, ...]


SCENE_RECIPES: dict[str, Scene] = {
    "airport": Scene(
        -27,
        1.3,
        0.5,
        (
            Part("hvac", 0, 350, 0.1),
            Part("babble", -1, 1.0, 16),
            Part("steps", -12, 1200, 0.3),
            Part("rolling", -8, 800, 0.25),
            Part("chime", -4, 700, 0.05),
            Part("speech", -8, 1.0, 0.1),
        ),
    ),
    "bus": Scene(
        -23,
        0.25,
        0.2,
        (
            Part("rumble", 3, 140, 0.25),
            Part("hum", -6, 48, 0.2),
            Part("babble", -12, 1.0, 3),
            Part("beeps", -8, 1800, 0.05),
            Part("door", -6, 3000, 0.04),
            Part("hvac", -8, 900, 0.1),
        ),
    ),
    "metro": Scene(
        -21,
        0.35,
        0.25,
        (
            Part("rumble", 4, 220, 0.4),
            Part("clacks", -3, 1500, 0.15),
            Part("squeal", -8, 3500, 0.07),
            Part("whine", -10, 900, 0.1),
            Part("babble", -14, 1.0, 4),
            Part("hvac", -6, 1200, 0.1),
        ),
    ),
    "metro_station": Scene(
        -26,
        1.8,
        0.6,
        (
            Part("babble", 0, 1.0, 8),
            Part("rumble", -5, 200, 0.1),
            Part("squeal", -10, 3000, 0.04),
            Part("chime", -6, 600, 0.05),
            Part("beeps", -10, 1200, 0.08),
            Part("steps", -10, 1500, 0.3),
            Part("hvac", -6, 600, 0.1),
        ),
    ),
    "park": Scene(
        -34,
        0.0,
        0.0,
        (
            Part("wind", 0, 300, 0.25),
            Part("birds", -3, 4000, 0.4),
            Part("babble", -16, 1.0, 2),
            Part("steps", -14, 800, 0.1),
        ),
    ),
    "public_square": Scene(
        -29,
        0.3,
        0.15,
        (
            Part("babble", -1, 1.0, 6),
            Part("steps", -8, 1500, 0.4),
            Part("hiss", -8, 3000, 3.0),
            Part("traffic", -6, 2500, 0.1),
            Part("birds", -12, 3000, 0.1),
        ),
    ),
    "shopping_mall": Scene(
        -27,
        1.0,
        0.45,
        (
            Part("babble", 0, 1.0, 12),
            Part("music", -6, 220, 0.5),
            Part("steps", -9, 1500, 0.3),
            Part("hvac", -7, 500, 0.1),
            Part("beeps", -12, 2400, 0.04),
            Part("speech", -7, 1.0, 0.12),
        ),
    ),
    "street_pedestrian": Scene(
        -26,
        0.15,
        0.1,
        (
            Part("steps", -3, 1500, 0.7),
            Part("speech", -5, 1.0, 0.25),
            Part("babble", -5, 1.0, 4),
            Part("traffic", -4, 2000, 0.15),
            Part("horn", -10, 420, 0.03),
        ),
    ),
    "street_traffic": Scene(
        -21,
        0.1,
        0.05,
        (
            Part("traffic", 3, 2500, 0.5),
            Part("rumble", 0, 110, 0.2),
            Part("horn", -5, 400, 0.07),
            Part("steps", -14, 1500, 0.05),
        ),
    ),
    "tram": Scene(
        -24,
        0.3,
        0.2,
        (
            Part("rumble", 2, 180, 0.3),
            Part("whine", -4, 1400, 0.12),
            Part("chime", -4, 1100, 0.06),
            Part("clacks", -6, 1200, 0.08),
            Part("babble", -10, 1.0, 3),
            Part("door", -7, 3000, 0.03),
        ),
    ),
}


# -- device models ------------------------------------------------------------


@dataclass(frozen=True)
class DeviceModel:
    """A simulated recording device (see the module docstring)."""

    highpass_hz: float
    lowpass_hz: float
    peaks: tuple[tuple[float, float, float], ...] = ()
    """``(centre Hz, gain dB, width in octaves)`` of each peak or notch."""
    tilt_db_per_octave: float = 0.0
    noise_dbfs: float = -80.0
    noise_tilt_db_per_octave: float = 0.0
    hum_hz: float = 0.0
    agc_threshold_dbfs: float | None = None
    agc_ratio: float = 1.0
    clip_dbfs: float | None = None
    asymmetry: float = 0.0
    gain_db: float = 0.0
    highpass_order: int = 2
    lowpass_order: int = 2
    simulated_from_a: bool = False


DEVICE_MODELS: dict[str, DeviceModel] = {
    "a": DeviceModel(20, 20000, highpass_order=1, lowpass_order=2, noise_dbfs=-78),
    "b": DeviceModel(
        120,
        15000,
        peaks=((2500, 4, 1.0), (180, -2, 0.8)),
        tilt_db_per_octave=0.5,
        noise_dbfs=-66,
        agc_threshold_dbfs=-32,
        agc_ratio=3,
        lowpass_order=4,
        gain_db=2,
    ),
    "c": DeviceModel(
        200,
        7000,
        peaks=((900, 6, 0.7), (4000, -5, 0.6)),
        tilt_db_per_octave=-1.0,
        noise_dbfs=-56,
        noise_tilt_db_per_octave=-1.5,
        clip_dbfs=-24,
        asymmetry=0.15,
        lowpass_order=3,
        gain_db=-2,
    ),
    "s1": DeviceModel(
        80,
        11000,
        peaks=((1500, 5, 0.8),),
        tilt_db_per_octave=1.0,
        noise_dbfs=-64,
        simulated_from_a=True,
    ),
    "s2": DeviceModel(
        250,
        18000,
        peaks=((5000, 6, 0.8), (300, -4, 0.6)),
        noise_dbfs=-62,
        agc_threshold_dbfs=-30,
        agc_ratio=4,
        simulated_from_a=True,
    ),
    "s3": DeviceModel(
        60,
        9000,
        peaks=((600, 4, 1.0),),
        tilt_db_per_octave=-1.5,
        noise_dbfs=-60,
        clip_dbfs=-22,
        lowpass_order=4,
        simulated_from_a=True,
    ),
    "s4": DeviceModel(
        400,
        6000,
        peaks=((2000, 9, 0.9),),
        noise_dbfs=-58,
        asymmetry=0.3,
        clip_dbfs=-20,
        highpass_order=3,
        lowpass_order=4,
        simulated_from_a=True,
    ),
    "s5": DeviceModel(
        40,
        3500,
        peaks=((250, 6, 1.0),),
        tilt_db_per_octave=-2.0,
        noise_dbfs=-50,
        noise_tilt_db_per_octave=-3.0,
        hum_hz=50,
        simulated_from_a=True,
    ),
    "s6": DeviceModel(
        150,
        16000,
        peaks=((1000, -8, 0.5), (3500, 7, 0.6), (8000, 6, 0.8)),
        tilt_db_per_octave=2.0,
        noise_dbfs=-60,
        agc_threshold_dbfs=-40,
        agc_ratio=6,
        clip_dbfs=-26,
        asymmetry=0.2,
        gain_db=4,
        simulated_from_a=True,
    ),
}


# -- the plan: which recordings, locations, devices and files -----------------


@dataclass(frozen=True)
class Recording:
    """A 10 s recording and the files written from it."""

    index: int
    split: str
    scene: str
    city: str
    location: int
    segment: int
    devices: tuple[str, ...]
    seconds: tuple[int, ...]
    """The 1 s pieces ``k`` written for every device."""

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"

    def filename(self, k: int, device: str) -> str:
        return f"audio/{self.scene}-{self.city}-{self.location}-{self.segment}-{k}-{device}.wav"


@dataclass(frozen=True)
class Sizes:
    """How many recordings and files of each kind the generator writes."""

    train_recordings_a: int
    train_recordings_other: int
    eval_recordings: int
    eval_files_per_device: int

    @property
    def tag(self) -> str:
        return (
            f"a{self.train_recordings_a}-o{self.train_recordings_other}"
            f"-e{self.eval_recordings}x{self.eval_files_per_device}"
        )


def scaled_sizes(
    train_clips_a: int,
    train_clips_per_device: int,
    eval_recordings: int,
    eval_clips_per_device: int,
    scale: float,
) -> Sizes:
    """Counts of recordings: at least one recording per scene for ``a`` and evaluation."""
    n_scenes = len(SCENES)
    train_a = max(n_scenes, round(train_clips_a * scale / SECONDS_PER_RECORDING))
    other = min(train_a, max(1, round(train_clips_per_device * scale / SECONDS_PER_RECORDING)))
    evaluation = max(n_scenes, round(eval_recordings * scale))
    files = min(
        evaluation * SECONDS_PER_RECORDING, max(evaluation, round(eval_clips_per_device * scale))
    )
    return Sizes(train_a, other, evaluation, files)


def stable_key(*parts: object) -> list[int]:
    """Integers for :class:`numpy.random.SeedSequence` from names and numbers."""
    return [zlib.crc32(str(p).encode()) for p in parts]


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stable_key(*parts)]))


def make_plan(sizes: Sizes, seed: int) -> list[Recording]:
    """Every recording of the data set, with its location, devices and pieces."""
    rng = rng_for(seed, "plan")
    next_location = dict.fromkeys(CITIES, 0)
    recordings: list[Recording] = []

    def new_location() -> tuple[str, int]:
        city = CITIES[rng.integers(len(CITIES))]
        next_location[city] += 1
        return city, next_location[city] - 1

    def add(split: str, scene: str, where: tuple[str, int], devices, seconds) -> Recording:
        rec = Recording(len(recordings), split, scene, *where, len(recordings), devices, seconds)
        recordings.append(rec)
        return rec

    all_seconds = tuple(range(SECONDS_PER_RECORDING))
    train_by_scene: dict[str, list[Recording]] = {s: [] for s in SCENES}
    for i, scene in enumerate(SCENES):
        count = sizes.train_recordings_a // len(SCENES) + (
            i < sizes.train_recordings_a % len(SCENES)
        )
        for j in range(count):
            if j % SEGMENTS_PER_LOCATION == 0:
                where = new_location()
            train_by_scene[scene].append(add("train", scene, where, ("a",), all_seconds))
    extra_devices = parallel_devices(train_by_scene, sizes.train_recordings_other, rng)
    recordings = [
        Recording(**{**asdict(r), "devices": ("a", *extra_devices.get(r.index, ()))})
        for r in recordings
    ]
    for i, seconds in enumerate(evaluation_seconds(sizes, rng)):
        add("eval", SCENES[i % len(SCENES)], new_location(), DEVICE_ORDER, seconds)
    return recordings


def evaluation_seconds(sizes: Sizes, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Which seconds of each evaluation recording become files (as evenly spread as possible)."""
    n = sizes.eval_recordings
    counts = np.full(n, sizes.eval_files_per_device // n)
    counts[rng.permutation(n)[: sizes.eval_files_per_device % n]] += 1
    return [
        tuple(sorted(int(k) for k in rng.choice(SECONDS_PER_RECORDING, c, replace=False)))
        for c in counts
    ]


def parallel_devices(
    train_by_scene: dict[str, list[Recording]], count: int, rng: np.random.Generator
) -> dict[int, list[str]]:
    """For each device besides ``a``: ``count`` of ``a``'s recordings, spread over scenes."""
    extra: dict[int, list[str]] = {}
    for device in TRAIN_DEVICES[1:]:
        order = [SCENES[i] for i in rng.permutation(len(SCENES))]
        pools = {s: list(rng.permutation([r.index for r in train_by_scene[s]])) for s in SCENES}
        chosen = 0
        while chosen < count:
            for scene in order:
                if chosen < count and pools[scene]:
                    extra.setdefault(int(pools[scene].pop()), []).append(device)
                    chosen += 1
    return extra


# -- spectra and envelopes ----------------------------------------------------


def highpass(f: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    r = (f / cutoff) ** (2 * order)
    return np.sqrt(r / (1 + r))


def lowpass(f: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    return 1 / np.sqrt(1 + (f / cutoff) ** (2 * order))


def tilt(f: np.ndarray, db_per_octave: float, ref: float = 1000.0) -> np.ndarray:
    return 10 ** (db_per_octave * np.log2(f / ref) / 20)


def bump(f: np.ndarray, centre: float, gain_db: float, octaves: float) -> np.ndarray:
    return 10 ** (gain_db * np.exp(-0.5 * (np.log2(f / centre) / octaves) ** 2) / 20)


def bed_spectrum(kind: str, freq: float, f: np.ndarray, formant: float) -> np.ndarray:
    """Amplitude spectrum of a noise bed on the frequency grid ``f`` (Hz, no zero)."""
    if kind == "rumble":
        return lowpass(f, freq, 2) * highpass(f, 25, 2)
    if kind == "hvac":
        return (
            bump(f, freq, 10, 0.8) * tilt(f, -3, freq) * highpass(f, 60, 2) * lowpass(f, 10000, 2)
        )
    if kind == "babble":
        scale = freq * formant
        return (
            highpass(f, 120, 2)
            * bump(f, 500 * scale, 8, 0.6)
            * bump(f, 1400 * scale, 5, 0.5)
            * bump(f, 2600 * scale, 3, 0.4)
            * lowpass(f, 3500, 2)
        )
    if kind == "wind":
        return lowpass(f, freq, 1) * highpass(f, 15, 1) * tilt(f, -3)
    if kind == "traffic":
        return highpass(f, 40, 2) * lowpass(f, freq, 1) * tilt(f, -3, 500) * bump(f, 90, 6, 1.0)
    if kind == "hiss":
        return highpass(f, freq / 3, 1) * lowpass(f, freq * 4, 1) * bump(f, freq, 4, 1.2)
    if kind == "distant":
        return lowpass(f, freq, 2) * highpass(f, 30, 2) * tilt(f, -2)
    raise ValueError(f"unknown bed kind {kind!r}")


def smooth_noise(rng: np.random.Generator, n: int, rate_per_sample: float) -> np.ndarray:
    """Zero-mean, unit-variance noise interpolated linearly between points ``1/rate`` apart."""
    points = max(2, int(np.ceil(n * rate_per_sample)) + 2)
    values = rng.standard_normal(points)
    return np.interp(np.arange(n) * rate_per_sample, np.arange(points), values)


def bed_envelope(kind: str, rate: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Amplitude envelope of a bed at the STFT frame rate (mean about 1)."""
    frame_rate = SAMPLE_RATE / STFT_HOP
    if kind == "babble":
        depth = 1.2 / np.sqrt(max(rate, 1.0))
        return np.maximum(0.05, 1 + depth * smooth_noise(rng, frames, 4.5 / frame_rate))
    if kind == "wind":
        return np.exp(0.8 * smooth_noise(rng, frames, rate / frame_rate) - 0.32)
    if kind == "traffic":
        return car_passes(rng, frames, rate, frame_rate)
    if kind == "hiss":
        return np.maximum(0.1, 1 + 0.15 * smooth_noise(rng, frames, rate / frame_rate))
    depth = {"rumble": 0.35, "hvac": 0.05, "distant": 0.2}[kind]
    return np.maximum(0.05, 1 + depth * smooth_noise(rng, frames, rate / frame_rate))


def car_passes(rng: np.random.Generator, frames: int, rate: float, frame_rate: float) -> np.ndarray:
    """A floor plus one Gaussian swell per passing car."""
    seconds = frames / frame_rate
    t = np.arange(frames) / frame_rate
    envelope = np.full(frames, 0.25)
    for _ in range(rng.poisson(rate * (seconds + 4))):
        centre = rng.uniform(-2, seconds + 2)
        width = rng.uniform(0.6, 1.6)
        envelope += rng.uniform(0.6, 2.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    return envelope


def stft_noise(power: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """Noise whose short-time power spectrum is ``power`` ``[frames, bins]``.

    Each frame is random-phase noise with that spectrum, windowed by sqrt-Hann and
    overlap-added at half a frame, so independent frames keep a constant variance.
    """
    frames, bins = power.shape
    noise = rng.random((frames, bins, 2), dtype=np.float32) - np.float32(0.5)
    spectrum = np.sqrt(power).astype(np.float32) * (noise[..., 0] + 1j * noise[..., 1])
    blocks = sfft.irfft(spectrum, n=STFT_SIZE, axis=1) * sqrt_hann()
    halves = blocks.reshape(frames, 2, STFT_HOP)
    out = np.zeros((frames + 1, STFT_HOP), dtype=np.float32)
    out[:-1] += halves[:, 0]
    out[1:] += halves[:, 1]
    return out.reshape(-1)[STFT_HOP : STFT_HOP + length]


def sqrt_hann() -> np.ndarray:
    n = np.arange(STFT_SIZE)
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / STFT_SIZE)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


# -- events and tones ---------------------------------------------------------


def seconds_axis(duration: float) -> np.ndarray:
    return np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE


def band(x: np.ndarray, low: float, high: float, order: int = 2) -> np.ndarray:
    from scipy.signal import butter, sosfilt  # heavy import, only when generating

    nyquist = SAMPLE_RATE / 2
    sos = butter(
        order,
        [max(low, 20) / nyquist, min(high, nyquist * 0.95) / nyquist],
        "bandpass",
        output="sos",
    )
    return sosfilt(sos, x)


def harmonic(phase: np.ndarray, amplitudes: tuple[float, ...]) -> np.ndarray:
    return sum(a * np.sin((h + 1) * phase) for h, a in enumerate(amplitudes))


def tone_phase(freq: np.ndarray | float, n: int) -> np.ndarray:
    """Phase (radians, wrapped, float32) of a tone with instantaneous frequency ``freq``."""
    inst = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    cycles = np.cumsum(inst) / SAMPLE_RATE
    return (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)


def ramp(n: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = max(1, int(attack * SAMPLE_RATE)), max(1, int(release * SAMPLE_RATE))
    env[: min(a, n)] *= np.linspace(0, 1, min(a, n))
    env[max(0, n - r) :] *= np.linspace(1, 0, n - max(0, n - r))
    return env


def place(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    if start >= len(track):
        return
    stop = min(len(track), start + len(sound))
    track[start:stop] += sound[: stop - start]


def event_steps(rng: np.random.Generator, freq: float) -> np.ndarray:
    interval = rng.uniform(0.4, 0.6)
    count = int(rng.integers(3, 9))
    out = np.zeros(int((count * interval + 0.1) * SAMPLE_RATE))
    t = seconds_axis(0.08)
    for i in range(count):
        click = rng.standard_normal(len(t)) * np.exp(-t / rng.uniform(0.008, 0.02))
        start = max(0, int((i * interval + rng.normal(0, 0.02)) * SAMPLE_RATE))
        place(out, rng.uniform(0.6, 1.0) * click, start)
    return band(out, freq / 4, freq)


def event_birds(rng: np.random.Generator, freq: float) -> np.ndarray:
    pieces = []
    for _ in range(int(rng.integers(3, 9))):
        t = seconds_axis(rng.uniform(0.04, 0.15))
        start = freq * rng.uniform(0.7, 1.3)
        sweep = start + rng.uniform(-0.4, 0.4) * freq * t / t[-1]
        trill = 1 + 0.05 * np.sin(2 * np.pi * rng.uniform(20, 40) * t)
        note = np.sin(tone_phase(sweep * trill, len(t))) * np.hanning(len(t))
        pieces += [note, np.zeros(int(rng.uniform(0.03, 0.12) * SAMPLE_RATE))]
    return np.concatenate(pieces)


def event_beeps(rng: np.random.Generator, freq: float) -> np.ndarray:
    f0 = freq * rng.uniform(0.8, 1.25)
    pieces = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.1, 0.35) * SAMPLE_RATE)
        pieces += [
            harmonic(tone_phase(f0, n), (1.0, 0.0, 0.3)) * ramp(n, 0.005, 0.005),
            np.zeros(int(rng.uniform(0.1, 0.2) * SAMPLE_RATE)),
        ]
    return np.concatenate(pieces)


def event_chime(rng: np.random.Generator, freq: float) -> np.ndarray:
    f0 = freq * rng.uniform(0.85, 1.15)
    step = rng.uniform(0.35, 0.5)
    ratios = (1.0, 0.8, 0.667)[: int(rng.integers(2, 4))]
    decay = rng.uniform(0.4, 0.8)
    out = np.zeros(int((len(ratios) * step + 2.0) * SAMPLE_RATE))
    t = seconds_axis(2.0)
    for i, ratio in enumerate(ratios):
        partials = sum(
            a * np.sin(2 * np.pi * f0 * ratio * p * t) * np.exp(-t * p / decay)
            for p, a in ((1.0, 1.0), (2.0, 0.5), (3.0, 0.3), (4.1, 0.2))
        )
        place(out, partials, int(i * step * SAMPLE_RATE))
    return out


def event_horn(rng: np.random.Generator, freq: float) -> np.ndarray:
    n = int(rng.uniform(0.25, 0.9) * SAMPLE_RATE)
    f0 = freq * rng.uniform(0.9, 1.1)
    amplitudes = tuple(1 / h**0.7 for h in range(1, 7))
    sound = harmonic(tone_phase(f0, n), amplitudes)
    if rng.random() < 0.5:
        sound = sound + harmonic(tone_phase(f0 * 1.26, n), amplitudes)
    return sound * ramp(n, 0.02, 0.03)


def event_squeal(rng: np.random.Generator, freq: float) -> np.ndarray:
    t = seconds_axis(rng.uniform(0.4, 2.0))
    f = freq * rng.uniform(0.7, 1.4) * (1 + 0.015 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
    return harmonic(tone_phase(f, len(t)), (1.0, 0.3)) * np.sin(np.pi * t / t[-1]) ** 2


def event_clacks(rng: np.random.Generator, freq: float) -> np.ndarray:
    period = rng.uniform(0.5, 1.0)
    gap = rng.uniform(0.07, 0.12)
    count = int(rng.integers(4, 11))
    out = np.zeros(int((count * period + 0.2) * SAMPLE_RATE))
    t = seconds_axis(0.03)
    for i in range(count):
        for offset in (0.0, gap):
            click = rng.standard_normal(len(t)) * np.exp(-t / 0.005)
            place(out, click, int((i * period + offset) * SAMPLE_RATE))
    return band(out, freq / 2, freq * 2)


def event_speech(rng: np.random.Generator, freq: float) -> np.ndarray:
    n = int(rng.uniform(0.8, 2.5) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(100, 220) * (1 + 0.1 * smooth_noise(rng, n, 3 / SAMPLE_RATE))
    cycles = np.cumsum(f0) / SAMPLE_RATE
    pulses = np.diff(np.floor(cycles), prepend=0.0)
    source = pulses + 0.05 * rng.standard_normal(n)
    f = np.maximum(sfft.rfftfreq(n, 1 / SAMPLE_RATE), 1.0)
    shaped = sfft.irfft(sfft.rfft(source) * bed_spectrum("babble", freq, f, 1.0), n=n)
    syllables = np.maximum(0, np.sin(2 * np.pi * rng.uniform(3.5, 5.5) * t + rng.uniform(0, 6.3)))
    return shaped * syllables**0.7


def event_rolling(rng: np.random.Generator, freq: float) -> np.ndarray:
    t = seconds_axis(rng.uniform(1.2, 3.5))
    noise = band(rng.standard_normal(len(t)), freq / 6, freq)
    bumps = 0.5 + 0.5 * np.abs(np.sin(np.pi * rng.uniform(6, 14) * t)) ** 4
    return noise * bumps * ramp(len(t), 0.2, 0.3)


def event_door(rng: np.random.Generator, freq: float) -> np.ndarray:
    t = seconds_axis(rng.uniform(0.3, 0.9))
    hiss = (
        band(rng.standard_normal(len(t)), freq * 0.7, freq * 4)
        * np.exp(-t / 0.25)
        * ramp(len(t), 0.01, 0.02)
    )
    thump_t = seconds_axis(0.12)
    thump = np.sin(2 * np.pi * rng.uniform(60, 120) * thump_t) * np.exp(-thump_t / 0.03) * 2
    return np.concatenate([hiss, thump])


EVENTS: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "steps": event_steps,
    "birds": event_birds,
    "beeps": event_beeps,
    "chime": event_chime,
    "horn": event_horn,
    "squeal": event_squeal,
    "clacks": event_clacks,
    "speech": event_speech,
    "rolling": event_rolling,
    "door": event_door,
}


def tone(kind: str, freq: float, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """A continuous tonal source over the whole recording."""
    t = np.arange(n) / SAMPLE_RATE
    if kind == "hum":
        f = freq * (1 + 0.04 * smooth_noise(rng, n, rate / SAMPLE_RATE))
        amplitudes = tuple(rng.uniform(0.5, 1.0) / h for h in range(1, 6))
        return harmonic(tone_phase(f, n), amplitudes)
    if kind == "whine":
        speed = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        return harmonic(tone_phase(freq * (0.35 + 0.65 * speed), n), (1.0, 0.4)) * (
            0.3 + 0.7 * speed
        )
    if kind == "music":
        return music(freq, rate, n, rng)
    raise ValueError(f"unknown tone kind {kind!r}")


def music(root: float, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Triads from a major scale, changing about ``rate`` times a second, with soft edges."""
    scale = (0, 2, 4, 5, 7, 9, 11)
    out = np.zeros(n)
    start = 0
    while start < n:
        length = min(n - start, int(rng.uniform(0.7, 1.3) / rate * SAMPLE_RATE))
        degree = int(rng.integers(len(scale)))
        chord = np.zeros(length)
        for step in (0, 2, 4):
            semitones = scale[(degree + step) % 7] + 12 * ((degree + step) // 7)
            chord += harmonic(tone_phase(root * 2 ** (semitones / 12), length), (1.0, 0.35))
        out[start : start + length] = chord * ramp(length, 0.02, 0.05)
        start += length
    return out


def reverb_tail(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Noise decaying by 60 dB in ``seconds`` (cut at -40 dB), with unit energy."""
    t = seconds_axis(min(2.0, max(seconds, 0.05)) * 2 / 3)
    tail = rng.standard_normal(len(t)) * np.exp(-6.91 * t / seconds)
    return (tail / np.sqrt(np.sum(tail**2))).astype(np.float32)


def reverberate(x: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``tail``, cut to the length of ``x`` (float32 FFT convolution)."""
    size = sfft.next_fast_len(len(x) + len(tail) - 1, real=True)
    spectrum = sfft.rfft(x, size) * sfft.rfft(tail, size)
    return sfft.irfft(spectrum, size)[: len(x)]


# -- synthesis of one recording ----------------------------------------------


@dataclass
class Variation:
    """Perturbations of a scene recipe by city, location and segment."""

    tilt: float = 0.0
    level: float = 0.0
    formant: float = 1.0
    reverb: float = 1.0
    part_level: list[float] = field(default_factory=list)
    part_freq: list[float] = field(default_factory=list)
    part_rate: list[float] = field(default_factory=list)


def city_variation(seed: int, city: str) -> tuple[Variation, Part]:
    rng = rng_for(seed, "city", city)
    variation = Variation(
        tilt=rng.normal(0, 0.8),
        level=rng.normal(0, 1.5),
        formant=float(np.exp(rng.normal(0, 0.06))),
    )
    distant = Part("distant", rng.uniform(-22, -8), rng.uniform(300, 900), rng.uniform(0.1, 0.3))
    return variation, distant


def recording_variation(seed: int, rec: Recording, n_parts: int) -> Variation:
    """City, location and segment perturbations combined."""
    city, _ = city_variation(seed, rec.city)
    loc = rng_for(seed, "location", rec.identifier)
    seg = rng_for(seed, "segment", rec.segment)
    return Variation(
        tilt=city.tilt + loc.normal(0, 0.6),
        level=city.level + loc.normal(0, 2.5) + seg.normal(0, 1.0),
        formant=city.formant,
        reverb=float(np.exp(loc.normal(0, 0.3))),
        part_level=list(loc.normal(0, 3.0, n_parts) + seg.normal(0, 1.5, n_parts)),
        part_freq=list(np.exp(loc.normal(0, 0.15, n_parts))),
        part_rate=list(np.exp(loc.normal(0, 0.35, n_parts) + seg.normal(0, 0.15, n_parts))),
    )


def synthesize(rec: Recording, seed: int) -> np.ndarray:
    """The scene as it sounds at the recording position (before any device), float32."""
    scene = SCENE_RECIPES[rec.scene]
    _, distant = city_variation(seed, rec.city)
    parts = (*scene.parts, distant)
    var = recording_variation(seed, rec, len(parts))
    rng = rng_for(seed, "recording", rec.index)
    n = SECONDS_PER_RECORDING * SAMPLE_RATE
    frames = n // STFT_HOP + 2
    f = np.maximum(sfft.rfftfreq(STFT_SIZE, 1 / SAMPLE_RATE), 10.0)
    colour = tilt(f, var.tilt) ** 2
    power = np.zeros((frames, len(f)), dtype=np.float32)
    foreground = np.zeros(n, dtype=np.float32)
    for i, part in enumerate(parts):
        gain = 10 ** ((part.level + var.part_level[i]) / 20)
        freq = part.freq * var.part_freq[i]
        rate = part.rate * var.part_rate[i]
        if part.kind in BED_KINDS:
            spec = bed_spectrum(part.kind, freq, f, var.formant) ** 2
            envelope = bed_envelope(part.kind, rate, frames, rng)
            weights = (gain**2 * spec / spec.sum() * colour).astype(np.float32)
            power += weights[None, :] * np.square(envelope, dtype=np.float32)[:, None]
        elif part.kind in TONE_KINDS:
            sound = tone(part.kind, freq, rate, n, rng)
            foreground += gain * 0.1 * sound / rms(sound)
        else:
            for _ in range(rng.poisson(rate * SECONDS_PER_RECORDING)):
                sound = EVENTS[part.kind](
                    rng, freq * var.formant if part.kind == "speech" else freq
                )
                sound = 0.1 * gain * rng.uniform(0.5, 1.0) * sound / rms(sound)
                place(foreground, sound, int(rng.integers(n)))
    bed = stft_noise(power, rng, n)
    bed *= 0.1 / rms(bed)
    if scene.wet > 0:
        foreground += scene.wet * reverberate(
            foreground, reverb_tail(rng, scene.reverb_s * var.reverb)
        )
    signal = bed + foreground
    return signal * 10 ** ((scene.level_dbfs + var.level) / 20) / rms(signal)


# -- devices ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def device_response(device: str, n: int) -> np.ndarray:
    """The magnitude response of ``device`` on the grid of an ``n``-point real FFT."""
    model = DEVICE_MODELS[device]
    f = np.maximum(sfft.rfftfreq(n, 1 / SAMPLE_RATE), 10.0)
    response = (
        highpass(f, model.highpass_hz, model.highpass_order)
        * lowpass(f, model.lowpass_hz, model.lowpass_order)
        * tilt(f, model.tilt_db_per_octave)
        * 10 ** (model.gain_db / 20)
    )
    for centre, gain_db, octaves in model.peaks:
        response = response * bump(f, centre, gain_db, octaves)
    return response.astype(np.float32)


@functools.lru_cache(maxsize=64)
def noise_colour(device: str, n: int) -> np.ndarray:
    """Self-noise spectrum of ``device``, scaled to its RMS level after an ``n``-point irfft."""
    model = DEVICE_MODELS[device]
    f = np.maximum(sfft.rfftfreq(n, 1 / SAMPLE_RATE), 10.0)
    shape = tilt(f, model.noise_tilt_db_per_octave)
    # uniform(-0.5, 0.5) real and imaginary parts have variance 1/12 each
    return (10 ** (model.noise_dbfs / 20) * np.sqrt(n * 6 / np.mean(shape**2)) * shape).astype(
        np.float32
    )


def render(spectrum: np.ndarray, n: int, device: str, rng: np.random.Generator) -> np.ndarray:
    """Record pieces (given by their spectra ``[P, n // 2 + 1]``) with a device.

    Frequency response and self-noise in the frequency domain, then mains hum,
    automatic gain control and the nonlinearity in the time domain.
    """
    model = DEVICE_MODELS[device]
    count, bins = spectrum.shape
    noise = rng.random((count, bins, 2), dtype=np.float32) - np.float32(0.5)
    noisy = spectrum * device_response(device, n) + noise_colour(device, n) * (
        noise[..., 0] + 1j * noise[..., 1]
    )
    out = sfft.irfft(noisy, n=n, axis=1)
    if model.hum_hz:
        t = np.arange(n) / SAMPLE_RATE
        phase = 2 * np.pi * model.hum_hz * t + rng.uniform(0, 2 * np.pi, (count, 1))
        out += 10 ** ((model.noise_dbfs + 2) / 20) * (np.sin(phase) + 0.5 * np.sin(3 * phase))
    if model.agc_threshold_dbfs is not None:
        out = automatic_gain(out, model.agc_threshold_dbfs, model.agc_ratio)
    if model.clip_dbfs is not None:
        limit = 10 ** (model.clip_dbfs / 20)
        out = limit * np.tanh((out + model.asymmetry * out**2 / limit) / limit)
        out -= out.mean(axis=1, keepdims=True)
    return out.astype(np.float32)


def automatic_gain(x: np.ndarray, threshold_dbfs: float, ratio: float) -> np.ndarray:
    """Frame-wise downward compression above ``threshold_dbfs`` with smoothed gains."""
    count, n = x.shape
    frame = STFT_HOP
    frames = -(-n // frame)
    padded = np.pad(x, ((0, 0), (0, frames * frame - n)))
    level = 10 * np.log10(np.mean(padded.reshape(count, frames, frame) ** 2, axis=2) + 1e-12)
    gain_db = -np.maximum(0.0, level - threshold_dbfs) * (1 - 1 / ratio)
    kernel = np.ones(9) / 9
    gain_db = np.stack([np.convolve(np.pad(g, 4, mode="edge"), kernel, "valid") for g in gain_db])
    centres = (np.arange(frames) + 0.5) * frame
    samples = np.arange(n)
    gain = np.stack([np.interp(samples, centres, g) for g in gain_db])
    return x * 10 ** (gain / 20)


def record(rec: Recording, scene: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The 1 s files ``[len(seconds), 44100]`` of every device of a recording."""
    margin = RENDER_MARGIN
    padded = np.pad(scene.astype(np.float32), margin, mode="reflect")
    starts = np.array(rec.seconds) * SAMPLE_RATE
    n = SAMPLE_RATE + 2 * margin
    pieces = np.stack([padded[s : s + n] for s in starts])
    heard = sfft.rfft(pieces, axis=1)
    rng = rng_for(seed, "devices", rec.index)
    rendered: dict[str, np.ndarray] = {}
    for device in rec.devices:
        if DEVICE_MODELS[device].simulated_from_a:
            if "a-spectrum" not in rendered:
                rendered["a-spectrum"] = sfft.rfft(rendered["a"], axis=1)
            rendered[device] = render(rendered["a-spectrum"], n, device, rng)
        else:
            rendered[device] = render(heard, n, device, rng)
    return {d: x[:, margin:-margin] for d, x in rendered.items() if d in rec.devices}


# -- writing the folder -------------------------------------------------------


def write_dataset(folder: Path, recordings: list[Recording], seed: int, info: dict) -> None:
    """Synthesise every recording and write the TAU22 layout into ``folder``."""
    (folder / "audio").mkdir(parents=True)
    (folder / FOLD_DIR).mkdir()
    meta_rows, folds = [], {"train": [], "eval": []}
    for rec in progress(recordings, desc="generating tau22-embedded", unit="recording"):
        files = record(rec, synthesize(rec, seed), seed)
        for device, pieces in files.items():
            for k, samples in zip(rec.seconds, pieces, strict=True):
                name = rec.filename(k, device)
                write_wav(folder / name, samples)
                meta_rows.append((name, rec.scene, rec.identifier, device))
                folds[rec.split].append((name, rec.scene))
    write_tsv(
        folder / META_FILE, ("filename", "scene_label", "identifier", "source_label"), meta_rows
    )
    write_tsv(folder / FOLD_DIR / "fold1_train.csv", ("filename", "scene_label"), folds["train"])
    write_tsv(folder / FOLD_DIR / "fold1_evaluate.csv", ("filename", "scene_label"), folds["eval"])
    (folder / "generator.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit mono PCM WAV (the standard library writer: no per-file sync to disk)."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    lines = ["\t".join(header), *("\t".join(row) for row in sorted(rows))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def generate(cache: Path, seed: int, sizes: Sizes) -> Path:
    """The generated folder for ``seed`` and ``sizes`` under ``cache`` (built once)."""
    folder = cache / f"tau22-embedded-v{GENERATOR_VERSION}-seed{seed}-{sizes.tag}"
    info = {"generator_version": GENERATOR_VERSION, "seed": seed, **asdict(sizes)}
    recordings = make_plan(sizes, seed)
    fresh = not (folder / DONE_MARKER).is_file()
    built = build_once(folder, lambda tmp: write_dataset(tmp, recordings, seed, info))
    if fresh:
        note(generation_summary(built))
    return built


def generation_summary(folder: Path) -> str:
    """``generated N clips (X MB) into FOLDER`` for the log after a first build."""
    clips = list(folder.rglob("*.wav"))
    size = sum(p.stat().st_size for p in clips)
    return f"generated {len(clips)} clips ({size / 1e6:.1f} MB) into {folder}"


class Tau22Embedded(Dataset):
    """Synthetic TAU22-style device benchmark, generated on first use."""

    name = "tau22-embedded"
    generator_version = GENERATOR_VERSION
    class_count = len(SCENES)
    description = (
        "Synthetic acoustic scenes recorded by 9 simulated devices in the TAU22 layout "
        "(generated into the cache on first use)"
    )

    @dataclass
    class Config:
        seed: int = 0
        """Generator seed (a different seed is a different data set)."""
        scale: float = 1.0
        """Multiplies every size below (small values for quick tests)."""
        train_clips_a: int = 1000
        """1 s training files from device a (10 per recording)."""
        train_clips_per_device: int = 120
        """1 s training files from each of b, c, s1, s2, s3."""
        eval_recordings: int = 200
        """Evaluation recordings (each at its own unseen location, heard by all 9 devices)."""
        eval_clips_per_device: int = 200
        """1 s evaluation files per device (the same seconds for every device)."""
        merge_segments: bool = False
        """Train on 10 s recordings (use with --aug random-window)."""
        cache: str = ""
        """Folder for generated data (default: $HARNESS_CACHE or ~/.cache/harness)."""

        domains = domain_map(
            seed=non_negative("Seed of the generator (the data set itself), not of the run."),
            scale=Domain(gt=0, le=100, help="Multiplies every clip count (0.1: a tenth)."),
            train_clips_a=clip_count("Training clips of device a."),
            train_clips_per_device=clip_count(
                "Training clips of each other seen device (at most train_clips_a)."
            ),
            eval_recordings=clip_count("Evaluation recordings in all, spread over the scenes."),
            eval_clips_per_device=clip_count(
                "Evaluation clips per device (at most 10 per evaluation recording)."
            ),
        )

        def __post_init__(self) -> None:
            if self.scale <= 0:
                raise ValueError(f"scale must be positive, got {self.scale}")
            for name in (
                "train_clips_a",
                "train_clips_per_device",
                "eval_recordings",
                "eval_clips_per_device",
            ):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
            if outside_domains(self):
                return  # the field's own range is the message
            self.check_consistent()
            check_generated_size(
                self.scale
                * (
                    self.train_clips_a
                    + (len(TRAIN_DEVICES) - 1) * self.train_clips_per_device
                    + len(DEVICE_ORDER) * self.eval_clips_per_device
                ),
                1.0,
                SAMPLE_RATE,
                "scale x (train_clips_a, train_clips_per_device, eval_clips_per_device)",
            )

        def check_consistent(self) -> None:
            """Refuse counts the generator would silently clamp (compared as it scales them:
            at least one recording per scene)."""
            train_a = max(
                len(SCENES), round(self.train_clips_a * self.scale / SECONDS_PER_RECORDING)
            )
            other = round(self.train_clips_per_device * self.scale / SECONDS_PER_RECORDING)
            if other > train_a:
                raise ValueError(
                    f"train_clips_per_device ({self.train_clips_per_device}) needs more "
                    f"recordings ({other}) than train_clips_a ({self.train_clips_a}) gives "
                    f"device a ({train_a}): devices b-s3 record a subset of device a's"
                )
            recordings = max(len(SCENES), round(self.eval_recordings * self.scale))
            files = round(self.eval_clips_per_device * self.scale)
            if files > SECONDS_PER_RECORDING * recordings:
                raise ValueError(
                    f"eval_clips_per_device ({self.eval_clips_per_device}) must be at most "
                    f"{SECONDS_PER_RECORDING} per evaluation recording "
                    f"({SECONDS_PER_RECORDING * recordings} for eval_recordings "
                    f"{self.eval_recordings}): each recording gives {SECONDS_PER_RECORDING} "
                    "one-second clips"
                )

    def sizes(self) -> Sizes:
        c = self.config
        return scaled_sizes(
            c.train_clips_a,
            c.train_clips_per_device,
            c.eval_recordings,
            c.eval_clips_per_device,
            c.scale,
        )

    def folder(self) -> Path:
        cache = Path(self.config.cache).expanduser() if self.config.cache else cache_root()
        return generate(cache, self.config.seed, self.sizes())

    def load(self) -> DataSplits:
        return load_tau22(self.folder(), merge_segments=self.config.merge_segments)

    def load_without_train(self) -> DataSplits:
        return load_tau22(self.folder(), self.config.merge_segments, train=False)


@hookimpl
def register_datasets(register) -> None:
    register(Tau22Embedded)
