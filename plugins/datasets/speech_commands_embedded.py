"""The embedded keyword-spotting benchmark: Speech Commands v2's layout, generated on first use.

A deterministic generator writes, into the cache folder (``$HARNESS_CACHE``), the files a
user has after unpacking Speech Commands v0.02, and reads them back through the
``speech-commands`` reader's code (``_speech_commands_layout.py``)::

    speech-commands-embedded/<key>/<word>/<speaker>_nohash_<n>.wav   (one folder per word)
    speech-commands-embedded/<key>/validation_list.txt               <word>/<file>, a line
    speech-commands-embedded/<key>/testing_list.txt
    speech-commands-embedded/<key>/_background_noise_/{white,pink}_noise.wav
    speech-commands-embedded/<key>/generator.json                    the settings

Each word (the first ``classes`` of v0.02's 35, commands first) is a fixed sequence of one
to three synthetic syllables: a consonant burst (noise band) and a vowel (three formants)
with its own pitch glide. Each speaker (an 8-hex-digit id, as published) has a voice: pitch,
vocal-tract length (formant scale), spectral tilt and breathiness; each clip varies the
voice, the word's timing, onset and length, the noise level and the gain. As in the real
lists, every clip of a speaker is in one split: a model is scored on voices it never heard.
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
from harness_plugins.datasets._speech_commands_layout import (
    BACKGROUND_NOISE,
    LIST_FILES,
    WORDS,
    clip_path,
    load_speech_commands,
    write_list,
)
from harness_plugins.datasets._synth import (
    Syllable,
    Voice,
    add_noise,
    draw_syllables,
    draw_voice,
    normalized,
    render_speech,
)

GENERATOR_VERSION = 1
BACKGROUND_SECONDS = 5.0


@dataclass(frozen=True)
class GeneratorSettings:
    classes: int
    train_speakers: int
    held_out_speakers: int
    repetitions: int
    seconds: float
    sample_rate: int
    seed: int

    def key(self) -> str:
        return settings_key(GENERATOR_VERSION, self)

    def speaker_splits(self) -> list[str]:
        """The split of each speaker: train, then validation, then test speakers."""
        held = self.held_out_speakers
        return ["train"] * self.train_speakers + ["validation"] * held + ["test"] * held


def speaker_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct 8-hex-digit speaker ids (as the published file names hold)."""
    ids: list[str] = []
    while len(ids) < count:
        name = f"{int(rng.integers(0, 2**32)):08x}"
        if name not in ids:
            ids.append(name)
    return ids


def word_syllables(seed: int, word: int) -> list[Syllable]:
    """The fixed syllables of one word (one to three)."""
    rng = np.random.default_rng([seed, 0, word])
    return draw_syllables(rng, int(rng.integers(1, 4)))


def render_clip(
    word: list[Syllable], voice: Voice, rng: np.random.Generator, seconds: float, sr: int
) -> np.ndarray:
    """One clip: the word spoken by a varied voice at a random onset, noise, gain."""
    n = round(seconds * sr)
    length = max(int(rng.uniform(0.45, 0.8) * n), 1)
    onset = int(rng.integers(0, n - length + 1))
    clip = np.zeros(n)
    clip[onset : onset + length] = render_speech(word, voice.varied(rng, 1.0), rng, length, sr)
    return normalized(add_noise(clip, rng, rng.uniform(10.0, 30.0)), rng.uniform(0.3, 0.9))


