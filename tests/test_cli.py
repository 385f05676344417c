"""The command line end to end, in subprocesses, on the toy plugin."""

import json
import sqlite3

import soundfile as sf

from tests.conftest import TOY_PLUGIN, run_cli, toy_run_args


def stored_runs(tmp_path):
    store = tmp_path / "runs" / "results.sqlite"
    if not store.exists():
        return []
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT run_id, method, metrics_json, run_dir FROM runs").fetchall()


def test_run_prints_table_and_stores_everything(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--method", "icl", "--set", "method.alpha=0.4"))
    assert result.returncode == 0, result.stderr
    assert "device-logloss" in result.stdout and "Real A" in result.stdout
    [(run_id, method, metrics_json, _)] = stored_runs(tmp_path)
    assert method == "icl"
    metrics = json.loads(metrics_json)
    assert 0 <= metrics["device-logloss/acc/a"] <= 1
    files = {p.name for p in (tmp_path / "runs" / run_id).iterdir()}
    assert {"config.json", "metrics.json", "backbone.pt", "method.pt", "log.txt"} <= files
    config = json.loads((tmp_path / "runs" / run_id / "config.json").read_text())
    assert config["method"]["alpha"] == 0.4
    assert "epoch 3/3" in (tmp_path / "runs" / run_id / "log.txt").read_text()


def test_toy_model_learns(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "8"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(stored_runs(tmp_path)[0][2])
    assert metrics["device-logloss/acc/overall"] > 0.9  # three well separated tones


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harness: error:")
    for needle in needles:
        assert needle in lines[0]


def test_unknown_name_suggests_and_stores_nothing(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--method", "icll"))
    assert_one_line_error(result, "unknown method 'icll'", "Did you mean: icl?")
    assert stored_runs(tmp_path) == []
    assert not (tmp_path / "runs").exists()


def test_bad_set_value_names_it(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--method", "icl", "--set", "method.beta=strong"))
    assert_one_line_error(result, "method.beta", "'strong'")
    assert stored_runs(tmp_path) == []


def test_truncated_wav_names_file_and_stores_nothing(tmp_path):
    assert run_cli(*toy_run_args(tmp_path, "--epochs", "1")).returncode == 0
    victim = next((tmp_path / "tones").glob("tone1-1-*.wav"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # header still promises every frame
    result = run_cli(*toy_run_args(tmp_path, "--seed", "5"))
    assert_one_line_error(result, "truncated audio file", victim.name)
    assert len(stored_runs(tmp_path)) == 1  # only the first, complete run
    assert sf.info(str(victim)).frames > 0


def test_interrupted_run_leaves_no_record_and_no_folder(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--method", "interrupting"))
    assert result.returncode == 130
    assert "nothing was stored" in result.stderr
    assert stored_runs(tmp_path) == []
    leftovers = [p for p in (tmp_path / "runs").glob("*") if p.name != "results.sqlite"]
    assert leftovers == []


def test_debug_shows_traceback(tmp_path):
    result = run_cli("--debug", *toy_run_args(tmp_path, "--method", "icll"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_list_shows_plugin_description_and_parameters():
    result = run_cli("--plugin", str(TOY_PLUGIN), "list", "methods")
    assert result.returncode == 0, result.stderr
    assert "icl  [icl]" in result.stdout
    assert "alpha: float = 0.2" in result.stdout and "lambda_icl: float = 0.5" in result.stdout
    assert "interrupting" in result.stdout
    bad = run_cli("list", "metods")
    assert_one_line_error(bad, "unknown kind 'metods'", "methods")


def test_plugins_lists_builtins_and_local_files():
    result = run_cli("--plugin", str(TOY_PLUGIN), "plugins")
    assert result.returncode == 0, result.stderr
    assert "icl  (audio-tuning-harness" in result.stdout
    assert "hooks: register_methods" in result.stdout
    assert f"{TOY_PLUGIN}  (local)" in result.stdout
    provides = (
        "provides: backbone:toy, method:collapsing, method:interrupting, method:staged, "
        "dataset:toy-tones"
    )
    assert provides in result.stdout


def test_leaderboard_renders_stored_runs(tmp_path):
    for seed in ("0", "1"):
        assert run_cli(*toy_run_args(tmp_path, "--seed", seed)).returncode == 0
    store = str(tmp_path / "runs" / "results.sqlite")
    md = run_cli("--plugin", str(TOY_PLUGIN), "leaderboard", "--store", store)
    assert md.returncode == 0, md.stderr
    assert "## Best of seeds" in md.stdout and "## Mean over seeds ± 95 % CI" in md.stdout
    assert "| toy " in md.stdout and "Overall ↓" in md.stdout
    csv = run_cli(
        "--plugin",
        str(TOY_PLUGIN),
        "leaderboard",
        "--store",
        store,
        "--format",
        "csv",
        "--agg",
        "runs",
    )
    assert csv.returncode == 0 and len(csv.stdout.strip().splitlines()) == 3
    out = tmp_path / "board.tex"
    tex = run_cli(
        "--plugin",
        str(TOY_PLUGIN),
        "leaderboard",
        "--store",
        store,
        "--format",
        "latex",
        "--output",
        str(out),
    )
    assert tex.returncode == 0 and "\\begin{tabular}" in out.read_text()
    none = run_cli("--plugin", str(TOY_PLUGIN), "leaderboard", "--store", store, "--method", "icl")
    assert "no stored runs" in none.stdout


def test_plot_devices_draws_stored_runs(tmp_path):
    assert run_cli(*toy_run_args(tmp_path)).returncode == 0
    store = str(tmp_path / "runs" / "results.sqlite")
    out = tmp_path / "devices.png"
    result = run_cli(
        "--plugin", str(TOY_PLUGIN), "plot", "devices", "--store", store, "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = run_cli(
        "plot", "devices", "--store", str(tmp_path / "none.sqlite"), "--output", str(out), "--force"
    )
    assert_one_line_error(empty, "no stored device-logloss runs")
