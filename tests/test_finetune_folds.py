"""ESC-50's 5-fold cross-validation inside the ``finetune`` protocol, on a tiny generated
ESC-50-layout set: the folds partition the data, the mean is the folds' mean, and every fold
starts from the same weights."""

from __future__ import annotations

import copy
import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.data.loader import ClipAudio, ConcatWaves, TensorWaves, load_clips, split_audio
from harness.util.errors import UsageError
from harness.util.faults import KILL_ENV
from harness_plugins.datasets.esc50 import Esc50
from harness_plugins.protocols.finetune import Finetune, fold_metrics
from tests.conftest import TOY_PLUGIN, run_cli
from tests.test_linear_finetune import SAMPLE_RATE, SmallBackbone, audio_context

TONES = {0: 300.0, 1: 1000.0, 2: 2500.0}
PER_FOLD = 2  # clips per class and fold


def esc50_tones(root: Path) -> Path:
    """ESC-50's layout with 3 tone classes x 5 folds x 2 clips (0.25 s at 8 kHz)."""
    rng = np.random.default_rng(0)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    t = np.arange(SAMPLE_RATE // 4) / SAMPLE_RATE
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    for target, freq in TONES.items():
        for fold in range(1, 6):
            for take in "AB"[:PER_FOLD]:
                name = f"{fold}-{target}{take}-{take}-{target}.wav"
                wave = np.sin(2 * np.pi * freq * (1 + 0.02 * rng.standard_normal()) * t)
                wave = 0.5 * wave + 0.3 * rng.standard_normal(len(t))
                sf.write(root / "audio" / name, wave.astype(np.float32), SAMPLE_RATE)
                rows.append(f"{name},{fold},{target},tone{target},False,{target}{take},{take}")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory) -> Path:
    return esc50_tones(tmp_path_factory.mktemp("esc") / "ESC-50")


class Recorder:
    """Wraps a context's trainer and inference: the clips each fold trains and scores on, and
    the classifier's weights when each training starts and ends."""

    def __init__(self, ctx) -> None:
        self.train_clips: list[set[Path]] = []
        self.eval_clips: list[set[Path]] = []
        self.start_weights: list[dict[str, torch.Tensor]] = []
        self.end_weights: list[dict[str, torch.Tensor]] = []
        fit, infer = ctx.train, ctx.infer

        def recording_fit(spec):
            self.train_clips.append({clip.path for clip in spec.data.clips})
            self.start_weights.append(copy.deepcopy(spec.model.state_dict()))
            result = fit(spec)
            self.end_weights.append(copy.deepcopy(spec.model.state_dict()))
            return result

        def recording_infer(forward, data, frontend=None):
            self.eval_clips.append({clip.path for clip in data.clips})
            return infer(forward, data, frontend)

        ctx.train, ctx.infer = recording_fit, recording_infer


def esc50_context(root: Path, fold: int = 1, seed: int = 0, lazy: bool = False):
    splits = Esc50(Esc50.Config(root=root, fold=fold, clip_seconds=0.25)).load()
    read = split_audio if lazy else load_clips
    train = read(splits.train, SAMPLE_RATE, 0.25, [])
    evaluation = read(splits.eval, SAMPLE_RATE, 0.25, [])
    torch.manual_seed(0)
    ctx = audio_context(train, evaluation, SmallBackbone(), seed=seed)
    ctx.splits = splits
    ctx.task.classes = splits.classes
    return ctx


def finetune(folds: str = "all", **options) -> Finetune:
    return Finetune(Finetune.Config(epochs=2, batch_size=8, lr=3e-3, folds=folds, **options))


