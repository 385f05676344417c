"""WebDataset shards (issue 22, item 4): written from a split, streamed as the decoded cache
reads it; each rank and worker a disjoint, equal share; resumed mid-epoch; bad shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.audio_cache import ROUNDING, CachedWaves, cached_audio
from harness.data.loader import load_clips, split_audio
from harness.data.shards import (
    ShardLoader,
    clip_range,
    read_manifest,
    verify_checksums,
    worker_batches,
    write_shards,
)
from harness.registry.config import hashed_config, merge, parse_set, resolve
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError, UsageError
from tests.conftest import run_cli
from tests.test_resume import args as resume_args
from tests.test_resume import assert_same_run, finished
from tests.test_scale import RATE, write_clips

CPU = torch.device("cpu")
DEVICES = ["a", "b"]


def write_split(tmp_path: Path, count: int = 23, per_shard: int = 4):
    clips = write_clips(tmp_path / "wav", count=count)
    audio = split_audio(clips, RATE, 0.5, DEVICES)
    manifest = write_shards(audio, tmp_path / "shards", per_shard)
    return clips, audio, manifest


def one_pass(loader: ShardLoader, seed: int | None = 0, skip: int = 0) -> list:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    batches = loader.epoch(generator, skip)
    return [(b.index.tolist(), b.wave.clone(), b.label.tolist()) for b in batches]


def test_clip_range_cuts_the_shard_sequence_at_hand_computed_places():
    counts = [4, 4, 4, 3]
    # order 2, 0, 3, 1 -> positions 0-3 shard 2, 4-7 shard 0, 8-10 shard 3, 11-14 shard 1
    assert clip_range(counts, [2, 0, 3, 1], 0, 15) == [(2, 0, 4), (0, 0, 4), (3, 0, 3), (1, 0, 4)]
    assert clip_range(counts, [2, 0, 3, 1], 3, 6) == [(2, 3, 4), (0, 0, 4), (3, 0, 1)]
    assert clip_range(counts, [2, 0, 3, 1], 9, 2) == [(3, 1, 3)]
    assert clip_range(counts, [0, 1, 2, 3], 12, 0) == []
    assert [worker_batches(7, 3, w) for w in range(3)] == [3, 2, 2]
    assert [worker_batches(2, 3, w) for w in range(3)] == [1, 1, 0]


def test_the_data_source_enters_the_config_hash_only_away_from_its_default():
    base = {"run": {"epochs": 2}}
    hashes = {
        name: resolve(merge(base, parse_set(list(sets))), load_plugins()).config_hash()
        for name, sets in {
            "default": [],
            "cache": ["run.data_source=cache", "run.shuffle_buffer=1000"],
            "shards": ["run.data_source=shards", "run.shards=/a"],
            "moved": ["run.data_source=shards", "run.shards=/b", "run.shards_url=http://h/x"],
            "buffer": ["run.data_source=shards", "run.shards=/a", "run.shuffle_buffer=10"],
        }.items()
    }
    assert hashes["default"] == hashes["cache"]  # stored runs keep their hashes
    assert hashes["shards"] == hashes["moved"]  # where the shards are is not what the run is
    assert len({hashes["default"], hashes["shards"], hashes["buffer"]}) == 3
    without = hashed_config(resolve(base, load_plugins()).as_dict())["run"]
    assert not {"data_source", "shards", "shards_url", "shuffle_buffer"} & set(without)


def test_manifest_lists_counts_sizes_and_checksums(tmp_path):
    clips, _, manifest = write_split(tmp_path)
    with tarfile.open(tmp_path / "shards" / "shard-000001.tar") as tar:
        record = json.load(tar.extractfile("0000000005.json"))
    clip = clips[5]  # every Clip field travels as JSON (labels, device, meta: whatever they are)
    expected = {"path": str(clip.path), "label": clip.label, "device": clip.device,
                "meta": {}, "segments": []}  # fmt: skip
    assert {key: record["clip"][key] for key in expected} == expected
    assert record["index"] == 5 and record["scale"] >= 1.0
    assert manifest["clips"] == 23 and [s["clips"] for s in manifest["shards"]] == [4] * 5 + [3]
    for shard in manifest["shards"]:
        assert (tmp_path / "shards" / shard["name"]).stat().st_size == shard["bytes"]
    verify_checksums(read_manifest(str(tmp_path / "shards")))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_shards_are_the_decoded_cache_clips(tmp_path, workers):
    clips, audio, _ = write_split(tmp_path)
    cached = cached_audio(audio, str(tmp_path / "cache"))
    assert isinstance(cached.wave, CachedWaves)
    direct = load_clips(clips, RATE, 0.5, DEVICES)
    loader = ShardLoader(read_manifest(str(tmp_path / "shards")), audio, 5, CPU, workers)
    seen = []
    for index, wave, labels in one_pass(loader, seed=None):  # unshuffled: in split order
        for row, i, label in zip(wave.numpy(), index, labels, strict=True):
            assert np.array_equal(row, cached.wave.read(i))  # the cache's row, bit for bit
            bound = ROUNDING * float(cached.wave.scales[i]) + 1e-7
            assert np.abs(row - direct.wave[i].numpy()).max() <= bound
            assert label == clips[i].label
            seen.append(i)
    # 4 batches of 5, the last 3 clips dropped (drop_last); each worker reads a contiguous range
    assert (sorted(seen) if workers else seen) == list(range(20))
    assert max(cached.wave.scales) > 1.0  # resampling overshoots: the scale is exercised


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (2, 3), (3, 2)])
def test_ranks_get_equal_disjoint_shares_whose_union_is_the_epoch(tmp_path, world, workers):
    _, audio, _ = write_split(tmp_path)
    shards = read_manifest(str(tmp_path / "shards"))
    batch = 6
    passes = [
        one_pass(ShardLoader(shards, audio, batch, CPU, workers, rank, world, buffer=3), 7)
        for rank in range(world)
    ]
    shares = [[i for index, _, _ in batches for i in index] for batches in passes]
    assert {len(batches) for batches in passes} == {23 // batch}  # the same batches on every rank
    assert {len(share) for share in shares} == {23 // batch * batch // world}
    union = [i for share in shares for i in share]
    assert len(set(union)) == len(union) == 23 // batch * batch  # disjoint, and the epoch
    first = ShardLoader(shards, audio, batch, CPU, workers, 0, world, buffer=3)
    again = [i for index, _, _ in one_pass(first, 8) for i in index]
    assert again != shares[0]  # another epoch draw, another order


@pytest.mark.parametrize("workers", [0, 3])
def test_a_resumed_pass_gives_the_rest_of_the_same_order(tmp_path, workers):
    _, audio, _ = write_split(tmp_path)
    shards = read_manifest(str(tmp_path / "shards"))
    loader = ShardLoader(shards, audio, 4, CPU, workers, buffer=5)
    full = one_pass(loader, seed=3)
    assert len(full) == 5
    for skip in (1, 2, 4):
        rest = one_pass(loader, seed=3, skip=skip)
        assert [b[0] for b in rest] == [b[0] for b in full[skip:]]
        assert all(torch.equal(a[1], b[1]) for a, b in zip(rest, full[skip:], strict=True))


def test_shards_stream_from_http_and_pipe_urls_as_from_the_folder(tmp_path):
    _, audio, _ = write_split(tmp_path)
    folder = tmp_path / "shards"
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = one_pass(ShardLoader(read_manifest(str(folder)), audio, 4, CPU, buffer=6), 2)
        for base in (f"http://127.0.0.1:{server.server_port}", f"pipe:cat {folder}/{{name}}"):
            shards = read_manifest(str(folder), base)
            assert not shards.local
            streamed = one_pass(ShardLoader(shards, audio, 4, CPU, buffer=6), 2)
            assert [b[0] for b in streamed] == [b[0] for b in local]
            assert all(torch.equal(a[1], b[1]) for a, b in zip(streamed, local, strict=True))
        missing = read_manifest(str(folder), f"http://127.0.0.1:{server.server_port}/gone")
        with pytest.raises(DataError, match=r"shard http://127\.0\.0\.1:\d+/gone/shard-0000"):
            one_pass(ShardLoader(missing, audio, 4, CPU), 2)
    finally:
        server.shutdown()
        server.server_close()


def test_a_short_or_corrupt_shard_fails_the_pass_naming_it(tmp_path):
    _, audio, _ = write_split(tmp_path)
    folder = tmp_path / "shards"
    name = folder / "shard-000002.tar"
    data = name.read_bytes()
    # same size, corrupt: a flipped sample byte (CRC-32), a damaged tar header (tarfile)
    for start, message in ((3000, "fails its CRC-32 check"), (1024, "(unreadable|lacks npy)")):
        name.write_bytes(data[:start] + bytes(b ^ 0xFF for b in data[start : start + 2])
                         + data[start + 2 :])  # fmt: skip
        loader = ShardLoader(read_manifest(str(folder)), audio, 4, CPU)
        with pytest.raises(DataError, match=rf"shard .*shard-000002\.tar is corrupt.*{message}"):
            one_pass(loader, seed=None)
    # truncated at a clip boundary, the manifest rewritten to its new size: still caught
    manifest = json.loads((folder / "manifest.json").read_text())
    name.write_bytes(data[: len(data) // 2])
    manifest["shards"][2]["bytes"] = name.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loader = ShardLoader(read_manifest(str(folder)), audio, 4, CPU)
    with pytest.raises(DataError, match=r"shard-000002\.tar is (truncated|corrupt)"):
        one_pass(loader, seed=None)


def test_parts_written_separately_give_the_shards_of_one_write(tmp_path):
    _, audio, whole = write_split(tmp_path)  # 23 clips, 4 per shard: 6 shards
    folder = tmp_path / "parts"
    assert write_shards(audio, folder, 4, part=(2, 3)) is None  # shards 2 and 5
    assert write_shards(audio, folder, 4, part=(0, 3)) is None  # shards 0 and 3
    assert sorted(p.name for p in folder.glob("*.tar")) == [
        "shard-000000.tar", "shard-000002.tar", "shard-000003.tar", "shard-000005.tar"
    ]  # fmt: skip
    assert not (folder / "manifest.json").exists()  # part 2 missing: no manifest to read
    assert write_shards(audio, folder, 4, part=(1, 3)) == whole  # the last part completes it
    for shard in whole["shards"]:  # the same bytes (fixed mtime, same rows)
        name = shard["name"]
        assert (folder / name).read_bytes() == (tmp_path / "shards" / name).read_bytes()
    with pytest.raises(UsageError, match="already holds these shards"):
        write_shards(audio, folder, 4, part=(1, 3))
    with pytest.raises(UsageError, match="bad value for --part: 4/3"):
        write_shards(audio, tmp_path / "other", 4, part=(3, 3))


def test_a_manifest_that_does_not_match_its_shards_is_refused(tmp_path):
    write_split(tmp_path)
    folder = tmp_path / "shards"
    (folder / "shard-000001.tar").write_bytes((folder / "shard-000001.tar").read_bytes()[:-512])
    with pytest.raises(UsageError, match=r"does not match its shards: .*shard-000001\.tar has"):
        read_manifest(str(folder))
    (folder / "shard-000001.tar").unlink()
    with pytest.raises(UsageError, match=r"shard-000001\.tar is missing"):
        read_manifest(str(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clips"] = 24
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=r"24 clips listed, 23 in its 6 shards"):
        read_manifest(str(folder))
    with pytest.raises(UsageError, match="cannot be read"):
        read_manifest(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="already holds these shards"):
        write_split(tmp_path)
    (folder / "manifest.json").unlink()
    with pytest.raises(UsageError, match="exists and is not empty"):
        write_split(tmp_path)


# -- end to end: the command line ---------------------------------------------------------------


def shard_args(tmp_path: Path, out: str, *extra: str) -> list[str]:
    return resume_args(
        tmp_path, out, "--set", "dataset.per_class=24", "--set", "run.data_source=shards",
        "--set", f"run.shards={tmp_path / 'shards'}", *extra,
    )  # fmt: skip


def write_toy_shards(tmp_path: Path, env: dict | None = None) -> None:
    (tmp_path / "tones").mkdir(exist_ok=True)
    written = run_cli(
        "--plugin", str(Path(__file__).parent / "toy_plugin.py"), "shards", "write",
        str(tmp_path / "shards"), "--dataset", "toy-tones", "--backbone", "toy",
        "--set", f"dataset.root={tmp_path / 'tones'}", "--set", "dataset.per_class=24",
        "--clips-per-shard", "5", env=env,
    )  # fmt: skip
    if env:
        assert written.returncode == -signal.SIGKILL, written.stderr
        return
    assert written.returncode == 0, written.stderr
    assert "wrote 36 clips in 8 shards" in written.stdout


def assert_refused(result, message: str, out: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists() or not any(p.name.endswith(".sqlite") for p in out.iterdir())


def test_bad_shard_settings_are_one_line_errors_and_store_nothing(tmp_path):
    write_toy_shards(tmp_path, env={"HARNESS_TEST_KILL_AT": "train shards"})  # killed writing
    assert not (tmp_path / "shards").exists()
    assert [p.name.startswith(".shards.") for p in tmp_path.iterdir()].count(True) == 1
    write_toy_shards(tmp_path)  # the killed write's temporary folder is removed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shards.")]
    out = tmp_path / "x"
    missing = run_cli(*resume_args(tmp_path, "x", "--set", "run.data_source=shards"))
    assert_refused(missing, "run.data_source=shards needs run.shards", out)
    other = run_cli(*shard_args(tmp_path, "x", "--set", "dataset.per_class=20"))
    assert_refused(other, "were written from another clip list", out)
    shard = tmp_path / "shards" / "shard-000003.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    truncated = run_cli(*shard_args(tmp_path, "x"))
    assert_refused(truncated, "does not match its shards", out)
    check = run_cli("shards", "check", str(tmp_path / "shards"))
    assert check.returncode == 2 and "shard-000003.tar has" in check.stderr


def test_raw_data_source_decodes_the_files_as_the_cache_off_setting_does(tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache)}
    raw = run_cli(*resume_args(tmp_path, "raw", "--set", "run.data_source=raw"), env=env)
    assert raw.returncode == 0, raw.stderr
    assert not (cache / "audio").exists() or not list((cache / "audio").iterdir())  # no cache
    off = run_cli(*resume_args(tmp_path, "off", "--set", "run.audio_cache=off"), env=env)
    assert off.returncode == 0, off.stderr
    runs = [finished(tmp_path / name) for name in ("raw", "off")]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_sigkilled_shard_run_resumes_bit_for_bit(tmp_path):
    write_toy_shards(tmp_path)
    extra = ("--set", "run.workers=3", "--set", "run.checkpoint_every_steps=1",
             "--set", "run.shuffle_buffer=7")  # fmt: skip
    reference = run_cli(*shard_args(tmp_path, "a", *extra))
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(
        *shard_args(tmp_path, "b", *extra), env={"HARNESS_TEST_KILL_AT": "checkpoint 1:1:2"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    listed = run_cli("runs", "--partial", "--out", str(tmp_path / "b"))
    assert "epoch 1/3 + 2 batches" in listed.stdout, listed.stdout
    resumed = run_cli(*shard_args(tmp_path, "b", *extra), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(finished(tmp_path / "a"), finished(tmp_path / "b"))
    cache = run_cli(*resume_args(tmp_path, "c", "--set", "dataset.per_class=24"))
    assert cache.returncode == 0, cache.stderr  # the cache path: another order, its own metrics
    a, c = (json.loads((finished(tmp_path / d) / "metrics.json").read_text()) for d in "ac")
    assert a != c


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from harness.data.loader import ClipAudio
from harness.data.shards import ShardLoader, read_manifest
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
shards = read_manifest(sys.argv[1])
labels = torch.zeros(shards.clips, dtype=torch.long)
audio = ClipAudio([], torch.zeros(shards.clips, 1), labels, labels, 16000)
loader = ShardLoader(shards, audio, 6, torch.device("cpu"), 2, rank, world)
seen = [b.index.tolist() for b in loader.epoch(torch.Generator().manual_seed(5))]
count = torch.tensor([len(seen)])
dist.all_reduce(count, op=dist.ReduceOp.MAX)
assert count.item() == len(seen)
json.dump(seen, open(f"{sys.argv[2]}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_split_the_epoch(tmp_path):
    write_split(tmp_path)
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path / "shards"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    batches = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(batches[0]) == len(batches[1]) == 23 // 6
    assert all(len(b) == 3 for rank in batches for b in rank)
    shares = [{i for b in rank for i in b} for rank in batches]
    assert not shares[0] & shares[1]
    assert len(shares[0] | shares[1]) == 23 // 6 * 6


@pytest.mark.slow
def test_two_gloo_run_processes_train_from_shards(tmp_path):
    write_toy_shards(tmp_path)
    two = run_cli(*shard_args(tmp_path, "two", "--device", "cpu", "--nproc", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    log = (finished(tmp_path / "two") / "log.txt").read_text()
    assert log.count("epoch ") >= 3
