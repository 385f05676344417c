"""Multi-label data (AudioSet): the scores, the published-layout reader, the label-kind
checks at start-up and fine-tuning on the embedded multi-label benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from harness.api import Clip, DataError, DataSplits, EvalContext, Task, UsageError, multi_hot
from harness.cli.sweep import plan
from harness.data.loader import ClipAudio, load_clips
from harness.engine.trainer import standalone_services
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables, grouped_runs
from harness.results.store import RunRecord
from harness.run.components import check_label_kinds
from harness_plugins.datasets._audioset_layout import read_segments, ytid_keys
from harness_plugins.datasets.audioset import AudioSet
from harness_plugins.datasets.audioset_embedded import AudioSetEmbedded
from harness_plugins.methods.ce import CrossEntropy
from harness_plugins.methods.mae import MaskedAutoencoder as MAE
from harness_plugins.protocols._multilabel import multi_label_scores, prior_scores
from harness_plugins.protocols.finetune import RECIPES, BestEpoch, Finetune, hold_out
from harness_plugins.protocols.linear import Linear
from tests.conftest import run_cli
from tests.test_linear_finetune import SAMPLE_RATE, SmallBackbone

# -- scores -------------------------------------------------------------------

# 5 clips, 4 classes; class 3 has no positive clip, class 2 is positive everywhere but once.
TARGETS = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]])
SCORES = np.array(
    [
        [0.9, 0.2, 0.6, 0.1],
        [0.3, 0.8, 0.4, 0.3],
        [0.6, 0.1, 0.7, 0.2],
        [0.7, 0.4, 0.9, 0.5],
        [0.1, 0.5, 0.8, 0.4],
    ]
)


def test_scores_equal_sklearn_and_hand_computed_values():
    scores = multi_label_scores(SCORES, TARGETS)
    # by hand: class 0 ranks 0.9(+), 0.7(-), 0.6(+): AP = (1/1 + 2/3) / 2 = 5/6;
    # class 1 ranks 0.8(+), 0.5(+), 0.4(-), 0.2(-), 0.1(+): AP = (1 + 1 + 3/5) / 3 = 13/15;
    # class 2 ranks 0.9(+) 0.8(+) 0.7(-) 0.6(+) 0.4(+): AP = (1 + 1 + 3/4 + 4/5) / 4
    hand = [5 / 6, 13 / 15, (1 + 1 + 3 / 4 + 4 / 5) / 4]
    assert scores.mean_ap == pytest.approx(np.mean(hand), abs=1e-12)
    assert scores.classes_scored == 3  # class 3 (no positives) is left out
    with_positives = [0, 1, 2]
    sklearn_map = average_precision_score(
        TARGETS[:, with_positives], SCORES[:, with_positives], average="macro"
    )
    assert scores.mean_ap == pytest.approx(sklearn_map, abs=1e-12)
    # AUC by hand: class 0: positives {0.9, 0.6} vs negatives {0.3, 0.7, 0.1}: 5 of 6 pairs
    # class 1: {0.8, 0.1, 0.5} vs {0.2, 0.4}: 4 of 6; class 2: {0.6, 0.4, 0.9, 0.8} vs {0.7}: 2/4
    hand_auc = [5 / 6, 4 / 6, 2 / 4]
    assert scores.mean_auc == pytest.approx(np.mean(hand_auc), abs=1e-12)
    sklearn_auc = roc_auc_score(TARGETS[:, with_positives], SCORES[:, with_positives])
    assert scores.mean_auc == pytest.approx(sklearn_auc, abs=1e-12)
    assert scores.d_prime == pytest.approx(math.sqrt(2) * norm.ppf(np.mean(hand_auc)), abs=1e-12)


def test_d_prime_is_zero_at_chance_and_perfect_scores_give_map_one():
    assert multi_label_scores(TARGETS.astype(float), TARGETS).mean_ap == 1.0
    rng = np.random.default_rng(0)
    targets = rng.random((4000, 3)) < 0.3
    chance = multi_label_scores(rng.random((4000, 3)), targets)
    assert abs(chance.d_prime) < 0.1 and abs(chance.mean_auc - 0.5) < 0.03


def test_prior_baseline_map_is_the_class_prevalence():
    prior = prior_scores(TARGETS, len(TARGETS))
    scores = multi_label_scores(prior, TARGETS)
    # constant scores rank every clip equal: AP = prevalence (sklearn's step interpolation)
    assert scores.mean_ap == pytest.approx(np.mean([2 / 5, 3 / 5, 4 / 5]))
    assert scores.mean_auc == 0.5


def test_scores_refuse_bad_shapes_and_no_positives():
    with pytest.raises(UsageError, match="differ in shape"):
        multi_label_scores(SCORES[:, :3], TARGETS)
    with pytest.raises(UsageError, match="no class has a positive clip"):
        multi_label_scores(SCORES, np.zeros_like(TARGETS))


# -- the published layout -----------------------------------------------------

CLASS_INDEX = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/0ytgt,"Child speech, kid speaking"
"""

