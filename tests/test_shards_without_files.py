"""A shards run reads its training split only from the shards (issue 22): preflight, the
health probe's batch and the protocols' reads of the training split come from the shards,
never from the clips' audio files; the eval split comes from the decoded-audio cache."""

from __future__ import annotations

import json

import numpy as np
import torch

from harness.data.loader import split_audio
from harness.data.shards import ShardWaves, read_manifest, write_shards
from tests.conftest import run_cli
from tests.test_resume import finished
from tests.test_scale import RATE, write_clips
from tests.test_shards import DEVICES, shard_args, write_toy_shards
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
