"""Issue 23 item 8: read-only stores and output folders.

An output folder holding a store with one committed run is made read-only, by remounting a
tmpfs read-only where the machine allows a mount (root), or by ``chmod`` where that stops
writes (not for root, whom permission bits do not stop: skipped there with the reason).
Every command that would write (a run, ``store rm``, ``store check --repair`` with something
to repair, ``leaderboard --output``, ``plot --output``, a run whose cache folder is read-only)
stops with one line and exit 2, and the store and folder are byte for byte as they were;
commands that only read (``runs``, ``leaderboard``, ``store check``) still work.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness.results.store import ResultStore, commit_run
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones
from tests.test_leaderboard import record
from tests.test_tampered_results import run_cli

RUN_ID = "20260101-000000-000000-abcdef12-00000001"
ORPHAN_ID = "20260101-000000-000000-abcdef12-00000002"


def populate(out: Path, orphan: bool = False) -> None:
    """``out`` with a store holding one committed run and its folder (and, with ``orphan``,
    a row whose folder is missing: something for ``store check --repair`` to fix)."""
    store = ResultStore(out / "results.sqlite")
    run = record(RUN_ID, "ce", "none", 0, a=1.0, s4=1.5)
    run.run_dir = str(out / RUN_ID)

    def write(tmp: Path) -> None:
        (tmp / "record.json").write_text(json.dumps({"run_id": RUN_ID}))

    commit_run(out / RUN_ID, store, run, write)
    if orphan:
        lost = record(ORPHAN_ID, "ce", "none", 1, a=1.0, s4=1.5)
        lost.run_dir = str(out / ORPHAN_ID)
        store.add(lost)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def writes_are_refused(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return True
    probe.unlink()
    return False


@pytest.fixture(params=["ro-mount", "chmod"])
def read_only_out(request, tmp_path):
    yield from read_only_folder(request.param, tmp_path, orphan=False)


@pytest.fixture(params=["ro-mount", "chmod"])
def read_only_out_with_orphan(request, tmp_path):
    yield from read_only_folder(request.param, tmp_path, orphan=True)


def read_only_folder(how: str, tmp_path: Path, orphan: bool):
    out = tmp_path / "out"
    out.mkdir()
    if how == "ro-mount":
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out)], capture_output=True
        )
        if mounted.returncode:
            pytest.skip("mounting a tmpfs needs root and mount rights; the chmod case runs")
        populate(out, orphan)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        try:
            yield out
        finally:
            subprocess.run(["umount", "-l", str(out)], check=False)
        return
    populate(out, orphan)
    modes = {p: p.stat().st_mode for p in [out, *out.rglob("*")]}
    for path in modes:
        path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
    try:
        if not writes_are_refused(out):
            pytest.skip("permission bits do not stop this user (root); the ro-mount case runs")
        yield out
    finally:
        for path, mode in modes.items():
            path.chmod(stat.S_IMODE(mode))


def assert_one_line_and_untouched(code: int, err: str, out: Path, before: dict) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("harness: error:"), err
    assert "Traceback" not in err
    assert snapshot(out) == before
    return lines[0]


def test_a_run_into_a_read_only_output_folder_is_refused_before_work(
    tmp_path, capsys, read_only_out
):
    before = snapshot(read_only_out)
    make_tones(tmp_path / "tones")
    args = toy_run_args(tmp_path, "--epochs", "1")
    args[args.index("--out") + 1] = str(read_only_out)
    code, _, err = run_cli(args, capsys)
    line = assert_one_line_and_untouched(code, err, read_only_out, before)
    assert "epoch" not in err and str(read_only_out) in line


@pytest.mark.parametrize(
    "command",
    [
        ["store", "rm", RUN_ID],
        ["leaderboard", "--output", "{out}/board.md"],
        ["leaderboard", "--format", "csv", "--output", "{out}/sub/board.csv"],
        ["plot", "devices", "--output", "{out}/devices.png"],
    ],
    ids=["store-rm", "leaderboard-md", "leaderboard-csv-subfolder", "plot-devices"],
)
def test_a_command_writing_into_a_read_only_folder_is_one_line(capsys, read_only_out, command):
    before = snapshot(read_only_out)
    argv = [part.format(out=read_only_out) for part in command]
    argv += ["--store", str(read_only_out / "results.sqlite")]
    if command[0] == "store":
        argv += ["--out", str(read_only_out)]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_and_untouched(code, err, read_only_out, before)


def test_reading_commands_work_on_a_read_only_store(capsys, read_only_out):
    before = snapshot(read_only_out)
    store = str(read_only_out / "results.sqlite")
    for argv in (
        ["runs", "--store", store, "--out", str(read_only_out)],
        ["leaderboard", "--store", store],
        ["store", "check", "--store", store, "--out", str(read_only_out)],
    ):
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert RUN_ID in out or "consistent" in out or "1.0" in out, out
    assert snapshot(read_only_out) == before


def test_a_repair_on_a_read_only_store_is_one_line(capsys, read_only_out_with_orphan):
    """A row whose folder is missing needs a delete the read-only store refuses."""
    read_only_out = read_only_out_with_orphan
    before = snapshot(read_only_out)
    argv = ["store", "check", "--repair", "--out", str(read_only_out)]
    code, _, err = run_cli([*argv, "--store", str(read_only_out / "results.sqlite")], capsys)
    assert_one_line_and_untouched(code, err, read_only_out, before)


def test_a_read_only_cache_folder_is_one_line(tmp_path, capsys, monkeypatch, read_only_out):
    monkeypatch.setenv("HARNESS_CACHE", str(read_only_out / "cache"))
    before = snapshot(read_only_out)
    make_tones(tmp_path / "tones")
    args = toy_run_args(tmp_path, "--epochs", "1", "--set", "run.audio_cache=auto")
    code, _, err = run_cli(args, capsys)
    assert_one_line_and_untouched(code, err, read_only_out, before)
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != "results.sqlite"]
    assert os.environ["HARNESS_CACHE"].startswith(str(read_only_out))