SEGMENTS = """# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=4, num_segs=4, num_unique_labels=3, num_positive_labels=6
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"
-0RWZT-miFs, 420.000, 430.000, "/m/0ytgt"
a_b-c_d-e_f, 0.000, 10.000, "/m/09x0r,/m/05zppz,/m/0ytgt"
zzzzzzzzzzz, 10.000, 20.000, "/m/09x0r"
"""


def write_wav(path: Path, seconds: float = 0.5, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)
    return path


def published_layout(root: Path, segments: str = SEGMENTS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_labels_indices.csv").write_text(CLASS_INDEX)
    (root / "balanced_train_segments.csv").write_text(segments)
    (root / "eval_segments.csv").write_text(segments)
    write_wav(root / "audio" / "bal" / "Y--PJHxphWEs.wav")  # PANNs' naming
    write_wav(root / "audio" / "-0RWZT-miFs_420.000.wav")  # <ytid>_<start>
    write_wav(root / "audio" / "x" / "a_b-c_d-e_f.flac")  # <ytid>
    return root  # zzzzzzzzzzz has no audio, as on every mirror


def load(**options) -> DataSplits:
    return AudioSet(AudioSet.Config(**options)).load()


def test_segment_csv_comments_and_quoted_label_lists(tmp_path):
    root = published_layout(tmp_path / "as")
    rows = read_segments(root / "balanced_train_segments.csv", "audioset")
    assert [line for line, _ in rows] == [4, 5, 6, 7]
    assert rows[0][1].ytid == "--PJHxphWEs" and rows[0][1].mids == ("/m/09x0r", "/m/05zppz")
    assert rows[1][1].start == 420.0 and rows[1][1].end == 430.0
    assert rows[2][1].mids == ("/m/09x0r", "/m/05zppz", "/m/0ytgt")


def test_audioset_reads_the_published_layout(tmp_path, capsys):
    splits = load(root=published_layout(tmp_path / "as"), max_missing=0.3)
    assert splits.multi_label
    assert splits.classes == ["Speech", "Male speech, man speaking", "Child speech, kid speaking"]
    assert [c.meta["ytid"] for c in splits.train] == ["--PJHxphWEs", "-0RWZT-miFs", "a_b-c_d-e_f"]
    assert [c.labels for c in splits.train] == [(0, 1), (2,), (0, 1, 2)]
    assert all(c.label == -1 for c in splits.train)
    assert splits.train[0].path.name == "Y--PJHxphWEs.wav"
    err = capsys.readouterr().err
    assert "balanced_train_segments.csv: 1 of 4 listed clips (25.0%) have no audio file" in err
    assert multi_hot(splits.train, 3).tolist() == [[1, 1, 0], [0, 0, 1], [1, 1, 1]]


def test_missing_audio_above_the_threshold_is_an_error(tmp_path):
    root = published_layout(tmp_path / "as")
    with pytest.raises(DataError, match=r"1 of 4 listed clips .* more than dataset.max_missing"):
        load(root=root, max_missing=0.2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('--PJHxphWEs, 30.000, "/m/09x0r"', r"line 4: 3 fields, expected 4"),
        ('--PJHxphWEs, thirty, 40.000, "/m/09x0r"', r"line 4: times 'thirty'"),
        ("--PJHxphWEs, 30.000, 40.000, ", r"line 4: no positive_labels"),
        ('--PJHxphWEs, 30.000, 40.000, "/m/nope"', r"line 4: label id '/m/nope' is not in"),
    ],
)
def test_malformed_segment_rows_name_file_and_line(tmp_path, row, message):
    header = "\n".join(SEGMENTS.splitlines()[:3])
    root = published_layout(tmp_path / "as", f"{header}\n{row}\n")
    with pytest.raises(DataError, match=rf"balanced_train_segments.csv: {message}"):
        load(root=root)


