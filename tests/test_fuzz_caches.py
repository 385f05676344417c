"""Issue 23 items 2 and 8: caches are verified, not trusted.

Every file of a decoded-audio cache entry, an embedding cache entry and a generated folder
(``build_once``), corrupted in every way (missing, empty, truncated, garbage of the same
size, replaced by a folder, one flipped byte anywhere: hypothesis), is detected and rebuilt
with one warning: what a run reads afterwards equals a clean build exactly. Downloads of
pretrained checkpoints are verified before they are kept.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import random
import shutil
import threading
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.api import Clip, DataSplits, Pretrained  # noqa: E402
from harness.data.audio_cache import cached_audio  # noqa: E402
from harness.data.embeddings import cached_embed, embedding_cache_dir  # noqa: E402
from harness.data.loader import split_audio  # noqa: E402
from harness.registry.checkpoints import read_checkpoint  # noqa: E402
from harness.registry.pretrained import fetch  # noqa: E402
from harness.util.cache import (  # noqa: E402
    DONE_MARKER,
    CacheDamaged,
    build_once,
    host_name,
    verify_built,
    write_done_marker,
)
from harness.util.errors import DataError  # noqa: E402
from tests.test_cache import dead_pid  # noqa: E402

RATE = 8000
CORRUPTIONS = ("missing", "empty", "truncated", "garbage", "folder")
SCALE = float(os.environ.get("HARNESS_FUZZ_SCALE", "1"))
FLIP_CASES = max(1, round(40 * SCALE))
SILENT = ("missing", "folder")
"""Corruptions of the done marker itself: an unfinished folder, rebuilt without a warning."""


def corrupt(path: Path, how: str) -> None:
    """Damage one file of a cache entry in place."""
    size = path.stat().st_size
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        with path.open("r+b") as handle:
            handle.truncate(size // 2)
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes())
    elif how == "folder":
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")


def rebuilt_with_warnings(call) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [str(w.message) for w in caught]


# --- the decoded-audio cache -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tone_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    clips = []
    for i in range(5):
        path = folder / f"c{i}.wav"
        t = np.arange(RATE // 4) / RATE
        wave = (0.2 * (i + 1) * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32)
        sf.write(path, wave, RATE, subtype="FLOAT")
        clips.append(Clip(path, i % 2, "a"))
    return clips


def audio_rows(clips: list[Clip], cache: Path):
    audio = cached_audio(split_audio(clips, RATE, 0.25, ["a"]), str(cache))
    return audio.wave.folder, np.stack([audio.wave.read(i) for i in range(len(clips))])


AUDIO_FILES = ("waves.npy", "scales.npy", "index.json", DONE_MARKER)


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("name", AUDIO_FILES)
def test_every_file_of_an_audio_cache_entry_damaged_every_way_is_rebuilt(
    tmp_path, tone_split, name, how
):
    folder, clean = audio_rows(tone_split, tmp_path)
    corrupt(folder / name, how)
    (again, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tone_split, tmp_path))
    assert again == folder and np.array_equal(rows, clean)
    verify_built(folder)
    if name == DONE_MARKER and how in SILENT:
        assert messages == []
    else:
        [message] = messages
        assert message.startswith(f"cache {folder} is damaged (") and "rebuilding it" in message


@pytest.mark.parametrize(
    ("bad_scale", "reason"),
    [(np.nan, "NaN, infinite or below-1"), (0.0, "below-1"), (np.inf, "infinite")],
)
def test_nan_zero_or_infinite_scales_are_refused_even_when_their_checksum_matches(
    tmp_path, tone_split, bad_scale, reason
):
    folder, clean = audio_rows(tone_split, tmp_path)
    scales = np.load(folder / "scales.npy")
    scales[1] = bad_scale
    np.save(folder / "scales.npy", scales)
    write_done_marker(folder)  # as if the build itself had written them
    (_, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tone_split, tmp_path))
    assert np.array_equal(rows, clean)
    [message] = messages
    assert "scales.npy holds a NaN, infinite or below-1 scale" in message and reason in message


def test_an_index_whose_shape_lies_is_refused_even_when_its_checksum_matches(tmp_path, tone_split):
    folder, clean = audio_rows(tone_split, tmp_path)
    index = json.loads((folder / "index.json").read_text())
    index["shape"][1] -= 1
    (folder / "index.json").write_text(json.dumps(index))
    write_done_marker(folder)
    (_, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tone_split, tmp_path))
    assert np.array_equal(rows, clean) and len(messages) == 1
    assert "scales.npy holds" in messages[0] or "does not match index.json" in messages[0]


def test_an_entry_that_is_a_file_is_replaced(tmp_path, tone_split):
    folder, clean = audio_rows(tone_split, tmp_path)
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    _, rows = audio_rows(tone_split, tmp_path)
    assert folder.is_dir() and np.array_equal(rows, clean)


@settings(
    max_examples=FLIP_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(AUDIO_FILES[:3]),
    where=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_one_flipped_byte_anywhere_in_an_audio_cache_is_never_read(
    tmp_path_factory, tone_split, name, where, flip
):
    cache = tmp_path_factory.mktemp("flip")
    folder, clean = audio_rows(tone_split, cache)
    path = folder / name
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= flip
    path.write_bytes(bytes(data))
    (_, rows), messages = rebuilt_with_warnings(lambda: audio_rows(tone_split, cache))
    assert np.array_equal(rows, clean)
    assert len(messages) == 1 and "does not match its checksum" in messages[0]


# --- the embedding cache ---------------------------------------------------------------------


def embedding_ctx(tmp_path: Path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    calls = []

    def embed(split):
        calls.append(split)
        return torch.arange(6.0).reshape(2, 3)

    ctx = SimpleNamespace(
        splits=DataSplits(["a", "b"], [], [Clip(wav, 0), Clip(wav, 1)], clip_seconds=1.0),
        backbone=SimpleNamespace(sample_rate=16000, name="b"),
        embed=embed,
        split_keys={},
    )
    return ctx, calls


EMBEDDING_CASES = [
    (name, how) for name in ("embeddings.pt", "info.json", DONE_MARKER) for how in CORRUPTIONS
] + [("embeddings.pt", "tampered")]


@pytest.mark.parametrize(("name", "how"), EMBEDDING_CASES)
def test_every_file_of_an_embedding_cache_entry_damaged_every_way_is_rebuilt(tmp_path, name, how):
    ctx, calls = embedding_ctx(tmp_path)
    clean = cached_embed(ctx, "eval", "h")
    folder = embedding_cache_dir(ctx, "eval", "h")
    if how == "tampered":  # a valid file of the right shape, other values: wrong metrics
        torch.save(torch.zeros(2, 3), folder / name)
    else:
        corrupt(folder / name, how)
    again, messages = rebuilt_with_warnings(lambda: cached_embed(ctx, "eval", "h"))
    assert torch.equal(again, clean) and calls == ["eval", "eval"]
    verify_built(folder)
    assert torch.equal(torch.load(folder / "embeddings.pt", weights_only=True), clean)
    if name == DONE_MARKER and how in SILENT:
        assert messages == []
    else:
        assert len(messages) == 1 and "rebuilding it" in messages[0]


def test_a_torch_save_failure_other_than_oserror_keeps_the_run_going(tmp_path, monkeypatch):
    ctx, _ = embedding_ctx(tmp_path)

    def failing_save(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    value, messages = rebuilt_with_warnings(lambda: cached_embed(ctx, "eval", "h"))
    assert torch.equal(value, torch.arange(6.0).reshape(2, 3))
    [message] = messages
    assert message.startswith("could not cache embeddings in ") and "file write failed" in message
    assert not embedding_cache_dir(ctx, "eval", "h").exists()


# --- generated folders (data sets generated into the cache) ----------------------------------


def generate_into(tmp: Path) -> None:
    (tmp / "meta").mkdir()
    (tmp / "meta" / "table.csv").write_text("a,b\n1,2\n")
    (tmp / "audio").mkdir()
    for i in range(3):
        sf.write(tmp / "audio" / f"{i}.wav", np.full(400, 0.1 * i, np.float32), RATE)
    (tmp / "big.bin").write_bytes(np.random.default_rng(0).bytes(3 << 20))  # sampled checksum


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != DONE_MARKER
    }


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("name", ["meta/table.csv", "audio/1.wav", "big.bin"])
def test_every_file_of_a_generated_folder_damaged_every_way_is_regenerated(tmp_path, name, how):
    folder = build_once(tmp_path / "gen", generate_into)
    clean = snapshot(folder)
    corrupt(folder / name, how)
    again, messages = rebuilt_with_warnings(lambda: build_once(tmp_path / "gen", generate_into))
    assert again == folder and snapshot(folder) == clean
    [message] = messages
    assert message.startswith(f"cache {folder} is damaged (") and name in message


def test_a_folder_built_before_checksums_is_trusted_as_before(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "x").write_text("1")
    (folder / DONE_MARKER).write_text("done\n")
    calls = []
    assert build_once(folder, calls.append) == folder and calls == []


def test_a_sampled_checksum_sees_a_large_file_replaced_by_garbage_of_its_size(tmp_path):
    folder = build_once(tmp_path / "gen", generate_into)
    corrupt(folder / "big.bin", "garbage")
    with pytest.raises(Exception, match="big.bin does not match its checksum"):
        verify_built(folder)


# --- pretrained downloads ---------------------------------------------------------------------


class PlainServer:
    """Serves ``files`` with no Content-Length (the body ends when the connection closes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                body = owner.files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def plain_server():
    server = PlainServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4096.0)}, buffer)
    return buffer.getvalue()


