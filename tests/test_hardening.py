"""Regressions of issue 12 (items 1-8): hostile inputs, failures and races, mostly via the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip, DataSplits
from harness.cli.main import main
from harness.data.audio import check_header, read_audio
from harness.data.embeddings import Embedder
from harness.nn.impulse import read_ir
from harness.registry.plugins import load_plugins
from harness.results.leaderboard import LeaderboardSpec
from harness.results.render import render_leaderboard
from harness.results.store import (
    COLUMNS,
    ResultStore,
    RunRecord,
    check_store,
    commit_run,
    staged_dir,
)
from harness.run.experiment import check_metrics
from harness.util.cache import DONE_MARKER, owned_temp_dir, stale_temp_dirs
from harness.util.errors import DataError, HarnessError
from tests.conftest import TOY_PLUGIN, run_cli, toy_run_args
from tests.test_cli import assert_one_line_error, stored_runs


def make_tones(root: Path) -> list[Path]:
    """The toy data set's files (written once), eval files first."""
    from tests.toy_plugin import ToyTones

    root.mkdir(parents=True, exist_ok=True)
    splits = ToyTones(ToyTones.Config(root=str(root))).load()
    return [c.path for c in splits.eval] + [c.path for c in splits.train]


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    sf.write(path, samples.astype(np.float32), rate, subtype="FLOAT")


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """``harness`` in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


# -- item 1: non-finite and absurd audio --------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e29])
def test_non_finite_or_absurd_sample_is_an_error_naming_the_file(tmp_path, bad):
    samples = np.zeros(1600)
    samples[100] = bad
    path = tmp_path / "x.wav"
    write_float_wav(path, samples)
    with pytest.raises(DataError, match=str(path)):
        read_audio(path)
    with pytest.raises(DataError, match=str(path)):
        read_ir(path)


def test_loud_but_sane_float_audio_is_accepted(tmp_path):
    path = tmp_path / "loud.wav"
    write_float_wav(path, np.full(160, 4.0))  # +12 dBFS: clipped later, not corrupt
    samples, rate = read_audio(path)
    assert rate == 16000 and samples.max() == 4.0


def test_nan_in_an_eval_wav_fails_the_run_naming_the_file_and_stores_nothing(tmp_path):
    files = make_tones(tmp_path / "tones")
    samples, rate = sf.read(files[0], dtype="float32")
    samples[10] = np.nan
    write_float_wav(files[0], samples, rate)
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1"))
    assert_one_line_error(result, str(files[0]), "NaN")
    assert stored_runs(tmp_path) == []
    assert [p.name for p in (tmp_path / "runs").glob(".*")] == []


def test_non_finite_metric_fails_the_run_and_cannot_be_stored(tmp_path):
    with pytest.raises(HarnessError, match=r"non-finite metrics \(p/logloss=nan\)"):
        check_metrics({"p/acc": 0.5, "p/logloss": math.nan})
    record = make_record("r1", metrics={"p/x": math.inf})
    with pytest.raises(HarnessError, match="non-finite"):
        ResultStore(tmp_path / "s.sqlite").add(record)
    assert ResultStore(tmp_path / "s.sqlite").records() == []


def test_the_first_bad_frame_is_named_for_mono_and_multichannel_audio():
    from harness.data.audio import check_samples

    stereo = np.zeros((6, 2), dtype=np.float32)
    stereo[3, 1] = np.nan
    stereo[5, 0] = np.inf
    with pytest.raises(DataError, match=r"^audio file x\.wav contains NaN .*\(first at frame 3\)$"):
        check_samples(stereo, Path("x.wav"))
    mono = np.zeros(8, dtype=np.float32)
    mono[5] = -np.inf
    with pytest.raises(DataError, match=r"^IR y\.wav contains NaN .*\(first at frame 5\)$"):
        check_samples(mono, Path("y.wav"), "IR")
    check_samples(np.full(4, 1e3, dtype=np.float32), Path("loud.wav"))  # the limit itself is fine
    check_samples(np.zeros(0, dtype=np.float32), Path("empty.wav"))
    with pytest.raises(DataError, match=r"magnitude 1e\+03 \(more than 1000\)"):
        check_samples(np.full(4, 1000.5, dtype=np.float32), Path("louder.wav"))


def test_audio_errors_are_one_line_and_name_the_file(tmp_path):
    from harness.data.audio import one_line

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=f"^empty audio file {re.escape(str(empty))}$"):
        read_audio(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(DataError, match=f"^unreadable audio file {re.escape(str(junk))}: \\S"):
        read_audio(junk)
    slow = tmp_path / "slow.wav"
    write_float_wav(slow, np.array([0.5, -0.5, 0.25]), rate=1)
    data, rate = read_audio(slow)
    assert rate == 1 and data.tolist() == [0.5, -0.5, 0.25]
    assert one_line(ValueError("two\n  lines\there")) == "two lines here"
    assert one_line(KeyError()) == "KeyError"


def test_clips_of_every_rate_and_length_read_the_same_in_memory_and_on_demand(tmp_path):
    """Crop or pad at the file's rate to clip_seconds, resample (torchaudio's sinc), then
    crop or zero-fill: the in-memory loader and the DataLoader's per-clip reader agree."""
    import torchaudio.functional as AF

    from harness.data.loader import DecodedWaves, load_clips

    gen = np.random.default_rng(0)
    specs = [(16000, 0.7, "a", 0), (8000, 0.3, "b", 1), (22050, 0.5, "s4", -1)]
    clips = []
    for i, (rate, seconds, device, label) in enumerate(specs):
        path = tmp_path / f"c{i}.wav"
        write_float_wav(path, 0.1 * gen.standard_normal(round(rate * seconds)), rate)
        clips.append(Clip(path, label, device))
    halves = [tmp_path / "h0.wav", tmp_path / "h1.wav"]
    write_float_wav(halves[0], np.full(4000, 0.25), 8000)
    write_float_wav(halves[1], np.full(4000, -0.25), 8000)
    clips.append(Clip(halves[0], 2, "zz", segments=tuple(halves)))

    audio = load_clips(clips, 16000, 0.5, ["a", "b", "s4"])
    assert audio.wave.shape == (4, 8000) and audio.sample_rate == 16000
    assert audio.clips is clips and audio.labels.tolist() == [0, 1, -1, 2]
    assert audio.devices.tolist() == [0, 1, 2, -1]
    source = DecodedWaves(clips, 16000, 0.5)
    for i in range(4):
        on_demand = source.read(i)
        assert on_demand.dtype == np.float32 and on_demand.shape == (8000,)
        np.testing.assert_allclose(on_demand, audio.wave[i].numpy(), atol=1e-6)
    samples, _ = sf.read(clips[0].path, dtype="float32")
    np.testing.assert_allclose(audio.wave[0].numpy(), samples[:8000], atol=1e-7)  # cropped
    samples, _ = sf.read(clips[1].path, dtype="float32")
    padded = np.concatenate([samples, np.zeros(1600, dtype=np.float32)])  # 0.3 s -> 0.5 s
    reference = AF.resample(torch.from_numpy(padded), 8000, 16000).numpy()
    np.testing.assert_allclose(audio.wave[1].numpy(), reference, atol=1e-5)
    assert np.abs(audio.wave[1, 5000:].numpy()).max() < 1e-3  # silence after the filter's edge
    samples, _ = sf.read(clips[2].path, dtype="float32")
    reference = AF.resample(torch.from_numpy(samples), 22050, 16000).numpy()
    np.testing.assert_allclose(audio.wave[2].numpy(), reference[:8000], atol=1e-5)
    # two 0.5 s segments at 8 kHz, cropped to 0.5 s: only the first half's +0.25 remains
    middle = audio.wave[3, 1000:7000].numpy()
    np.testing.assert_allclose(middle, np.full_like(middle, 0.25), atol=1e-3)
    with pytest.raises(DataError, match="^eval audio: the split has no clips$"):
        load_clips([], 16000, 0.5, [], desc="eval audio")


