"""Regressions of issue 12 (items 1-8): hostile inputs, failures and races, mostly via the CLI."""

from __future__ import annotations

import json
import math
import sqlite3
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from harness.api import Clip
from harness.audio import check_header, read_audio
from harness.cache import DONE_MARKER, owned_temp_dir, stale_temp_dirs
from harness.cli import main
from harness.errors import DataError, HarnessError
from harness.impulse import read_ir
from harness.leaderboard import LeaderboardSpec, render_leaderboard
from harness.plugins import load_plugins
from harness.runner import check_metrics
from harness.store import (
    COLUMNS,
    ResultStore,
    RunRecord,
    check_store,
    commit_run,
    staged_dir,
)
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
def test_leaderboard_renders_nan_and_inf_as_a_dash(tmp_path, fmt, agg):
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
    text = render_leaderboard(spec, ResultStore(store), load_plugins(), fmt)
    assert "0.500" in text or "0.5" in text
    if fmt != "csv":
        assert "–" in text
    assert "inf" not in text.lower().replace("info", "")


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
    from harness_plugins.datasets.esc50 import read_esc50
    from harness_plugins.datasets.tau22 import load_tau22

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
    from harness_plugins.commands.plot import run_encoder

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


# -- item 5: unique run ids, races ---------------------------------------------------------


def test_run_ids_of_the_same_config_and_second_differ():
    from datetime import UTC, datetime

    from harness.store import new_run_id

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


def test_corrupt_embedding_cache_entry_is_discarded_with_a_warning_and_rebuilt(tmp_path):
    from harness.evaluation import cached_embed, embedding_cache_dir

    wav = tmp_path / "a.wav"
    write_float_wav(wav, np.zeros(100))
    clips = [Clip(wav, 0), Clip(wav, 1)]
    calls = []

    def embed(split):
        calls.append(split)
        return torch.ones(2, 3)

    ctx = SimpleNamespace(
        splits=SimpleNamespace(eval=clips, clip_seconds=1.0, train_clip_seconds=None),
        backbone=SimpleNamespace(sample_rate=16000, name="toy"),
        embed=embed,
    )
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


def write_record(folder: Path, run_id: str) -> None:
    record = make_record(run_id)
    (folder / "config.json").write_text(json.dumps(record.config))
    data = {k: v for k, v in record.__dict__.items() if k != "config"}
    (folder / "record.json").write_text(json.dumps(data))


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
    from harness.config import resolve
    from harness.runner import Experiment, run_experiment

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
