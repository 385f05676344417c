"""Where outputs go (issue 24, item 6): plots of a run under its folder, other plots under
``runs/plots`` or an ``--output`` folder, and nothing overwritten without ``--force``."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.plot import png_path
from harness.util.errors import UsageError
from tests.conftest import TOY_PLUGIN, run_cli, toy_run_args

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_png_path_takes_a_file_or_a_folder_and_refuses_to_overwrite(tmp_path):
    runs = tmp_path / "runs" / "plots"
    assert png_path(None, "devices.png", runs, force=False) == runs / "devices.png"
    assert png_path(tmp_path / "figs", "devices.png", runs, False) == tmp_path / "figs/devices.png"
    assert png_path(tmp_path / "a.PNG", "devices.png", runs, False) == tmp_path / "a.PNG"
    (tmp_path / "a.png").write_bytes(b"old")
    with pytest.raises(UsageError, match=r"a\.png exists; --force overwrites it"):
        png_path(tmp_path / "a.png", "devices.png", runs, force=False)
    assert png_path(tmp_path / "a.png", "devices.png", runs, force=True) == tmp_path / "a.png"
    (tmp_path / "figs" / "devices.png").mkdir(parents=True)
    with pytest.raises(UsageError, match="is a folder"):
        png_path(tmp_path / "figs", "devices.png", runs, force=True)


def test_outputs_default_under_the_run_or_runs_plots_and_never_overwrite(tmp_path):
    assert run_cli(*toy_run_args(tmp_path)).returncode == 0
    store = tmp_path / "runs" / "results.sqlite"
    [folder] = [p for p in (tmp_path / "runs").iterdir() if (p / "record.json").is_file()]
    curves = run_cli("plot", "curves", "--run", folder.name, "--store", str(store))
    assert curves.returncode == 0, curves.stderr
    assert (folder / "plots" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    again = run_cli("plot", "curves", "--run", folder.name, "--store", str(store))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"harness: error: {folder / 'plots' / 'curves.png'} exists; --force overwrites it, "
        "--output writes elsewhere"
    )
    forced = run_cli("plot", "curves", "--run", folder.name, "--store", str(store), "--force")
    assert forced.returncode == 0, forced.stderr
    devices = ["--plugin", str(TOY_PLUGIN), "plot", "devices", "--store", str(store)]
    assert run_cli(*devices).returncode == 0
    assert (tmp_path / "runs" / "plots" / "devices.png").read_bytes()[:8] == PNG_MAGIC
    into = run_cli(*devices, "--output", str(tmp_path / "figures"))
    assert into.returncode == 0, into.stderr
    assert (tmp_path / "figures" / "devices.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(Path.cwd().glob("*.png"))  # nothing in the working folder
    board = tmp_path / "board.md"
    board.write_text("mine\n")
    leaderboard = ["--plugin", str(TOY_PLUGIN), "leaderboard", "--store", str(store)]
    refused = run_cli(*leaderboard, "--output", str(board))
    assert refused.returncode == 2 and f"{board} exists; --force overwrites it" in refused.stderr
    assert board.read_text() == "mine\n"
    forced = run_cli(*leaderboard, "--output", str(board), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "toy" in board.read_text() and "mine" not in board.read_text()
