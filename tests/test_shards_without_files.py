"""A shards run reads its training split only from the shards (issue 22): preflight, the
health probe's batch and the protocols' reads of the training split come from the shards,
never from the clips' audio files; the eval split comes from the decoded-audio cache."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.loader import split_audio
from harness.data.shards import (
    FETCHED,
    ShardWaves,
    SplitLabels,
    manifest_clips,
    read_manifest,
    write_shards,
)
from harness.registry.config import merge, parse_set, resolve
from harness.registry.plugins import load_plugins
from harness.results.store import ResultStore
from harness.run.experiment import run_experiment
from harness.util.errors import DataError, UsageError
from harness_plugins.datasets.tau22_embedded import Tau22Embedded
from tests.conftest import TOY_PLUGIN, run_cli
from tests.test_resume import finished
from tests.test_scale import RATE, write_clips
from tests.test_shards import DEVICES, assert_refused, shard_args, write_toy_shards
from tests.toy_plugin import ToyTones


def test_shard_waves_read_by_position_equal_the_streamed_clips(tmp_path):
    clips = write_clips(tmp_path / "wav", count=11)
    audio = split_audio(clips, RATE, 0.5, DEVICES)
    write_shards(audio, tmp_path / "shards", 4)
    waves = ShardWaves(read_manifest(str(tmp_path / "shards")))
    assert len(waves) == 11
    for path in (tmp_path / "wav").iterdir():
        path.unlink()  # read by position: the clips' files are never needed
    from harness.data.shards import ShardLoader

    loader = ShardLoader(read_manifest(str(tmp_path / "shards")), audio, 1, torch.device("cpu"))
    for batch in loader.epoch(None):
        (i,) = batch.index.tolist()
        assert np.array_equal(waves.read(i), batch.wave[0].numpy())
    reversed_reads = [waves.read(i) for i in reversed(range(11))]  # any order, any shard
    assert np.array_equal(reversed_reads[0], waves.read(10))


def test_a_shards_run_trains_probes_and_evaluates_without_the_training_files(tmp_path):
    write_toy_shards(tmp_path)
    reference = run_cli(*shard_args(tmp_path, "a"))
    assert reference.returncode == 0, reference.stderr
    # empty every training clip's file (the toy data set would write a deleted one anew):
    # any header check or decode of them fails the run
    toy = ToyTones(ToyTones.Config(root=str(tmp_path / "tones"), per_class=24))
    eval_names = {clip.path.name for clip in toy.load().eval}
    emptied = 0
    for path in (tmp_path / "tones").glob("*.wav"):
        if path.name not in eval_names:
            path.write_bytes(b"")
            emptied += 1
    assert emptied == 36  # the training clips (per_class=24: 72 clips, 36 of them eval)
    without = run_cli(*shard_args(tmp_path, "b"), env={"HARNESS_CACHE": str(tmp_path / "c2")})
    assert without.returncode == 0, without.stderr[-3000:]
    metrics = [json.loads((finished(tmp_path / d) / "metrics.json").read_text()) for d in "ab"]
    assert metrics[0] == metrics[1]  # the same run: nothing of it came from those files
    events = (finished(tmp_path / "b") / "metrics.jsonl").read_text().splitlines()
    assert sum('"health"' in line for line in events) == 3  # probed after every epoch
    cache = run_cli(*shard_args(tmp_path, "c", "--set", "run.data_source=cache"))
    assert cache.returncode == 2 and "tone" in cache.stderr  # the files are unreadable


def tau_data(tmp_path) -> list[str]:
    """A TAU22 folder (the generated set's files, copied) read by the ``tau22`` reader
    (a generated set would write deleted files anew)."""
    root = tmp_path / "tau22"
    if not root.exists():
        generated = Tau22Embedded(Tau22Embedded.Config(scale=0.02, cache=str(tmp_path))).folder()
        shutil.copytree(generated, root)
    return ["--dataset", "tau22", "--backbone", "toy", "--set", f"dataset.root={root}"]


def tau_run(tmp_path, out: str, url: str = "") -> list[str]:
    """``harness run`` on shards of the TAU22 folder (streamed from ``url`` if given)."""
    sets = ["run.lr=0.01", "run.data_source=shards", f"run.shards={tmp_path / 'shards'}"]
    sets += [f"run.shards_url={url}"] if url else []
    return [
        "--plugin", str(TOY_PLUGIN), "run", *tau_data(tmp_path), "--method", "ce",
        "--aug", "none", "--epochs", "2", "--batch-size", "8",
        *(a for s in sets for a in ("--set", s)), "--out", str(tmp_path / out),
    ]  # fmt: skip


def run_config(tmp_path):
    """The configuration of :func:`tau_run` for the Python API."""
    args = tau_run(tmp_path, "c")
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    raw = merge(
        {"backbone": {"name": "toy"}, "dataset": {"name": "tau22"},
         "method": {"name": "ce"}, "run": {"epochs": 2, "batch_size": 8}},
        parse_set(sets),
    )  # fmt: skip
    return resolve(raw, load_plugins([str(TOY_PLUGIN)]))


def shards_written(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """Shards of the TAU22 folder's training split in ``tmp_path/shards`` (16 clips each),
    written from the CLI with a cache of the test's own; the environment of the runs."""
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    monkeypatch.setenv("HARNESS_CACHE", env["HARNESS_CACHE"])
    written = run_cli(
        "--plugin", str(TOY_PLUGIN), "shards", "write", str(tmp_path / "shards"),
        *tau_data(tmp_path), "--clips-per-shard", "16", env=env,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    return env


def test_a_shards_run_builds_its_training_split_from_the_manifest_without_the_files(
    tmp_path, monkeypatch
):
    env = shards_written(tmp_path, monkeypatch)
    with_files = run_cli(*tau_run(tmp_path, "a"), env=env)
    assert with_files.returncode == 0, with_files.stderr[-3000:]
    # delete every training file the manifest lists (the eval files stay)
    shards = read_manifest(str(tmp_path / "shards"))
    train_files = {p for clip in manifest_clips(shards) for p in clip.segments or (clip.path,)}
    for path in train_files:
        path.unlink()
    folder = next(iter(train_files)).parent
    assert len(list(folder.glob("*.wav"))) > 0  # the evaluation clips
    without = run_cli(*tau_run(tmp_path, "b"), env=env)
    assert without.returncode == 0, without.stderr[-3000:]
    assert not any(path.exists() for path in train_files)
    store = ResultStore(tmp_path / "c" / "runs.sqlite")
    result = run_experiment(run_config(tmp_path), tmp_path / "c", store)
    metrics = [json.loads((finished(tmp_path / d) / "metrics.json").read_text()) for d in "abc"]
    assert metrics[0] == metrics[1] == metrics[2]  # the same split, the same clips
    assert result.record.environment["train_split"] == "shards manifest"
    records = [json.loads((finished(tmp_path / d) / "record.json").read_text()) for d in "ab"]
    origins = [r["environment"]["train_split"] for r in records]
    assert origins == ["files", "shards manifest"]
    assert records[0]["environment"]["classes"] == records[1]["environment"]["classes"] == 10
    # a manifest written before manifests listed their clips: one line naming it, nothing stored
    manifest_file = tmp_path / "shards" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for key in ("clip_file", "clip_file_sha256", "split", "classes", "devices", "multi_label"):
        del manifest[key]
    manifest_file.write_text(json.dumps(manifest))
    old = run_cli(*tau_run(tmp_path, "d"), env=env)
    assert_refused(old, f"shard manifest {manifest_file} lists no clips", tmp_path / "d")
    assert "audio file not found" in old.stderr


def test_the_clip_list_round_trips_and_a_damaged_or_missing_one_is_a_clear_error(tmp_path):
    clips = write_clips(tmp_path / "wav", count=6)
    audio = split_audio(clips, RATE, 0.5, DEVICES)
    write_shards(audio, tmp_path / "old", 4)  # no data set labels given: not listed
    with pytest.raises(UsageError, match=r"old/manifest\.json lists no clips"):
        manifest_clips(read_manifest(str(tmp_path / "old")))
    labels = SplitLabels("train", ("x", "y", "z"), tuple(DEVICES), False)
    write_shards(audio, tmp_path / "shards", 4, labels=labels)
    shards = read_manifest(str(tmp_path / "shards"))
    assert shards.labels == labels
    assert manifest_clips(shards) == clips  # every Clip field back as written
    (tmp_path / "shards" / "clips.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UsageError, match=r"clips\.jsonl\.gz is not the one .*manifest\.json"):
        manifest_clips(shards)


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a folder and counts the GET requests of its server (``server.requests``)."""

    def do_GET(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(folder: Path) -> Iterator[ThreadingHTTPServer]:
    """``folder`` over HTTP on 127.0.0.1 (``server.server_port``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CountingHandler, directory=str(folder)))
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / FETCHED).rglob("*") if p.is_file())