def test_the_decoded_audio_cache_holds_each_clip_to_half_an_int16_step_of_its_peak(tmp_path):
    """int16 rows scaled by max(1, peak): a loud clip (peak 1.5) keeps its level; the index
    names the files, rate and length; the global RNG is left alone."""
    from harness.data.audio_cache import FULL_SCALE, CachedWaves, cached_audio
    from harness.data.loader import split_audio

    gen = np.random.default_rng(1)
    waves = [0.1 * gen.standard_normal(4000), 1.5 * np.sin(np.arange(4000) / 7.0)]
    clips = []
    for i, wave in enumerate(waves):
        write_float_wav(tmp_path / f"w{i}.wav", wave, 8000)
        clips.append(Clip(tmp_path / f"w{i}.wav", i, "a"))
    audio = split_audio(clips, 8000, 0.5, ["a"])
    torch.manual_seed(5)
    expected_draw = torch.rand(1)
    torch.manual_seed(5)
    cached = cached_audio(audio, str(tmp_path / "cache"), desc="train audio")
    assert torch.equal(torch.rand(1), expected_draw)
    assert isinstance(cached.wave, CachedWaves) and len(cached.wave) == 2
    for i, wave in enumerate(waves):
        peak = max(1.0, float(np.abs(wave.astype(np.float32)).max()))
        row = cached.wave.read(i)
        assert row.dtype == np.float32 and row.shape == (4000,)
        np.testing.assert_allclose(row, wave, atol=0.5 * peak / FULL_SCALE + 1e-7)
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("8000hz-0.5s-2-")
    index = json.loads((folder / "index.json").read_text())
    assert index["shape"] == [2, 4000] and index["sample_rate"] == 8000
    assert index["clip_seconds"] == 0.5
    assert index["clips"] == [[str(c.path)] for c in clips]
    assert np.load(folder / "scales.npy").tolist() == pytest.approx([1.0, 1.5], abs=1e-3)