def test_audiomae_json_with_labels(tmp_path):
    root = published_layout(tmp_path / "as")
    write_wav(root / "wavs" / "one.wav")
    data = {"data": [{"wav": "wavs/one.wav", "labels": "/m/0ytgt,/m/09x0r"}]}
    (root / "train.json").write_text(json.dumps(data))
    splits = load(root=root, train_list="train.json", max_missing=0.3)
    assert [c.labels for c in splits.train] == [(0, 2)]
    (root / "train.json").write_text(json.dumps({"data": [{"wav": "wavs/one.wav"}]}))
    with pytest.raises(DataError, match=r"data\[0\] needs the fields 'wav' and 'labels'"):
        load(root=root, train_list="train.json", max_missing=0.3)


def test_ytid_keys_of_downloaded_file_names():
    assert "--PJHxphWEs" in ytid_keys("Y--PJHxphWEs")
    assert "--PJHxphWEs" in ytid_keys("--PJHxphWEs_30000")
    assert ytid_keys("Yabcdefghij") == ["Yabcdefghij", "Yabcdefghij"]  # an id starting with Y


def test_embedded_benchmark_is_in_the_published_layout_with_overlapping_events():
    data = AudioSetEmbedded(AudioSetEmbedded.Config(train_clips=20, eval_clips=10, seconds=0.5))
    splits = data.load()
    root = splits.root
    assert (root / "class_labels_indices.csv").read_text().startswith("index,mid,display_name\n")
    lines = (root / "balanced_train_segments.csv").read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines) == 3 + 20
    assert len(splits.train) == 18 and len(splits.eval) == 10  # 2 listed without audio
    assert max(len(c.labels) for c in splits.train) > 1
    assert splits.multi_label and len(splits.classes) == 10


# -- label kinds at start-up ---------------------------------------------------


def splits_of(multi: bool) -> DataSplits:
    clip = Clip(Path("x.wav"), label=-1 if multi else 0, labels=(0, 1) if multi else ())
    return DataSplits(["a", "b"], [clip], [clip], clip_seconds=1.0, multi_label=multi)


def test_label_kinds_are_checked_before_training():
    mae, ce = MAE(MAE.Config()), CrossEntropy(CrossEntropy.Config())
    finetune, linear = Finetune(Finetune.Config()), Linear(Linear.Config())
    check_label_kinds("audioset", splits_of(True), mae, [finetune])
    check_label_kinds("esc50", splits_of(False), ce, [finetune, linear])
    with pytest.raises(UsageError, match="'audioset' is multi-label, but protocol 'linear'"):
        check_label_kinds("audioset", splits_of(True), mae, [linear])
    with pytest.raises(UsageError, match="'audioset' is multi-label .* method 'ce'"):
        check_label_kinds("audioset", splits_of(True), ce, [finetune])

    class MultiOnly(Linear):
        name = "multi-only"
        label_kind = "multi"

    with pytest.raises(UsageError, match="'esc50' is single-label, but protocol 'multi-only'"):
        check_label_kinds("esc50", splits_of(False), ce, [MultiOnly(Linear.Config())])


