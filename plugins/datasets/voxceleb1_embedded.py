"""The embedded speaker-identification benchmark: VoxCeleb1's layout, generated on first use.

A deterministic generator writes, into the cache folder (``$HARNESS_CACHE``), the files a
user has after downloading VoxCeleb1 for identification, and reads them back through the
``voxceleb1`` reader's code (``_voxceleb1_layout.py``)::

    voxceleb1-embedded/<key>/wav/id10001/<video>/00001.wav   (11-character YouTube ids)
    voxceleb1-embedded/<key>/iden_split.txt                  "<1|2|3> id10001/<video>/00001.wav"
    voxceleb1-embedded/<key>/generator.json                  the settings

Each speaker (the class) has a voice: pitch, vocal-tract length (formant scale), spectral
tilt and breathiness. Each of its videos is another recording channel (a band limit, a
noise level) and day (pitch moved by up to a few semitones); each utterance says three to
five random syllables (the same inventory for every speaker, so the words say nothing about
the speaker). A speaker's last video is its test set (3), the one before its validation set
(2), the others train (1): speakers are identified through channels not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    domain_map,
    non_negative,
    note,
)
from harness_plugins.datasets._common import (
    check_generated_size,
    clip_count,
    generated_root,
    outside_domains,
    settings_from,
    settings_key,
    write_generator_info,
)
from harness_plugins.datasets._synth import (
    Voice,
    add_noise,
    bandpass,
    draw_syllables,
    draw_voice,
    log_uniform,
    normalized,
    render_speech,
    ytid,
)
from harness_plugins.datasets._voxceleb1_layout import (
    SPLIT_FILE,
    clip_path,
    load_voxceleb1,
    speaker_id,
    split_line,
)

GENERATOR_VERSION = 1
MAX_SPEAKERS = 1251
"""VoxCeleb1's speakers (id10001 to id11251)."""


@dataclass(frozen=True)
class GeneratorSettings:
    classes: int
    videos: int
    clips_per_video: int
    seconds: float
    sample_rate: int
    seed: int

    def key(self) -> str:
        return settings_key(GENERATOR_VERSION, self)

    def video_split(self, video: int) -> str:
        """The split of a speaker's ``video``-th video: the last test, the one before val."""
        return {self.videos - 1: "test", self.videos - 2: "val"}.get(video, "train")


@dataclass(frozen=True)
class Channel:
    """One video's recording: the speaker's voice that day, a band limit and a noise level."""

    voice: Voice
    low_hz: float
    high_hz: float
    snr_db: float


def draw_channel(voice: Voice, rng: np.random.Generator) -> Channel:
    return Channel(
        voice=voice.varied(rng, 1.5),
        low_hz=log_uniform(rng, 60, 400),
        high_hz=log_uniform(rng, 2500, 7000),
        snr_db=rng.uniform(5.0, 25.0),
    )


def render_clip(channel: Channel, rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """One utterance: three to five random syllables through the video's channel."""
    n = round(seconds * sr)
    length = max(int(rng.uniform(0.7, 1.0) * n), 1)
    onset = int(rng.integers(0, n - length + 1))
    syllables = draw_syllables(rng, int(rng.integers(3, 6)))
    clip = np.zeros(n)
    clip[onset : onset + length] = render_speech(
        syllables, channel.voice.varied(rng, 0.7), rng, length, sr
    )
    clip = bandpass(clip, channel.low_hz, channel.high_hz, sr)
    snr = channel.snr_db + rng.normal(0.0, 2.0)
    return normalized(add_noise(clip, rng, snr), rng.uniform(0.3, 0.9))


def generate(settings: GeneratorSettings, root: Path) -> None:
    """Write every speaker's videos and ``iden_split.txt``."""
    s = settings
    lines = []
    for k in range(s.classes):
        speaker = speaker_id(k)
        voice = draw_voice(np.random.default_rng([s.seed, 0, k]))
        for v in range(s.videos):
            rng = np.random.default_rng([s.seed, 1, k, v])
            video, channel = ytid(rng), draw_channel(voice, rng)
            (root / "wav" / speaker / video).mkdir(parents=True)
            for i in range(s.clips_per_video):
                clip_rng = np.random.default_rng([s.seed, 2, k, v, i])
                clip = render_clip(channel, clip_rng, s.seconds, s.sample_rate)
                relative = clip_path(speaker, video, i + 1)
                sf.write(root / "wav" / relative, clip, s.sample_rate, subtype="PCM_16")
                lines.append(split_line(s.video_split(v), relative))
    lines.sort(key=lambda line: line.split()[1])
    (root / SPLIT_FILE).write_text("".join(f"{line}\n" for line in lines))
    write_generator_info(root / "generator.json", GENERATOR_VERSION, s)
    note(f"voxceleb1-embedded: generated {len(lines)} clips")


class VoxCeleb1Embedded(Dataset):
    name = "voxceleb1-embedded"
    generator_version = GENERATOR_VERSION
    description = (
        "Synthetic speaker identification in VoxCeleb1's layout (wav/idXXXXX/<video>/NNNNN.wav "
        "+ iden_split.txt, test and val on unseen videos); generated on first use."
    )

    @dataclass
    class Config:
        classes: int = 10
        """Speakers (id10001 on)."""
        videos: int = 5
        """Videos per speaker: the last is the test set, the one before validation."""
        clips_per_video: int = 4
        seconds: float = 2.0
        sample_rate: int = 16000
        seed: int = 0
        """Seed of the generator (the data set itself), not of the run."""
        eval_split: Literal["test", "val"] = "test"
        """The set scored (as the ``voxceleb1`` reader's option)."""

        domains = domain_map(
            classes=between(2, MAX_SPEAKERS, "Speakers (classes), as VoxCeleb1's at most 1,251."),
            videos=clip_count("Videos per speaker (one test, one val, the rest train).", 3),
            clips_per_video=clip_count("Utterances per video."),
            seconds=Domain(gt=0, le=60, help="Seconds per generated clip."),
            sample_rate=between(8000, 192000, "Sample rate of the generated clips (Hz)."),
            seed=non_negative("Seed of the generator (the data set itself), not of the run."),
        )

        def __post_init__(self) -> None:
            if outside_domains(self):
                return  # the field's own range is the message
            check_generated_size(
                self.classes * self.videos * self.clips_per_video,
                self.seconds,
                self.sample_rate,
                "classes x videos x clips_per_video",
            )

    def root(self) -> Path:
        """The generated data set's folder (generated now unless already complete)."""
        return generated_root(self.name, settings_from(self.config, GeneratorSettings), generate)

    def load(self) -> DataSplits:
        cfg = self.config
        return load_voxceleb1(self.root(), cfg.eval_split, cfg.seconds, self.name)


@hookimpl
def register_datasets(register) -> None:
    register(VoxCeleb1Embedded)