def test_url_streamed_shards_train_without_the_training_files_fetching_each_shard_once(
    tmp_path, monkeypatch
):
    env = shards_written(tmp_path, monkeypatch)
    with_files = run_cli(*tau_run(tmp_path, "a"), env=env)  # local shards, files there
    assert with_files.returncode == 0, with_files.stderr[-3000:]
    shards = read_manifest(str(tmp_path / "shards"))
    for path in {p for clip in manifest_clips(shards) for p in clip.segments or (clip.path,)}:
        path.unlink()
    with serving(tmp_path / "shards") as server:
        url = f"http://127.0.0.1:{server.server_port}"
        first = run_cli(*tau_run(tmp_path, "u", url), env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        fetched, first_requests = cached_files(tmp_path / "cache"), server.requests
        second = run_cli(*tau_run(tmp_path, "v", url), env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        second_requests = server.requests - first_requests
    # the first run fetched the shards its position reads needed, once, into the cache; the
    # second run streamed the same epochs (the same requests) and fetched nothing
    names = [p.name for p in fetched if p.name != ".done"]
    assert names and set(names) <= set(shards.names) and len(set(names)) == len(names)
    for path in fetched:
        if path.name != ".done":
            assert path.read_bytes() == (tmp_path / "shards" / path.name).read_bytes()
    assert first_requests - second_requests == len(names)
    assert cached_files(tmp_path / "cache") == fetched
    notes = [line for line in first.stderr.splitlines() if "fetching the shards of" in line]
    assert len(notes) == 1 and str(tmp_path / "cache" / FETCHED) in notes[0]
    assert "fetching the shards of" not in second.stderr
    metrics = [json.loads((finished(tmp_path / d) / "metrics.json").read_text()) for d in "auv"]
    assert metrics[0] == metrics[1] == metrics[2]  # the same clips as from the local shards
    records = [json.loads((finished(tmp_path / d) / "record.json").read_text()) for d in "uv"]
    assert [r["environment"]["train_split"] for r in records] == ["shards manifest"] * 2
    events = (finished(tmp_path / "u") / "metrics.jsonl").read_text().splitlines()
    assert sum('"health"' in line for line in events) == 2  # probed after every epoch


def test_a_fetched_shard_with_wrong_bytes_is_a_one_line_error_and_is_not_cached(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    clips = write_clips(tmp_path / "wav", count=11)
    write_shards(split_audio(clips, RATE, 0.5, DEVICES), tmp_path / "shards", 4)
    served = tmp_path / "served"
    shutil.copytree(tmp_path / "shards", served)
    damaged = bytearray((served / "shard-000001.tar").read_bytes())
    damaged[2000] ^= 0xFF  # the same size, other bytes
    (served / "shard-000001.tar").write_bytes(bytes(damaged))
    short = (served / "shard-000002.tar").read_bytes()[:-512]
    (served / "shard-000002.tar").write_bytes(short)
    local = ShardWaves(read_manifest(str(tmp_path / "shards")))
    with serving(served) as server:
        url = f"http://127.0.0.1:{server.server_port}"
        waves = ShardWaves(read_manifest(str(tmp_path / "shards"), url))
        assert np.array_equal(waves.read(1), local.read(1))  # shard 0: fetched and read
        kept = cached_files(tmp_path / "cache")
        assert [p.name for p in kept] == [".done", "shard-000000.tar"]
        for clip, why in ((5, "its sha256 differs"), (9, f"fetched {len(short)} bytes")):
            with pytest.raises(DataError) as caught:
                waves.read(clip)
            message = str(caught.value)
            name = f"shard-00000{clip // 4}.tar"
            assert message.startswith(f"shard {url}/{name} does not match") and why in message
            assert "\n" not in message
            assert cached_files(tmp_path / "cache") == kept  # nothing of it left in the cache
        gone = ShardWaves(read_manifest(str(tmp_path / "shards"), f"{url}/gone"))
        with pytest.raises(DataError, match=rf"^shard {url}/gone/shard-000001\.tar cannot be"):
            gone.read(5)  # not cached: fetched, and not found
    assert cached_files(tmp_path / "cache") == kept
    base = f"pipe:cat {tmp_path / 'shards'}/{{name}}"  # opened as the training stream opens it
    piped = ShardWaves(read_manifest(str(tmp_path / "shards"), base))
    assert np.array_equal(piped.read(5), local.read(5))
    assert np.array_equal(piped.read(1), local.read(1))  # the same cache entry as over http
    assert len(cached_files(tmp_path / "cache")) == 4
