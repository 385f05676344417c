"""Kill suite for caches (issue 23 item 8): SIGKILL while a damaged decoded-audio cache is
discarded, or while it is rebuilt; the next open leaves no debris and reads the clean rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.api import Clip
from harness.data.audio_cache import cached_audio
from harness.data.loader import split_audio
from harness.util.cache import OWNER

RATE = 8000

OPEN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from harness.api import Clip
    from harness.data.audio_cache import cached_audio
    from harness.data.loader import split_audio
    wav, cache = Path(sys.argv[1]), sys.argv[2]
    clips = [Clip(p, 0, "a") for p in sorted(wav.glob("*.wav"))]
    cached_audio(split_audio(clips, 8000, 0.25, ["a"]), cache)
    """
)


def tones(folder: Path) -> list[Clip]:
    folder.mkdir(parents=True)
    for i in range(4):
        t = np.arange(RATE // 4) / RATE
        wave = (0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t)).astype(np.float32)
        sf.write(folder / f"c{i}.wav", wave, RATE, subtype="FLOAT")
    return [Clip(p, 0, "a") for p in sorted(folder.glob("*.wav"))]


def rows(clips: list[Clip], cache: Path) -> np.ndarray:
    audio = cached_audio(split_audio(clips, RATE, 0.25, ["a"]), str(cache))
    return np.stack([audio.wave.read(i) for i in range(len(clips))])


def killed_open(wav: Path, cache: Path, stage: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OPEN, str(wav), str(cache)],
        env={**os.environ, "HARNESS_TEST_KILL_AT": stage},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr


def debris(cache: Path) -> list[Path]:
    return [p for p in cache.rglob(".*") if OWNER.match(p.name)]


@pytest.mark.parametrize("stage", ["generate", "discard"])
def test_sigkill_while_a_damaged_cache_is_discarded_or_rebuilt_leaves_nothing_wrong(
    tmp_path, stage
):
    clips = tones(tmp_path / "wav")
    cache = tmp_path / "cache"
    clean = rows(clips, tmp_path / "reference")
    rows(clips, cache)
    [entry] = [p for p in cache.iterdir() if not p.name.startswith(".")]
    (entry / "scales.npy").write_bytes(b"garbage")  # damaged: discarded, then rebuilt
    killed_open(tmp_path / "wav", cache, stage)
    assert len(debris(cache)) == 1  # the killed discard's or rebuild's temporary folder
    assert not entry.exists()  # moved aside at once: never read half-deleted
    assert np.array_equal(rows(clips, cache), clean)
    assert debris(cache) == []