def test_folds_partition_the_data_and_every_clip_is_scored_once(esc50_root):
    ctx = esc50_context(esc50_root)
    every_clip = {clip.path for clip in (*ctx.splits.train, *ctx.splits.eval)}
    recorder = Recorder(ctx)
    finetune().evaluate(ctx)
    assert len(recorder.train_clips) == len(recorder.eval_clips) == 5
    for train, scored in zip(recorder.train_clips, recorder.eval_clips, strict=True):
        assert not train & scored
        assert train | scored == every_clip
        assert len(scored) == len(TONES) * PER_FOLD
    counts: dict[Path, int] = {}
    for scored in recorder.eval_clips:
        for path in scored:
            counts[path] = counts.get(path, 0) + 1
    assert set(counts) == every_clip and set(counts.values()) == {1}
    # fold k scores exactly the clips the CSV puts in fold k
    for k, scored in enumerate(recorder.eval_clips, start=1):
        assert {p.name.split("-")[0] for p in scored} == {str(k)}


def test_mean_and_std_are_those_of_the_fold_accuracies(esc50_root):
    ctx = esc50_context(esc50_root)
    result = finetune().evaluate(ctx)
    metrics = result.metrics
    folds = [metrics[f"acc/fold{k}"] for k in range(1, 6)]
    assert metrics["acc"] == pytest.approx(np.mean(folds), abs=1e-12)
    assert metrics["acc/std"] == pytest.approx(np.std(folds, ddof=1), abs=1e-12)
    assert metrics["folds"] == 5
    # each fold's accuracy is a share of its 6 clips
    for acc in folds:
        assert round(acc * 6 / 100) == pytest.approx(acc * 6 / 100)
    assert result.table.count("\n") == 6  # header, rule, five folds
    assert "| fold |" in result.table.splitlines()[0]


def test_every_fold_starts_from_the_same_weights(esc50_root):
    ctx = esc50_context(esc50_root)
    before = copy.deepcopy(ctx.backbone.state_dict())
    recorder = Recorder(ctx)
    finetune().evaluate(ctx)
    first = recorder.start_weights[0]
    for start in recorder.start_weights[1:]:
        assert start.keys() == first.keys()
        assert all(torch.equal(start[k], first[k]) for k in first)
    # fine-tuning moved the weights, so a fold started from its predecessor's end would differ
    moved = recorder.end_weights[0]
    assert any(not torch.equal(moved[k], first[k]) for k in first)
    # and the run's own backbone is untouched
    after = ctx.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_one_fold_equals_that_fold_of_the_full_cross_validation(esc50_root):
    full = finetune().evaluate(esc50_context(esc50_root)).metrics
    # dataset.fold does not matter: the protocol picks its folds from the whole set
    one = finetune("3").evaluate(esc50_context(esc50_root, fold=5)).metrics
    assert one["acc"] == full["acc/fold3"]
    assert one["acc/fold3"] == full["acc/fold3"]
    assert "acc/std" not in one and one["folds"] == 1


def test_lazy_and_in_memory_audio_give_the_same_folds(esc50_root):
    in_memory = finetune("2").evaluate(esc50_context(esc50_root)).metrics
    lazy = finetune("2").evaluate(esc50_context(esc50_root, lazy=True)).metrics
    assert lazy["acc"] == in_memory["acc"]
    assert lazy["train_loss"] == pytest.approx(in_memory["train_loss"], rel=1e-5)


def test_bad_folds_are_one_line_errors(esc50_root):
    ctx = esc50_context(esc50_root)
    with pytest.raises(UsageError, match=r"folds='7' is not a fold of the data \(1, 2, 3, 4, 5\)"):
        finetune("7").check(ctx.splits, None)
    ctx.splits.fold_key = ""
    with pytest.raises(UsageError, match="folds='1', but the data set publishes no folds"):
        finetune("1").check(ctx.splits, None)
    with pytest.raises(ValueError, match="folds must be"):
        finetune(" ")


def test_fold_metrics_by_hand():
    per_fold = {
        "1": {"acc": 50.0, "train_loss": 1.0, "tp_m": 2.0},
        "2": {"acc": 100.0, "train_loss": 0.5, "tp_m": 2.0},
        "3": {"acc": 75.0, "train_loss": 0.0, "tp_m": 2.0},
    }
    metrics = fold_metrics(per_fold)
    assert metrics["acc"] == 75.0
    assert metrics["acc/std"] == pytest.approx(25.0)  # sqrt((625 + 625 + 0) / 2)
    assert metrics["train_loss"] == 0.5 and metrics["tp_m"] == 2.0
    assert {k for k in metrics if "/" in k} == {"acc/fold1", "acc/fold2", "acc/fold3", "acc/std"}