BODIES = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "html": lambda good: b"\n<!DOCTYPE html><html><body>Sign in</body></html>",
    "garbage": lambda good: np.random.default_rng(1).bytes(5000),
    "damaged member": lambda good: (
        good[:200] + bytes(b ^ 0xFF for b in good[200:4000]) + good[4000:]
    ),
}


@pytest.mark.parametrize("kind", list(BODIES))
def test_a_bad_download_without_content_length_keeps_nothing(plain_server, tmp_path, kind):
    plain_server.files["/ck.pt"] = BODIES[kind](checkpoint_bytes())
    path = tmp_path / "cache" / "ck.pt"
    with pytest.raises(DataError) as info:
        fetch(Pretrained(f"{plain_server.url}/ck.pt", "test"), path, progress=False)
    message = str(info.value)
    assert message.startswith("cannot download ck.pt (") and f"place it at {path}" in message
    assert sorted(os.listdir(path.parent)) == []


def test_a_good_download_without_content_length_is_kept(plain_server, tmp_path):
    good = checkpoint_bytes()
    plain_server.files["/ck.pt"] = good
    path = fetch(Pretrained(f"{plain_server.url}/ck.pt", "test"), tmp_path / "ck.pt", False)
    assert path.read_bytes() == good
    assert path.with_name("ck.pt.sha256").read_text().strip() == hashlib.sha256(good).hexdigest()