def test_cli_refuses_a_multi_label_set_for_a_single_label_protocol(tmp_path):
    store = tmp_path / "store.sqlite"
    result = run_cli(
        "run", "--backbone", "audiomae", "--method", "mae", "--dataset", "audioset-embedded",
        "--protocol", "linear", "--set", "dataset.train_clips=10", "--set",
        "dataset.eval_clips=5", "--set", "dataset.missing=0", "--out", str(tmp_path / "runs"),
        "--store", str(store), env={"HARNESS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "is multi-label, but protocol 'linear' evaluates single-label data" in last
    assert not store.exists() and not list((tmp_path / "runs").glob("2*"))


# -- fine-tuning ----------------------------------------------------------------


def test_recipes_fill_unset_options_and_explicit_values_win():
    cfg = Finetune.Config(recipe="audioset-20k", epochs=2)
    assert cfg.epochs == 2 and cfg.batch_size == 32 and cfg.lr == 1e-3 * 32 / 256
    assert (cfg.mixup, cfg.freqm, cfg.timem) == (0.5, 48, 192)
    default = Finetune.Config()
    assert (default.epochs, default.batch_size, default.lr) == (3, 16, 5e-4)  # as before
    assert set(RECIPES) == {"small", "audioset-20k", "audioset-2m", "esc50", "scv2", "voxceleb1"}
    with pytest.raises(ValueError, match="unknown recipe"):
        Finetune.Config(recipe="nope")


def embedded_context(seed: int = 0) -> EvalContext:
    data = AudioSetEmbedded(
        AudioSetEmbedded.Config(
            classes=6, train_clips=96, eval_clips=48, max_events=2, seconds=0.5, missing=0
        )
    )
    splits = data.load()
    audio = {}
    for split in ("train", "eval"):
        clips = splits.split(split)
        loaded = load_clips(clips, SAMPLE_RATE, splits.clip_seconds, [])
        loaded.targets = multi_hot(clips, len(splits.classes))
        audio[split] = loaded
    return context_on(splits, audio, seed)


def context_on(splits: DataSplits, audio: dict[str, ClipAudio], seed: int = 0) -> EvalContext:
    """A protocol's context on a small backbone over ``audio`` (split -> loaded clips)."""
    return EvalContext(
        backbone=SmallBackbone(),
        method=None,
        task=Task(splits.classes, [], SAMPLE_RATE),
        splits=splits,
        torch_device=torch.device("cpu"),
        batch_size=16,
        seed=seed,
        audio=audio.__getitem__,
        predict=None,
        embed=None,
        **standalone_services(torch.device("cpu"), 16),
    )


def test_finetune_on_the_embedded_multi_label_set_beats_the_prior_baseline():
    torch.manual_seed(0)
    ctx = embedded_context()
    protocol = Finetune(Finetune.Config(epochs=8, lr=3e-3, mixup=0.5, freqm=4, timem=2))
    protocol.check(ctx.splits, None)
    metrics = protocol.evaluate(ctx).metrics
    assert metrics["map"] > metrics["prior_map"] + 20, metrics
    assert metrics["mauc"] > 75 and metrics["dprime"] > 0.9
    assert metrics["classes_scored"] == 6


# -- the Table 4 leaderboard ----------------------------------------------------------------


def test_table4_spec_rows_each_match_the_planned_runs_of_both_seeds():
    path = Path(__file__).parents[1] / "leaderboards" / "fewshot_finetune.toml"
    spec = LeaderboardSpec.from_file(path)
    runs = plan(path, load_plugins(), [], {})
    assert len(runs) == 4 * 2 * len(spec.rows)  # four data sets, two seeds
    embedded = {
        "audioset-embedded",
        "fewshot-embedded",
        "voxceleb1-embedded",
        "speech-commands-embedded",
    }
    for run in runs:
        assert run.config.dataset.name in embedded
        [finetune] = run.config.protocols
        assert finetune.name == "finetune" and finetune.config.recipe == "small"
        if run.config.dataset.name in {"voxceleb1-embedded", "speech-commands-embedded"}:
            # the small recipe's 3 epochs stay at chance there: longer, at a higher lr
            assert (finetune.config.epochs, finetune.config.lr) == (25, 1e-3)
        else:  # the recipe's own values
            assert (finetune.config.epochs, finetune.config.lr) == (3, 5e-4)
    records = [
        RunRecord(
            run_id=f"r{i}", created=f"r{i}", config_hash=f"r{i}",
            backbone=run.config.backbone.name, method=run.config.method.name, aug="none",
            dataset=run.config.dataset.name, protocols="finetune", seed=run.config.run.seed,
            config=json.loads(json.dumps(run.config.as_dict())),
            metrics={"finetune/map": 30.0 + i, "finetune/acc": 10.0 + i, "finetune/tp_m": 1.0},
            run_dir="",
            harness_version="0", git_commit="", environment={}, duration_s=1.0,
        )
        for i, run in enumerate(runs)
    ]  # fmt: skip
    groups = grouped_runs(spec, records)
    assert [labels["row"] for labels, _ in groups] == [row.label for row in spec.rows]
    assert [len(group) for _, group in groups] == [8] * len(spec.rows)
    _, mean = build_tables(spec, records, load_plugins())
    assert list(mean.labels["seeds"]) == [2] * len(spec.rows)
    for summary in mean.statistics.summaries:
        assert [summary[key].n for key in ("as20k_map", "esc50_acc", "vox1_acc", "scv2_acc")] == [
            2
        ] * 4


# -- end to end from the command line --------------------------------------------------------

SMALL_EMBEDDED = (
    "--dataset", "audioset-embedded", "--set", "dataset.train_clips=60",
    "--set", "dataset.eval_clips=30", "--set", "dataset.seconds=0.5",
)  # fmt: skip


def test_cli_finetunes_on_the_embedded_multi_label_set(tmp_path):
    result = run_cli(
        "run", "--backbone", "audiomae", "--method", "nnclr", "--set", "method.head_epochs=0",
        "--set", "method.tune_epochs=0", "--set", "method.mae_warmup_epochs=0", *SMALL_EMBEDDED,
        "--protocol", "finetune", "--set", "protocol.finetune.epochs=2",
        "--set", "protocol.finetune.mixup=0.5", "--set", "protocol.finetune.freqm=8",
        "--out", str(tmp_path / "runs"), env={"HARNESS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [metrics_file] = (tmp_path / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["finetune/map"] > metrics["finetune/prior_map"]
    config = json.loads((metrics_file.parent / "config.json").read_text())
    finetune = config["protocol"]["finetune"]
    assert (finetune["recipe"], finetune["epochs"], finetune["mixup"]) == ("small", 2, 0.5)
    assert "2 of 60 listed clips" in result.stderr  # the embedded set's missing clips


def test_cli_malformed_segment_row_is_one_line_exit_2_nothing_stored(tmp_path):
    header = "\n".join(SEGMENTS.splitlines()[:3])
    root = published_layout(tmp_path / "as", f"{header}\n--PJHxphWEs, 30.000, 40.000\n")
    store = tmp_path / "store.sqlite"
    result = run_cli(
        "run", "--backbone", "audiomae", "--method", "mae", "--dataset", "audioset",
        "--set", f"dataset.root={root}", "--protocol", "finetune",
        "--out", str(tmp_path / "runs"), "--store", str(store),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "balanced_train_segments.csv: line 4: 3 fields, expected 4" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not store.exists() and not list((tmp_path / "runs").glob("2*"))


def test_select_best_restores_the_epoch_with_the_best_held_out_map(monkeypatch):
    torch.manual_seed(0)
    ctx = embedded_context()
    train = ctx.audio("train")
    kept, held_out = hold_out(train, 0.25, seed=0, who="finetune")
    assert len(held_out) == 24 and len(kept) == 72
    paths = [c.path for c in kept.clips] + [c.path for c in held_out.clips]
    assert sorted(paths) == sorted(c.path for c in train.clips)  # disjoint, union = train
    assert torch.equal(held_out.targets, multi_hot(held_out.clips, 6))

    scores = []
    original = BestEpoch.__call__

    def recording(self):
        values = original(self)
        scores.append(values["valid_map"])
        recording.selector = self  # kept for the check below
        return values

    monkeypatch.setattr(BestEpoch, "__call__", recording)
    config = Finetune.Config(epochs=4, lr=3e-3, select="best", valid_fraction=0.25)
    metrics = Finetune(config).evaluate(ctx).metrics
    assert len(scores) == 4
    assert metrics["best_epoch"] == 1 + int(np.argmax(scores))
    selector = recording.selector
    assert selector.score() == pytest.approx(max(scores), abs=1e-9)  # the best weights are back
    with pytest.raises(UsageError, match="valid_fraction 0.001 of 96 train clips holds out none"):
        hold_out(train, 0.001, seed=0, who="finetune")


# -- fuzzing the segment reader ---------------------------------------------------------------

FIELD = st.text(alphabet='ab-_/m,".0123456789 #\t', max_size=16)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    return published_layout(tmp_path_factory.mktemp("fuzz") / "as")


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(st.lists(FIELD, max_size=6), max_size=5), raw=st.binary(max_size=40))
def test_any_segment_csv_loads_or_fails_with_one_line_naming_the_file(fuzz_root, rows, raw):
    body = "\n".join(", ".join(row) for row in rows)
    path = fuzz_root / "balanced_train_segments.csv"
    path.write_bytes(SEGMENTS.encode() + body.encode() + b"\n" + raw)
    try:
        load(root=fuzz_root, max_missing=1.0)
    except DataError as err:
        message = str(err)
        assert "\n" not in message and ("segments.csv" in message or "audioset" in message)