# -- item 2: leaderboards render whatever is stored ------------------------------------------


def make_record(run_id: str, metrics: dict | None = None, seed: int = 0, **config) -> RunRecord:
    metrics = {"device-logloss/logloss/overall": 1.0} if metrics is None else metrics
    return RunRecord(
        run_id=run_id,
        created="2026-01-01T00:00:00",
        config_hash="h" + json.dumps(config, sort_keys=True),
        backbone="passt",
        method="ce",
        aug="none",
        dataset="tau22-embedded",
        protocols="device-logloss",
        seed=seed,
        config={"run": {"seed": seed}, "method": {"name": "ce", **config}},
        metrics=metrics,
        run_dir=f"runs/{run_id}",
        harness_version="0",
        git_commit="",
        environment={},
        duration_s=1.0,
    )


def insert_raw(store: Path, record: RunRecord, metrics_json: str) -> None:
    """A row as an older harness (or a hand edit) could have written it."""
    ResultStore(store).records()  # creates the schema
    row = dict(zip(COLUMNS, record.row(), strict=True)) | {"metrics_json": metrics_json}
    with sqlite3.connect(store) as conn:
        conn.execute(
            f"INSERT INTO runs VALUES ({', '.join('?' for _ in COLUMNS)})",
            [row[c] for c in COLUMNS],
        )


@pytest.mark.parametrize("fmt", ["markdown", "csv", "latex"])
@pytest.mark.parametrize("agg", ["best", "mean", "both", "runs"])
def test_leaderboard_skips_rows_with_nan_inf_or_text_metrics_with_a_warning(tmp_path, fmt, agg):
    """Such a row cannot come from the harness (it refuses non-finite metrics); one written by
    hand or an older version is left out of the table with one warning naming it."""
    store = tmp_path / "s.sqlite"
    keys = ("logloss/overall", "logloss/a", "acc/overall")
    good = {f"device-logloss/{k}": 0.5 for k in keys}
    ResultStore(store).add(make_record("good", good, alpha=1))
    insert_raw(
        store,
        make_record("badA", seed=0, alpha=2),
        json.dumps(
            {
                "device-logloss/logloss/overall": math.nan,
                "device-logloss/logloss/a": 0.7,
            }
        ),
    )
    insert_raw(
        store,
        make_record("badB", seed=1, alpha=2),
        '{"device-logloss/logloss/overall": Infinity, "device-logloss/logloss/a": "x"}',
    )
    spec = LeaderboardSpec().with_options(agg=agg, metric="logloss")
    with pytest.warns(UserWarning, match="skipped") as caught:
        text = render_leaderboard(spec, ResultStore(store), load_plugins(), fmt)
    messages = " ".join(str(w.message) for w in caught)
    assert "badA" in messages and "badB" in messages
    assert "0.500" in text or "0.5" in text
    assert "nan" not in text.lower() and "inf" not in text.lower().replace("info", "")


def test_leaderboard_cli_renders_a_store_with_nan_runs(tmp_path):
    store = tmp_path / "s.sqlite"
    ResultStore(store).add(make_record("good"))
    insert_raw(store, make_record("nan", seed=1), '{"device-logloss/logloss/overall": NaN}')
    result = run_cli("leaderboard", "--store", str(store), "--agg", "best")
    assert result.returncode == 0, result.stderr
    assert "Overall" in result.stdout and " 1 |" in result.stdout