def write_background_noise(folder: Path, seed: int, sr: int) -> None:
    """White and pink noise recordings, as the published ``_background_noise_`` holds."""
    folder.mkdir()
    rng = np.random.default_rng([seed, 3])
    n = round(BACKGROUND_SECONDS * sr)
    white = rng.normal(size=n)
    spectrum = np.fft.rfft(rng.normal(size=n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    pink = np.fft.irfft(spectrum, n)
    for name, noise in (("white_noise.wav", white), ("pink_noise.wav", pink)):
        sf.write(folder / name, normalized(noise, 0.5), sr, subtype="PCM_16")


def generate(settings: GeneratorSettings, root: Path) -> None:
    """Write the word folders, both split lists and the background noise."""
    s = settings
    splits = s.speaker_splits()
    speakers = speaker_ids(np.random.default_rng([s.seed, 1]), len(splits))
    voices = [draw_voice(np.random.default_rng([s.seed, 2, j])) for j in range(len(splits))]
    listed: dict[str, list[str]] = {split: [] for split in LIST_FILES}
    for k, word in enumerate(WORDS[: s.classes]):
        (root / word).mkdir()
        syllables = word_syllables(s.seed, k)
        for j, (speaker, split) in enumerate(zip(speakers, splits, strict=True)):
            for r in range(s.repetitions):
                rng = np.random.default_rng([s.seed, 4, k, j, r])
                clip = render_clip(syllables, voices[j], rng, s.seconds, s.sample_rate)
                relative = clip_path(word, speaker, r)
                sf.write(root / relative, clip, s.sample_rate, subtype="PCM_16")
                if split in listed:
                    listed[split].append(relative)
    for split, name in LIST_FILES.items():
        write_list(root / name, listed[split])
    write_background_noise(root / BACKGROUND_NOISE, s.seed, s.sample_rate)
    write_generator_info(root / "generator.json", GENERATOR_VERSION, s)
    note(f"speech-commands-embedded: generated {s.classes * len(splits) * s.repetitions} clips")


class SpeechCommandsEmbedded(Dataset):
    name = "speech-commands-embedded"
    generator_version = GENERATOR_VERSION
    description = (
        "Synthetic keyword spotting in Speech Commands v2's layout (folder per word, "
        "<speaker>_nohash_<n>.wav, validation/testing lists by speaker); generated on first use."
    )

    @dataclass
    class Config:
        classes: int = 10
        """Words: the first of v0.02's 35 (yes, no, up, down, left, right, on, off, ...)."""
        train_speakers: int = 12
        held_out_speakers: int = 4
        """Speakers of validation_list.txt, and as many of testing_list.txt."""
        repetitions: int = 1
        """Clips per speaker and word (``_nohash_0``, ``_nohash_1``, ...)."""
        seconds: float = 1.0
        sample_rate: int = 16000
        seed: int = 0
        """Seed of the generator (the data set itself), not of the run."""
        eval_split: Literal["test", "validation"] = "test"
        """The list scored (as the ``speech-commands`` reader's option)."""

        domains = domain_map(
            classes=between(2, len(WORDS), "Words (classes), the first of v0.02's 35."),
            train_speakers=clip_count("Speakers of the train split (in neither list)."),
            held_out_speakers=clip_count("Speakers of each of the validation and testing lists."),
            repetitions=clip_count("Clips per speaker and word."),
            seconds=Domain(gt=0, le=60, help="Seconds per generated clip."),
            sample_rate=between(8000, 192000, "Sample rate of the generated clips (Hz)."),
            seed=non_negative("Seed of the generator (the data set itself), not of the run."),
        )

        def __post_init__(self) -> None:
            if outside_domains(self):
                return  # the field's own range is the message
            speakers = self.train_speakers + 2 * self.held_out_speakers
            check_generated_size(
                self.classes * speakers * self.repetitions,
                self.seconds,
                self.sample_rate,
                "classes x (train_speakers + 2 x held_out_speakers) x repetitions",
            )

    def root(self) -> Path:
        """The generated data set's folder (generated now unless already complete)."""
        return generated_root(self.name, settings_from(self.config, GeneratorSettings), generate)

    def load(self) -> DataSplits:
        cfg = self.config
        return load_speech_commands(self.root(), cfg.eval_split, cfg.seconds, self.name)


@hookimpl
def register_datasets(register) -> None:
    register(SpeechCommandsEmbedded)