def test_a_killed_downloads_partial_file_is_removed_by_the_next(plain_server, tmp_path):
    plain_server.files["/ck.pt"] = checkpoint_bytes()
    folder = tmp_path / "cache"
    folder.mkdir()
    killed = folder / f".ck.pt.{host_name()}~{dead_pid()}~0.abc123"
    alive = folder / f".ck.pt.{host_name()}~{os.getpid()}~0.def456"
    other = folder / f".other.pt.{host_name()}~{dead_pid()}~0.ghi789"
    for partial in (killed, alive, other):
        partial.write_bytes(b"half")
    fetch(Pretrained(f"{plain_server.url}/ck.pt", "test"), folder / "ck.pt", False)
    assert not killed.exists() and alive.exists() and other.exists()


def test_a_kept_checkpoint_that_does_not_load_says_which_file_to_delete(tmp_path):
    path = tmp_path / "ck.pt"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("archive/data.pkl", b"\x80\x02garbage")
    with pytest.raises(DataError) as info:
        read_checkpoint(path, downloaded=True)
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: ") and "\n" not in message
    assert message.endswith("; delete it to download it again")


def test_large_folders_check_every_size_and_a_random_sample_without_touching_the_rng(
    tmp_path, monkeypatch
):
    from harness.util import cache

    folder = build_once(tmp_path / "gen", generate_into)
    monkeypatch.setattr(cache, "CHECKSUM_ALL_UP_TO", 2)
    monkeypatch.setattr(cache, "CHECKSUM_SAMPLE", 1)
    state = random.getstate()
    verify_built(folder)
    assert random.getstate() == state  # a run's Python RNG is not consumed
    corrupt(folder / "audio" / "2.wav", "truncated")
    with pytest.raises(CacheDamaged, match="audio/2.wav has"):  # sizes: always all of them
        verify_built(folder)


# --- end to end: a damaged cache never gives other metrics ----------------------------------


def test_a_run_on_a_damaged_audio_cache_stores_the_same_metrics(tmp_path, capsys):
    from harness.cli.main import main
    from tests.conftest import toy_run_args
    from tests.test_cli import stored_runs

    audio_cache = tmp_path / "audio-cache"
    argv = toy_run_args(tmp_path, "--epochs", "1", "--set", f"run.audio_cache={audio_cache}")
    main(argv)
    entries = [p for p in audio_cache.iterdir() if not p.name.startswith(".")]
    assert entries
    for entry in entries:  # every split's cache: garbage rows of the right size
        corrupt(entry / "waves.npy", "garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(argv)
    damaged = [str(w.message) for w in caught if "is damaged" in str(w.message)]
    assert len(damaged) == len(entries)
    first, second = stored_runs(tmp_path)
    assert json.loads(first[2]) == json.loads(second[2])
