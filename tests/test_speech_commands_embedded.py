"""The embedded Speech Commands v2 set: generated in the published layout, deterministic,
split by speaker, read by the real ``speech-commands`` reader, and learnable."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch

from harness.api import DataSplits, EvalContext
from harness.data.loader import load_clips
from harness_plugins.datasets import speech_commands_embedded
from harness_plugins.datasets._speech_commands_layout import WORDS
from harness_plugins.datasets.speech_commands import SpeechCommands
from harness_plugins.datasets.speech_commands_embedded import SpeechCommandsEmbedded
from harness_plugins.protocols.finetune import Finetune
from tests.test_linear_finetune import SAMPLE_RATE
from tests.test_multilabel import context_on

TINY = {"classes": 4, "train_speakers": 8, "held_out_speakers": 4, "seconds": 0.5}
CLIP_NAME = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def digests(root: Path) -> dict[str, str]:
    """sha256 of every generated file (not the done marker), by relative path."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".done")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def speaker_of(entry: str) -> str:
    return entry.split("/")[1].split("_")[0]


def finetune_context(splits: DataSplits, seed: int = 0) -> EvalContext:
    """A fine-tuning context on the splits' audio (resampled to the small backbone's rate)."""
    audio = {
        s: load_clips(splits.split(s), SAMPLE_RATE, splits.clip_seconds, [])
        for s in ("train", "eval")
    }
    return context_on(splits, audio, seed)


def finetuned_accuracy(splits: DataSplits, epochs: int) -> float:
    torch.manual_seed(0)
    protocol = Finetune(Finetune.Config(epochs=epochs, batch_size=8, lr=1e-2))
    return protocol.evaluate(finetune_context(splits)).metrics["acc"]


def test_generated_in_the_published_layout_split_by_speaker(cache):
    splits = SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY)).load()
    root = splits.root
    assert root.parent == cache / "speech-commands-embedded" and (root / ".done").is_file()
    words = sorted(WORDS[:4])
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["_background_noise_", *words]
    assert sorted(p.name for p in (root / "_background_noise_").iterdir()) == [
        "pink_noise.wav",
        "white_noise.wav",
    ]
    for word in words:
        names = [p.name for p in (root / word).iterdir()]
        assert len(names) == 16 and all(CLIP_NAME.match(n) for n in names), names
    lists = {
        name: (root / name).read_text().splitlines()
        for name in ("validation_list.txt", "testing_list.txt")
    }
    for entries in lists.values():
        assert entries == sorted(entries) and len(entries) == 4 * 4
        assert all((root / e).is_file() and e.split("/")[0] in words for e in entries)
    validation = {speaker_of(e) for e in lists["validation_list.txt"]}
    testing = {speaker_of(e) for e in lists["testing_list.txt"]}
    train = {c.meta["speaker"] for c in splits.train}
    assert (len(train), len(validation), len(testing)) == (8, 4, 4)
    assert not (train & validation or train & testing or validation & testing)
    assert (len(splits.train), len(splits.valid), len(splits.eval)) == (32, 16, 16)
    assert splits.classes == words
    info = sf.info(str(splits.eval[0].path))
    assert (info.samplerate, info.frames) == (16000, 8000)


def test_the_real_reader_reads_the_generated_folder(cache):
    embedded = SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY))
    splits = embedded.load()
    real = SpeechCommands(SpeechCommands.Config(root=splits.root, clip_seconds=0.5)).load()
    assert real.classes == splits.classes
    for split in ("train", "eval", "valid"):
        assert [c.path for c in getattr(real, split)] == [c.path for c in getattr(splits, split)]
    on_validation = SpeechCommandsEmbedded(
        SpeechCommandsEmbedded.Config(**TINY, eval_split="validation")
    ).load()
    assert on_validation.root == splits.root  # the scored list is no generator setting
    assert {c.path for c in on_validation.eval} == {c.path for c in splits.valid}


def test_generation_is_deterministic_and_done_once(tmp_path, monkeypatch):
    roots = []
    for name in ("one", "two"):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / name))
        roots.append(SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY)).root())
    assert digests(roots[0]) == digests(roots[1])

    def must_not_run(*args):
        raise AssertionError("regenerated a finished data set")

    monkeypatch.setattr(speech_commands_embedded, "generate", must_not_run)
    assert SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY)).root() == roots[1]
    with pytest.raises(AssertionError, match="regenerated"):
        SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY, seed=1)).root()


def test_finetuning_on_unseen_speakers_beats_chance(cache):
    splits = SpeechCommandsEmbedded(SpeechCommandsEmbedded.Config(**TINY)).load()
    # balanced eval list: the majority (prior) baseline is chance, 25 %
    assert sorted(c.label for c in splits.eval) == sorted(list(range(4)) * 4)
    assert finetuned_accuracy(splits, epochs=8) >= 50.0