# -- item 3: one-line errors instead of tracebacks; no silent acceptance ---------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--device", "meta"], "run.device: 'meta'"),
        (["--set", "run.lr=nan"], "run.lr: nan must be a finite number"),
        (["--set", "run.plateau_factor=2"], "run.plateau_factor"),
        (["--set", "run.betas=0.9,1.5"], "run.betas: 1.5"),
        (["--set", "run.eps=-1"], "run.eps"),
        (["--set", "run.weight_decay=-1"], "run.weight_decay"),
        (["--set", "run.threads=-1"], "run.threads"),
        (["--set", "run.warmup_epochs=-1"], "run.warmup_epochs"),
    ],
)
def test_bad_run_settings_are_one_line_errors(tmp_path, capsys, extra, needle):
    code, err = run_main(toy_run_args(tmp_path, *extra), capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_toml_is_a_one_line_error_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[run]\nepochs = 1\n# \xff\xfe latin-1 \xe9\n")
    assert_one_line_error(run_cli(*toy_run_args(tmp_path, "--config", str(bad))), "not UTF-8")


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("run = 5\n", "config key 'run' must be a table, got 5"),
        ('[dataset]\nname = "esc50"\nroot = 5\n', "dataset.root: 5 is not a path"),
        ('[dataset]\nname = "esc50"\nroot = ["a"]\n', "is not a path"),
        ('[dataset]\nname = "tau22-embedded"\nscale = nan\n', "dataset.scale: nan"),
        ('[dataset]\nname = "esc50"\nclip_seconds = 1e12\n', "dataset.clip_seconds"),
    ],
)
def test_bad_toml_values_are_one_line_errors(tmp_path, capsys, toml, needle):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    code, err = run_main(["run", "--config", str(path), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_missing_or_invalid_config_file_is_a_one_line_error(tmp_path, capsys):
    code, err = run_main(["run", "--config", str(tmp_path / "none.toml")], capsys)
    assert code == 2 and "config file not found" in err
    (tmp_path / "x.toml").write_text("[run\n")
    code, err = run_main(["run", "--config", str(tmp_path / "x.toml")], capsys)
    assert code == 2 and "is not valid TOML" in err and err.count("\n") == 1


def test_plugin_whose_hook_raises_or_exits_is_a_one_line_error(tmp_path):
    raising = tmp_path / "raising.py"
    raising.write_text(
        "from harness import hookimpl\n@hookimpl\ndef register_methods(register):\n"
        "    raise RuntimeError('boom in hook')\n"
    )
    result = run_cli("--plugin", str(raising), "list")
    assert_one_line_error(result, "raising.py", "RuntimeError: boom in hook")
    exiting = tmp_path / "exiting.py"
    exiting.write_text(
        "import sys\nfrom harness import hookimpl\n@hookimpl\n"
        "def register_methods(register):\n    sys.exit(3)\n"
    )
    assert_one_line_error(run_cli("--plugin", str(exiting), "list"), "sys.exit(3)")


@pytest.mark.parametrize("name", ["meta.csv", "esc50.csv"])
def test_non_utf8_metadata_is_a_data_error(tmp_path, name):
    from harness_plugins.datasets._esc50_layout import read_esc50
    from harness_plugins.datasets._tau22_layout import load_tau22

    if name == "meta.csv":
        (tmp_path / name).write_bytes(b"filename\tscene_label\tidentifier\tsource_label\n\xff\n")
        with pytest.raises(DataError, match="meta.csv: not UTF-8"):
            load_tau22(tmp_path)
    else:
        (tmp_path / "meta").mkdir()
        (tmp_path / "meta" / name).write_bytes(b"filename,fold\n\xe9\xff,1\n")
        with pytest.raises(DataError, match="esc50.csv: not UTF-8"):
            read_esc50(tmp_path)


def test_truncated_impulse_response_is_an_error(tmp_path):
    path = tmp_path / "ir.wav"
    write_float_wav(path, np.hanning(512))
    path.write_bytes(path.read_bytes()[:-600])
    with pytest.raises(DataError, match="truncated impulse-response file"):
        read_ir(path)


def test_plot_of_an_unreadable_backbone_is_a_one_line_error(tmp_path):
    from harness.cli.plot import run_encoder

    (tmp_path / "backbone.pt").write_bytes(b"not a torch file")
    cfg = SimpleNamespace(backbone=SimpleNamespace(build=lambda: torch.nn.Linear(1, 1)))
    with pytest.raises(HarnessError, match="cannot read .*backbone.pt"):
        run_encoder(tmp_path, cfg)


# -- item 4: cheap checks before training -------------------------------------------------


def test_truncated_eval_wav_is_reported_before_training(tmp_path):
    files = make_tones(tmp_path / "tones")
    files[0].write_bytes(files[0].read_bytes()[:-200])
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1"), env={"HARNESS_PROGRESS": "0"})
    assert_one_line_error(result, "truncated audio file", str(files[0]))
    assert "epoch 1/1" not in result.stderr  # nothing trained


def test_unusable_store_is_reported_before_training(tmp_path, capsys):
    make_tones(tmp_path / "tones")
    store = tmp_path / "bad.sqlite"
    store.write_bytes(b"garbage" * 1000)
    code, err = run_main(toy_run_args(tmp_path, "--store", str(store)), capsys)
    assert code == 2 and "is not usable" in err and "epoch" not in err
    with sqlite3.connect(tmp_path / "other.sqlite") as conn:
        conn.execute("CREATE TABLE runs (run_id TEXT)")
    code, err = run_main(toy_run_args(tmp_path, "--store", str(tmp_path / "other.sqlite")), capsys)
    assert code == 2 and "config_hash" in err and "epoch" not in err


def test_header_check_finds_truncation_and_garbage(tmp_path):
    path = tmp_path / "a.wav"
    write_float_wav(path, np.zeros(1000))
    check_header(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        check_header(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", 100) + b"WAVEjunk")
    with pytest.raises(DataError, match=str(path)):
        check_header(path)


def test_a_run_folder_holds_exactly_what_its_store_row_says(tmp_path):
    """An in-process run: the folder's files, and the row rebuilt from them, match the store."""
    import harness
    from harness.results.store import record_from_folder

    main(toy_run_args(tmp_path))
    (row,) = ResultStore(tmp_path / "runs" / "results.sqlite").records()
    folder = Path(row.run_dir)
    assert folder.parent == tmp_path / "runs" and folder.name == row.run_id
    assert sorted(p.name for p in folder.iterdir()) == [
        ".complete", ".store", "backbone.pt", "config.json", "log.txt", "method.pt",
        "metrics.json", "metrics.jsonl", "record.json", "tables.md",
    ]  # fmt: skip
    store = (tmp_path / "runs" / "results.sqlite").resolve()
    assert (folder / ".store").read_text() == f"{store}\n"
    assert record_from_folder(folder) == row
    assert json.loads((folder / "config.json").read_text()) == row.config
    assert json.loads((folder / "metrics.json").read_text()) == row.metrics
    assert "config" not in json.loads((folder / "record.json").read_text())
    assert (folder / ".complete").read_text() == f"{row.run_id}\n"
    weights = torch.load(folder / "backbone.pt", weights_only=True)
    assert weights.keys() and all(isinstance(v, torch.Tensor) for v in weights.values())
    assert (folder / "tables.md").read_text().startswith("## device-logloss\n\n| device")
    log = (folder / "log.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in log if line.startswith("epoch")] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3",
    ]  # fmt: skip
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if "epoch" in e][-1] == 3
    assert row.harness_version == harness.__version__ and row.duration_s > 0
    assert re.fullmatch(r"[0-9a-f]{40}|", row.git_commit)
    env = row.environment
    assert set(env) == {"python", "torch", "platform", "threads", "packages",
                        "data_generator_version", "command", "git_dirty",
                        "parameters", "classes"}  # fmt: skip
    assert env["command"].startswith("harness --plugin") and " run " in env["command"]
    assert env["torch"] == torch.__version__ and env["packages"]["numpy"] == np.__version__
    assert (row.backbone, row.method, row.aug, row.dataset, row.protocols, row.seed) == (
        "toy", "ce", "none", "toy-tones", "device-logloss", 0,
    )  # fmt: skip


def test_an_interrupted_in_process_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) in the first batch of epoch 2, then ``--resume``: the same
    metrics, weights, log and metrics.jsonl as an uninterrupted run (the Python API path of
    the SIGKILL tests in test_resume.py)."""
    import os

    from tests.test_resume import args, assert_same_run, finished
    from tests.test_runner import interrupted

    main(args(tmp_path, "a"))
    partial = interrupted(tmp_path, monkeypatch, "b", "epoch 2/3")
    assert {"config.json", "state.json", "rank0.pt"} <= set(os.listdir(partial))
    state = json.loads((partial / "state.json").read_text())
    assert (state["stage_name"], state["stage_epochs"], state["epoch"]) == ("train", 3, 1)
    main([*args(tmp_path, "b"), "--resume"])
    assert_same_run(finished(tmp_path / "a"), finished(tmp_path / "b"))
    assert not (tmp_path / "b" / ".partial").exists()
    assert "resumed from" in (finished(tmp_path / "b") / "log.txt").read_text()


# -- item 5: unique run ids, races ---------------------------------------------------------


def test_run_ids_of_the_same_config_and_second_differ():
    from datetime import UTC, datetime

    from harness.results.store import new_run_id

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ids = {new_run_id(now, "abcdef0123456789") for _ in range(100)}
    assert len(ids) == 100


def test_staged_dir_race_is_a_harness_error_and_leaves_no_temp(tmp_path):
    final = tmp_path / "runs" / "r1"
    with pytest.raises(HarnessError, match="already exists"), staged_dir(final) as tmp:
        (tmp / "x").write_text("1")
        final.mkdir()  # another process won the race after the existence check
        (final / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]


def test_staged_dir_cleans_up_on_keyboard_interrupt(tmp_path):
    final = tmp_path / "runs" / "r1"
    with pytest.raises(KeyboardInterrupt), staged_dir(final) as tmp:
        (tmp / "x").write_text("1")
        raise KeyboardInterrupt
    assert list((tmp_path / "runs").iterdir()) == []


def test_commit_run_leaves_nothing_when_the_write_or_the_insert_fails(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    out = tmp_path / "runs"

    def interrupted(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        commit_run(out / "r1", store, make_record("r1"), interrupted)
    store.add(make_record("r2"))
    with pytest.raises(HarnessError, match="already holds a run with id r2"):
        commit_run(out / "r2", store, make_record("r2"), lambda tmp: None)
    assert list(out.iterdir()) == [] and [r.run_id for r in store.records()] == ["r2"]
    commit_run(out / "r3", store, make_record("r3"), lambda tmp: (tmp / "a").write_text("1"))
    assert (out / "r3" / "a").is_file() and len(store.records()) == 2


# -- item 6: corrupt embedding cache ---------------------------------------------------------


def cache_ctx(tmp_path, train_seconds=None):
    wav = tmp_path / "a.wav"
    write_float_wav(wav, np.zeros(100))
    clips = [Clip(wav, 0), Clip(wav, 1)]
    calls = []

    def embed(split):
        calls.append(split)
        return torch.ones(2, 3)

    splits = DataSplits(["a", "b"], clips, clips, 1.0, train_clip_seconds=train_seconds)
    backbone = SimpleNamespace(sample_rate=16000, name="toy")
    return Embedder(splits, backbone, embed), calls


def test_corrupt_embedding_cache_entry_is_discarded_with_a_warning_and_rebuilt(tmp_path):
    from harness.data.embeddings import cached_embed, embedding_cache_dir

    ctx, calls = cache_ctx(tmp_path)
    folder = embedding_cache_dir(ctx, "eval", "hash")
    folder.mkdir(parents=True)
    (folder / DONE_MARKER).write_text("done\n")
    (folder / "embeddings.pt").write_bytes(b"\x80corrupt")
    with pytest.warns(UserWarning, match="discarding unreadable embedding cache entry"):
        assert torch.equal(cached_embed(ctx, "eval", "hash"), torch.ones(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cached_embed(ctx, "eval", "hash"), torch.ones(2, 3))  # healed
    assert calls == ["eval"]


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (torch.ones(2, 3, dtype=torch.long), "not a float tensor"),
        ({"embeddings": torch.ones(2, 3)}, "not a float tensor"),
        (torch.full((2, 3), math.nan), "non-finite values"),
    ],
)
def test_a_cache_entry_that_is_not_finite_float_embeddings_is_rebuilt(tmp_path, stored, why):
    from harness.data.embeddings import cached_embed, embedding_cache_dir

    ctx, calls = cache_ctx(tmp_path)
    folder = embedding_cache_dir(ctx, "eval", "hash")
    folder.mkdir(parents=True)
    (folder / DONE_MARKER).write_text("done\n")
    torch.save(stored, folder / "embeddings.pt")
    with pytest.warns(UserWarning, match=f"discarding embedding cache entry .*: {why}"):
        assert torch.equal(cached_embed(ctx, "eval", "hash"), torch.ones(2, 3))
    assert calls == ["eval"]
    info = json.loads((folder / "info.json").read_text())
    assert info == {"split": "eval", "clips": 2, "dim": 3, "backbone": "toy"}


class RunsCodeWhenUnpickled:
    """A pickle that creates a file when loaded without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cache_entry_is_never_unpickled_as_code(tmp_path):
    from harness.data.embeddings import read_cached_embeddings

    marker = tmp_path / "executed"
    torch.save(RunsCodeWhenUnpickled(marker), tmp_path / "embeddings.pt")
    with pytest.warns(UserWarning, match="discarding unreadable embedding cache entry"):
        assert read_cached_embeddings(tmp_path / "embeddings.pt") is None
    assert not marker.exists()


def test_training_clips_of_another_length_are_cached_apart(tmp_path):
    from harness.data.embeddings import embedding_cache_dir, split_seconds

    merged, _ = cache_ctx(tmp_path, train_seconds=10.0)
    plain, _ = cache_ctx(tmp_path)
    assert (split_seconds(merged, "train"), split_seconds(merged, "eval")) == (10.0, 1.0)
    assert (split_seconds(plain, "train"), split_seconds(plain, "eval")) == (1.0, 1.0)
    assert embedding_cache_dir(merged, "train", "h") != embedding_cache_dir(plain, "train", "h")
    assert embedding_cache_dir(merged, "eval", "h") == embedding_cache_dir(plain, "eval", "h")


def test_backbone_fingerprint_covers_class_config_and_every_weight():
    from dataclasses import dataclass

    from harness.api import Backbone
    from harness.data.embeddings import backbone_fingerprint

    class Tiny(Backbone):
        name = "tiny"
        description = "test"
        sample_rate = 16000

        @dataclass
        class Config:
            size: str = "a"

        def __init__(self, config=None) -> None:
            super().__init__(config if config is not None else self.Config())
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
            torch.nn.init.constant_(self.blocks[0].weight, 0.5)
            torch.nn.init.zeros_(self.blocks[0].bias)

    class Other(Tiny):
        pass

    base = backbone_fingerprint(Tiny())
    assert len(base) == 32 and base == backbone_fingerprint(Tiny())
    assert backbone_fingerprint(Tiny(Tiny.Config(size="b"))) != base
    assert backbone_fingerprint(Other()) != base
    assert backbone_fingerprint(Tiny("a config that is not a dataclass")) != base
    changed = Tiny()
    with torch.no_grad():
        changed.blocks[0].bias[1] = 1e-7
    assert backbone_fingerprint(changed) != base


# -- item 7: stale temporary folders and store check -----------------------------------------


def test_store_check_reports_and_repairs(tmp_path, capsys):
    out, store = tmp_path / "runs", ResultStore(tmp_path / "runs" / "results.sqlite")
    commit_run(out / "r1", store, make_record("r1"), lambda tmp: write_record(tmp, "r1"))
    orphan = out / "r2"  # a complete folder whose row is missing (an older harness, killed)
    orphan.mkdir()
    write_record(orphan, "r2")
    dead = out / ".r3.vm~999999~1.abc"
    dead.mkdir()
    code, err = run_main(["store", "check", "--out", str(out)], capsys)
    assert code == 2 and "2 problem(s)" in err
    main_argv = ["store", "check", "--out", str(out), "--repair"]
    main(main_argv)
    assert not dead.exists() and {r.run_id for r in store.records()} == {"r1", "r2"}
    assert check_store(out, store) == []


def test_store_check_names_each_problem_and_ignores_other_output_folders(tmp_path):
    out, store = tmp_path / "runs", ResultStore(tmp_path / "shared.sqlite")
    assert check_store(out, store) == [] and not store.path.exists()  # nothing there yet
    commit_run(out / "r1", store, make_record("r1"), lambda tmp: write_record(tmp, "r1"))
    orphan = out / "r2"
    orphan.mkdir()
    write_record(orphan, "r2")
    (out / "notes").mkdir()  # a folder without a record is not a run
    (out / "r3.txt").write_text("not a folder")
    broken = out / "r4"
    broken.mkdir()
    (broken / "record.json").write_text("{")
    elsewhere = tmp_path / "other" / "a0"  # sorts first; another output folder's run
    store.add(dataclasses.replace(make_record("a0"), run_dir=str(elsewhere)))
    store.add(dataclasses.replace(make_record("r9"), run_dir=str(out / "r9")))
    assert check_store(out, store) == [
        f"run folder without a row (to store): {orphan}",
        "run folder without a row, not recoverable (--orphan-folders delete): "
        f"run folder {broken} holds no complete record: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)",
        f"row without a run folder (row to delete): r9 ({out / 'r9'})",
    ]
    assert check_store(out, store, repair=True)[0] == f"run folder without a row (stored): {orphan}"
    (repaired,) = [r for r in store.records() if r.run_id == "r2"]
    assert repaired.run_dir == str(orphan) and repaired.config == make_record("r2").config


def test_commit_run_creates_missing_parents_and_leaves_nothing_when_writing_fails(tmp_path):
    store = ResultStore(tmp_path / "s.sqlite")
    deep = tmp_path / "a" / "b" / "r1"
    commit_run(deep, store, make_record("r1"), lambda tmp: (tmp / "x").write_text("1"))
    assert (deep / "x").read_text() == "1"

    def fail(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "y").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        commit_run(deep.parent / "r2", store, make_record("r2"), fail)
    assert sorted(p.name for p in deep.parent.iterdir()) == ["r1"]
    assert [r.run_id for r in store.records()] == ["r1"]


def test_run_files_are_sorted_indented_json(tmp_path):
    from harness.results.store import write_json

    write_json(tmp_path / "new" / "r.json", {"b": 1, "a": [1]})
    text = (tmp_path / "new" / "r.json").read_text()
    assert text == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["r.json"]


def write_record(folder: Path, run_id: str) -> None:
    record = make_record(run_id)
    (folder / "config.json").write_text(json.dumps(record.config))
    data = {k: v for k, v in record.__dict__.items() if k != "config"}
    (folder / "record.json").write_text(json.dumps(data))


def test_stale_temp_folders_are_found_down_to_the_given_depth_only(tmp_path, monkeypatch):
    from harness.util.cache import build_once, cache_root, clean_stale_cache, host_name

    def dead(parent: Path, name: str) -> Path:
        folder = parent / f".{name}.{host_name()}~999999~1.abc"
        folder.mkdir(parents=True)
        return folder

    root = tmp_path / "cache"
    (root / "a-file").parent.mkdir(parents=True)
    (root / "a-file").write_text("not a folder")
    level1 = dead(root, "gen")
    level2 = dead(root / "audio", "x")
    level3 = dead(root / "a" / "b", "y")
    dead(root / "a" / "b" / "c", "too-deep")
    dead(root / ".hidden", "z")  # inside another temporary or hidden folder: not searched
    finished = root / "done"
    finished.mkdir()
    (finished / DONE_MARKER).write_text("done\n")
    dead(finished, "inside-a-finished-folder")
    elsewhere = dead(tmp_path / "other", "w").parent
    (root / "link").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("HARNESS_CACHE", str(root))
    assert cache_root() == root
    assert sorted(clean_stale_cache()) == sorted([level1, level2, level3])
    assert not level1.exists() and not level3.exists()
    assert len(list(elsewhere.iterdir())) == 1  # not followed through the link

    built = build_once(root / "gen", lambda tmp: (tmp / "x").write_text("1"))
    assert (built / "x").is_file()
    assert json.loads((built / DONE_MARKER).read_text())["files"]["x"][0] == 1
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "harness"


def test_temp_folders_of_live_processes_are_kept(tmp_path):
    mine = owned_temp_dir(tmp_path, "x")
    dead = tmp_path / f".y.{mine.name.split('.')[2].split('~')[0]}~999999~1.abc"
    dead.mkdir()
    assert stale_temp_dirs([tmp_path]) == [dead]


# -- item 8: sweeps ------------------------------------------------------------------------


def test_sweep_validates_every_cell_first_and_reports_them(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        '[sweep]\nseeds = [0]\n[sweep.base]\nbackbone = { name = "toy" }\n'
        f'dataset = {{ name = "toy-tones", root = "{tmp_path}" }}\n'
        "run = { epochs = 1, batch_size = 8 }\n"
        '[[sweep.grid]]\n"run.lr" = [0.01, nan, -1.0]\n'
    )
    result = run_cli("--plugin", str(TOY_PLUGIN), "sweep", str(sweep), "--out", str(tmp_path / "r"))
    assert_one_line_error(result, "run.lr: nan", "and 1 more invalid run(s)", "nothing was run")
    assert not (tmp_path / "r").exists()


def test_interrupted_sweep_reports_the_runs_it_stored(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        '[sweep]\nseeds = [0]\n[sweep.base]\nbackbone = { name = "toy" }\n'
        f'dataset = {{ name = "toy-tones", root = "{tmp_path / "tones"}" }}\n'
        "run = { epochs = 1, batch_size = 8 }\n"
        '[[sweep.grid]]\nmethod = ["ce", "interrupting"]\n'
    )
    make_tones(tmp_path / "tones")
    result = run_cli("--plugin", str(TOY_PLUGIN), "sweep", str(sweep), "--out", str(tmp_path / "r"))
    assert result.returncode == 130, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "interrupted at run 2/2" in last and "1 run(s) stored before it" in last
    assert "nothing was stored" not in result.stderr
    with sqlite3.connect(tmp_path / "r" / "results.sqlite") as conn:
        assert conn.execute("SELECT method FROM runs").fetchall() == [("ce",)]


def test_a_run_with_a_nan_metric_fails_and_stores_nothing(tmp_path, monkeypatch):
    from harness.registry.config import resolve
    from harness.run.experiment import Experiment, run_experiment

    make_tones(tmp_path / "tones")
    raw = {
        "backbone": {"name": "toy"},
        "dataset": {"name": "toy-tones", "root": str(tmp_path / "tones")},
        "run": {"epochs": 1, "batch_size": 8},
    }
    cfg = resolve(raw, load_plugins([str(TOY_PLUGIN)]))
    monkeypatch.setattr(
        Experiment, "evaluate", lambda self: ({"p/acc": 0.5, "p/logloss": math.nan}, {})
    )
    out, store = tmp_path / "runs", ResultStore(tmp_path / "runs" / "s.sqlite")
    with pytest.raises(HarnessError, match=r"non-finite metrics \(p/logloss=nan\)"):
        run_experiment(cfg, out, store)
    assert store.records() == []
    # only the resumable training state (.partial) may remain, no run folder
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".partial"])
