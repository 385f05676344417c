"""Issue 23 item 8: a DataLoader worker reading a bad file.

Hypothesis damages one WAV file of a split: a valid file cut at any byte, a flipped header or
payload byte, garbage, an absurd sample rate, a NaN sample, a folder or nothing in its place.
Read with one worker and without workers, the split reads the same (the damage was harmless)
or fails with the same one line, naming the file, in both.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.data.loader import Loader, split_audio  # noqa: E402
from harness.util.errors import HarnessError  # noqa: E402
from tests.fuzzing import cases  # noqa: E402
from tests.test_worker_errors import RATE, clips_with_a_bad_file  # noqa: E402


def valid_wav(path: Path) -> bytes:
    sf.write(path, np.full(800, 0.25, np.float32), RATE, subtype="FLOAT")
    return path.read_bytes()


@st.composite
def damages(draw, clean: bytes) -> tuple[str, bytes | None]:
    """``(kind, bytes)``; bytes None: a folder or nothing in the file's place."""
    kind = draw(st.sampled_from(["cut", "flip", "garbage", "rate", "nan", "folder", "missing"]))
    data = bytearray(clean)
    if kind == "cut":
        return kind, bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return kind, bytes(data)
    if kind == "garbage":
        return kind, draw(st.binary(min_size=0, max_size=200))
    if kind == "rate":
        at = data.index(b"fmt ") + 12
        data[at : at + 4] = struct.pack("<I", draw(st.sampled_from([0, 768_001, 2**32 - 1])))
        return kind, bytes(data)
    if kind == "nan":
        data[-4:] = struct.pack("<f", float("nan"))
        return kind, bytes(data)
    return kind, None


def read_with(loader_args, workers: int) -> list | str:
    loader = Loader(*loader_args, workers=workers)
    try:
        return [batch.wave.clone() for batch in loader]
    except HarnessError as err:
        return str(err)
    finally:
        loader.close()


@cases(15)
@given(data=st.data())
def test_a_damaged_file_reads_the_same_or_fails_the_same_one_line_with_a_worker(
    tmp_path_factory, data
):
    import torch

    folder = tmp_path_factory.mktemp("wav")
    clean = valid_wav(folder / "clean.wav")
    kind, bad = data.draw(damages(clean))
    clips, bad_path = clips_with_a_bad_file(folder, clean)
    if bad is None:
        bad_path.unlink()
        if kind == "folder":
            bad_path.mkdir()
    else:
        bad_path.write_bytes(bad)
    try:
        audio = split_audio(clips, RATE, 0.1, ["a"])
    except HarnessError as err:  # found while listing the split: before any worker starts
        event(f"{kind}: refused before reading")
        assert str(bad_path) in str(err) and "\n" not in str(err)
        return
    args = (audio, 2, torch.device("cpu"))
    in_process, from_worker = read_with(args, 0), read_with(args, 1)
    if isinstance(in_process, str):
        event(f"{kind}: one line")
        assert from_worker == in_process, (from_worker, in_process)
        assert str(bad_path) in in_process and "\n" not in in_process
        assert "Traceback" not in in_process
    else:
        event(f"{kind}: read")
        assert not isinstance(from_worker, str), from_worker
        assert all(torch.equal(a, b) for a, b in zip(in_process, from_worker, strict=True))
    shutil.rmtree(folder, ignore_errors=True)