def test_join_reads_both_sources_in_order():
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    b = -torch.arange(8, dtype=torch.float32).reshape(2, 4)
    joined = ConcatWaves([TensorWaves(a), TensorWaves(b)])
    assert len(joined) == 5
    assert np.array_equal(np.stack([joined.read(i) for i in range(5)]), torch.cat([a, b]).numpy())
    assert np.array_equal(joined[[4, 0]].read(0), b[1].numpy())
    with pytest.raises(UsageError, match="different lengths"):
        ConcatWaves([TensorWaves(a), TensorWaves(torch.zeros(1, 3))])
    clips = [Path(f"/x/{i}") for i in range(5)]

    def audio(wave, paths):
        from harness.api import Clip

        n = len(paths)
        return ClipAudio([Clip(p, 0) for p in paths], wave, torch.zeros(n, dtype=torch.long),
                         torch.full((n,), -1), SAMPLE_RATE)  # fmt: skip

    both = audio(a, clips[:3]).join(audio(TensorWaves(b), clips[3:]))
    assert [c.path for c in both.clips] == clips
    assert np.array_equal(both.materialize().numpy(), torch.cat([a, b]).numpy())
    assert math.isclose(float(both.labels.sum()), 0)


def cli_args(esc50_root: Path, out: Path) -> list[str]:
    return [
        "--plugin", str(TOY_PLUGIN), "run", "--backbone", "toy", "--dataset", "esc50",
        "--method", "ce", "--aug", "none", "--epochs", "1", "--batch-size", "8",
        "--protocol", "finetune",
        "--set", f"dataset.root={esc50_root}", "--set", "dataset.clip_seconds=0.25",
        "--set", "protocol.finetune.epochs=1", "--set", "protocol.finetune.batch_size=8",
        "--out", str(out / "runs"), "--store", str(out / "runs.sqlite"),
    ]  # fmt: skip


def stored_metrics(out: Path) -> dict[str, float]:
    (metrics_file,) = (out / "runs").glob("*/metrics.json")
    return json.loads(metrics_file.read_text())


def test_cross_validation_from_the_command_line(esc50_root, tmp_path):
    args = cli_args(esc50_root, tmp_path)
    bad = run_cli(*args, "--set", "protocol.finetune.folds=9")
    assert bad.returncode == 2
    assert "folds='9' is not a fold of the data (1, 2, 3, 4, 5)" in bad.stderr
    assert not list((tmp_path / "runs").glob("*/metrics.json"))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    metrics = stored_metrics(tmp_path)
    folds = [metrics[f"finetune/acc/fold{k}"] for k in range(1, 6)]
    assert metrics["finetune/acc"] == pytest.approx(np.mean(folds))
    assert metrics["finetune/acc/std"] == pytest.approx(np.std(folds, ddof=1))
    # killed in fold 3, the resumed run fine-tunes folds 3-5 only, to the same metrics
    killed_out = tmp_path / "killed"
    killed = run_cli(*cli_args(esc50_root, killed_out), env={KILL_ENV: "finetune-fold3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = sorted(p.name for p in (killed_out / "runs").glob(".partial/*/protocols/*.json"))
    assert kept == ["finetune-fold1.json", "finetune-fold2.json"]
    resumed = run_cli(*cli_args(esc50_root, killed_out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "finetune-fold1 epoch" not in resumed.stderr
    assert "finetune-fold2 epoch" not in resumed.stderr
    assert "finetune-fold3 epoch 1/1" in resumed.stderr
    assert stored_metrics(killed_out) == metrics
    assert not list((killed_out / "runs").glob(".partial/*"))
