"""Sweeps: grid expansion, resumption without duplicates, failures that do not stop the sweep."""

import sqlite3
import textwrap

import pytest

from harness.cli.sweep import expand
from harness.util.errors import UsageError
from tests.conftest import TOY_PLUGIN, run_cli


def test_expand_is_the_union_of_grids_times_seeds():
    sweep = {
        "base": {"run": {"epochs": 2}},
        "seeds": [0, 1],
        "grid": [{"method": ["ce"], "aug": ["none", "vintage"]}, {"method.alpha": [0.0, 1.5]}],
    }
    points = expand(sweep, "x.toml")
    assert len(points) == (2 + 2) * 2
    label, raw = points[0]
    assert label == "method=ce, aug=none, seed=0"
    assert raw == {
        "run": {"epochs": 2, "seed": 0},
        "method": {"name": "ce"},
        "aug": {"names": "none"},
    }
    assert points[-1][1]["method"] == {"alpha": 1.5}


def test_unknown_sweep_key_is_rejected():
    with pytest.raises(UsageError, match="unknown key 'sweep.seed'"):
        expand({"seed": [0]}, "x.toml")


def write_sweep(path, methods, roots, seeds="[0, 1]"):
    path.write_text(
        textwrap.dedent(
            f"""
            [sweep]
            seeds = {seeds}
            [sweep.base]
            backbone = {{ name = "toy" }}
            dataset = {{ name = "toy-tones" }}
            run = {{ epochs = 1, batch_size = 8 }}

            [[sweep.grid]]
            method = {methods}
            "dataset.root" = {roots}
            """
        )
    )
    return path


def count_runs(tmp_path):
    with sqlite3.connect(tmp_path / "runs" / "results.sqlite") as conn:
        return conn.execute(
            "SELECT config_hash, COUNT(*) FROM runs GROUP BY config_hash"
        ).fetchall()


def sweep_cli(tmp_path, sweep_file):
    return run_cli(
        "--plugin", str(TOY_PLUGIN), "sweep", str(sweep_file), "--out", str(tmp_path / "runs")
    )


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    data = tmp_path / "tones"
    data.mkdir()
    # 'interrupting' raises KeyboardInterrupt on its second step, like Ctrl-C.
    first = write_sweep(tmp_path / "a.toml", '["ce", "interrupting"]', f'["{data}"]')
    result = sweep_cli(tmp_path, first)
    assert result.returncode == 130
    assert sum(n for _, n in count_runs(tmp_path)) == 2  # ce seeds 0 and 1 finished

    second = write_sweep(tmp_path / "b.toml", '["ce", "icl"]', f'["{data}"]')
    result = sweep_cli(tmp_path, second)
    assert result.returncode == 0, result.stderr
    assert "2 stored, 2 already stored, 0 failed" in result.stdout
    counts = count_runs(tmp_path)
    assert len(counts) == 4 and all(n == 1 for _, n in counts)


def test_failed_run_does_not_stop_the_sweep(tmp_path):
    data = tmp_path / "tones"
    data.mkdir()
    sweep_file = write_sweep(
        tmp_path / "s.toml", '["ce"]', f'["{tmp_path / "missing"}", "{data}"]', "[0]"
    )
    result = sweep_cli(tmp_path, sweep_file)
    assert result.returncode == 2
    assert "1 stored, 0 already stored, 1 failed" in result.stdout
    assert "toy data root not found" in result.stderr
    assert sum(n for _, n in count_runs(tmp_path)) == 1


def test_sweep_file_with_unknown_key_leaves_store_untouched(tmp_path):
    sweep_file = tmp_path / "bad.toml"
    sweep_file.write_text('[sweep]\nseeds = [0]\ngird = [{ method = ["ce"] }]\n')
    result = sweep_cli(tmp_path, sweep_file)
    assert result.returncode == 2
    assert result.stderr.strip() == f"harness: error: unknown key 'sweep.gird' in {sweep_file}"
    assert not (tmp_path / "runs").exists()
