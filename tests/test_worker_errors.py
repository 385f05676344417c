"""Issue 23 item 4: an error inside a DataLoader worker is one readable line naming the file;
Ctrl-C of a local-executor sweep prints no traceback from its job controllers."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip
from harness.data.audio_cache import cached_audio
from harness.data.loader import Loader, split_audio, worker_message
from harness.util.errors import DataError, UsageError

RATE = 8000


def clips_with_a_bad_file(folder: Path, bad: bytes) -> tuple[list[Clip], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(4):
        path = folder / f"c{i}.wav"
        sf.write(path, np.full(800, 0.1 * i, np.float32), RATE)
        clips.append(Clip(path, 0))
    (folder / "c2.wav").write_bytes(bad)
    return clips, folder / "c2.wav"


def read_all(audio, workers: int) -> None:
    loader = Loader(audio, 2, torch.device("cpu"), workers=workers)
    try:
        for _ in loader:
            pass
    finally:
        loader.close()


@pytest.mark.parametrize("bad", [b"RIFF garbage", b"", b"\x00" * 64])
def test_a_worker_error_is_the_same_one_line_as_in_process(tmp_path, bad):
    clips, bad_path = clips_with_a_bad_file(tmp_path, bad)
    audio = split_audio(clips, RATE, 0.1, ["a"])
    messages = []
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            read_all(audio, workers)
        messages.append(str(info.value))
    in_process, from_worker = messages
    assert from_worker == in_process
    assert str(bad_path) in from_worker
    assert "Traceback" not in from_worker and "\\n" not in from_worker


def test_a_truncated_cache_read_in_a_worker_names_the_file(tmp_path):
    clips, _ = clips_with_a_bad_file(tmp_path / "wav", b"")
    del clips[2]
    audio = cached_audio(split_audio(clips, RATE, 0.1, ["a"]), str(tmp_path / "cache"))
    waves = audio.wave.folder / "waves.npy"
    with waves.open("r+b") as handle:  # shrunk after the cache was opened and verified
        handle.truncate(waves.stat().st_size - 10)
    with pytest.raises(DataError) as info:
        read_all(audio, workers=1)
    assert str(info.value) == (
        f"decoded-audio cache file {waves} is truncated at clip 2; delete its folder to rebuild it"
    )


def test_worker_message_keeps_other_harness_errors_and_plain_messages():
    folded = UsageError(
        "Caught UsageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\nharness.util.errors.UsageError: unknown '
        "value 'Error: x' in a.csv\n"
    )
    assert worker_message(folded) == "unknown value 'Error: x' in a.csv"
    assert worker_message(DataError("two\nlines")) == "two\\nlines"


DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.cli.executors import ExecutorOptions, make_executor
    executor = make_executor(ExecutorOptions(executor="local"), Path(sys.argv[1]), "t")
    job = executor.submit(time.sleep, 60)
    print("submitted", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        job.cancel(check=False)
        print("driver interrupted", file=sys.stderr)
    """
)


def test_ctrl_c_of_local_jobs_prints_no_traceback_from_their_controllers(tmp_path):
    """Ctrl-C reaches the whole foreground process group: the driver and every job."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path / "jobs")],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout.readline().strip() == "submitted"
    deadline = time.monotonic() + 30
    while not list((tmp_path / "jobs").glob("*_log.out")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the job's task has started
    time.sleep(1.0)
    os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    time.sleep(1.0)  # the controller's last words, if any, would reach our stderr
    assert err.strip() == "driver interrupted"
    assert "KeyboardInterrupt" in (tmp_path / "jobs" / "controllers.err").read_text()


def test_a_worker_killed_while_building_the_cache_names_the_cache(tmp_path, monkeypatch):
    from harness.data import loader as loader_module

    clips, _ = clips_with_a_bad_file(tmp_path / "wav", b"")
    del clips[2]
    audio = split_audio(clips, RATE, 0.1, ["a"])

    def die(self, i):
        os.kill(os.getpid(), signal.SIGKILL)  # in the worker: as the OOM killer would

    monkeypatch.setattr(loader_module.DecodedWaves, "read", die)
    with pytest.raises(DataError) as info:
        cached_audio(audio, str(tmp_path / "cache"), workers=1, desc="decoding train")
    message = str(info.value)
    assert message.startswith("decoding train: a worker died building the cache ")
    assert str(tmp_path / "cache") in message and "\\n" not in message
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []
    del info  # its traceback holds the loader's iterator: collected, it forgets the dead worker
    gc.collect()
