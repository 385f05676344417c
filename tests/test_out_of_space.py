"""Issue 23 item 8: a disk that fills up half-way through a command.

A small tmpfs is mounted where the machine allows it (root with mount rights) and filled to
the last byte at a chosen stage of a real run: while the decoded-audio cache is built, at the
first training step and checkpoint, while the run folder is staged, and while the store row
is inserted; and before ``leaderboard --output`` and ``plot --output``. Elsewhere the same
cases run with an injected ``ENOSPC``: every file opened for writing under the folder fails
(SQLite writes below Python, so the store case needs the tmpfs). Each case asserts one line,
exit 2, no traceback, nothing half-written (no temporary file or folder, no cache entry
without its done marker), the store intact with no row, and, when training was kept in
``.partial``, an error line that says how to resume it.
"""

from __future__ import annotations

import builtins
import errno
import importlib
import io
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from harness.results.store import ResultStore
from harness.util import faults
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones, run_main
from tests.test_leaderboard import record

HOOKED_MODULES = (
    "harness.util.progress",
    "harness.util.cache",
    "harness.results.store",
    "harness.data.audio",
    "harness.run.record",
    "harness.run.checkpoints",
)
"""Modules that call the kill-test hook :func:`harness.util.faults.checkpoint`."""


class Disk:
    """A folder whose file system can be filled: a real tmpfs, or injected ``ENOSPC``."""

    def __init__(self, folder: Path, real: bool, monkeypatch) -> None:
        self.folder, self.real, self.monkeypatch = folder, real, monkeypatch

    def fill(self) -> None:
        if self.real:
            fill_to_the_last_byte(self.folder / "filler")
        else:
            inject_enospc(self.folder, self.monkeypatch)


def fill_to_the_last_byte(path: Path) -> None:
    for chunk in (1 << 16, 1):
        try:
            with path.open("ab") as handle:
                while True:
                    handle.write(b"\0" * chunk)
                    handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


def inject_enospc(folder: Path, monkeypatch) -> None:
    """Every ``open`` for writing under ``folder`` fails as on a full disk."""
    real_open = io.open
    root = str(folder.resolve())

    def full_open(file, mode="r", *args, **kwargs):
        writes = isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+")
        if writes and os.path.abspath(os.fspath(file)).startswith(root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)


def mount_tmpfs(folder: Path) -> bool:
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch):
    folder = tmp_path / "disk"
    folder.mkdir()
    real = request.param == "tmpfs"
    if real and not mount_tmpfs(folder):
        pytest.skip("mounting a tmpfs needs root and mount rights; the injected case runs")
    try:
        yield Disk(folder, real, monkeypatch)
    finally:
        if real:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_at(stage: str, disk: Disk, monkeypatch) -> list[str]:
    """Fill ``disk`` the first time the run reaches ``stage`` (a kill-test hook stage)."""
    reached: list[str] = []

    def hook(name: str) -> None:
        if not reached and (name == stage or name.startswith(f"{stage} ")):
            reached.append(name)
            disk.fill()

    for module in HOOKED_MODULES:
        monkeypatch.setattr(importlib.import_module(module), "checkpoint", hook)
    monkeypatch.setenv(faults.KILL_ENV, "set: progress bars call the hook")
    return reached


def half_written(folder: Path) -> list[str]:
    """Temporary files and folders, and cache entries without their done marker."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        temporary = name.endswith((".tmp", ".partial")) and name != ".partial"
        unfinished = path.is_dir() and path.parent.name == "audio" and not (path / ".done").exists()
        if temporary or "~" in name or unfinished:
            found.append(str(path))
    return found


def assert_one_line_exit_2(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("harness: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


def assert_store_intact_and_empty(store: Path) -> None:
    if store.exists():
        with sqlite3.connect(store) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not ResultStore(store).run_ids()


STAGES = {
    "cache build": "train audio",
    "first training step": "epoch",
    "checkpoint save": "checkpoint",
    "run folder staging": "staging",
    "store insert": "insert",
}


@pytest.mark.parametrize("stage", list(STAGES), ids=list(STAGES))
def test_a_disk_filling_up_during_a_run_is_one_line_and_leaves_nothing_half_written(
    tmp_path, capsys, monkeypatch, disk, stage
):
    if stage == "store insert" and not disk.real:
        pytest.skip("SQLite writes below Python's open: only a real full disk reaches it")
    make_tones(tmp_path / "tones")
    reached = fill_at(STAGES[stage], disk, monkeypatch)
    monkeypatch.setenv("HARNESS_CACHE", str(disk.folder / "cache"))
    store = disk.folder / "results.sqlite"
    args = toy_run_args(tmp_path, "--epochs", "1", "--set", "run.checkpoint_every_steps=1")
    args[args.index("--out") + 1] = str(disk.folder / "runs")
    code, err = run_main([*args, "--store", str(store), "--set", "run.workers=0"], capsys)
    assert reached, f"the run never reached {STAGES[stage]!r}"
    line = assert_one_line_exit_2(code, err)
    assert "No space left on device" in line or "disk is full" in line, line
    assert half_written(disk.folder) == []
    assert_store_intact_and_empty(store)
    partial = disk.folder / "runs" / ".partial"
    kept = sorted(partial.iterdir()) if partial.is_dir() else []
    if kept:  # training was kept: the line says how to continue it
        assert len(kept) == 1 and f"--resume {kept[0]}" in line, line
        assert (kept[0] / "rank0.pt").is_file()


def stored_board_store(folder: Path) -> Path:
    store = folder / "board.sqlite"
    ResultStore(store).add(record("r1", "ce", "none", 0, a=1.0, s4=1.5))
    return store


@pytest.mark.parametrize(
    "command",
    [
        ["leaderboard", "--output", "{out}/board.md"],
        ["leaderboard", "--format", "latex", "--output", "{out}/board.tex"],
        ["plot", "devices", "--output", "{out}/devices.png"],
    ],
    ids=["leaderboard-md", "leaderboard-latex", "plot-devices"],
)
def test_an_output_file_on_a_full_disk_is_one_line_and_not_half_written(
    tmp_path, capsys, disk, command
):
    store = stored_board_store(tmp_path)
    before = store.read_bytes()
    out = disk.folder / "out"
    out.mkdir()
    disk.fill()
    argv = [part.format(out=out) for part in command] + ["--store", str(store)]
    code, err = run_main(argv, capsys)
    line = assert_one_line_exit_2(code, err)
    assert "No space left on device" in line and str(out) in line, line
    assert list(out.iterdir()) == []
    assert store.read_bytes() == before


@pytest.mark.parametrize(
    ("code", "verb"),
    [
        (errno.ENOSPC, "write"),
        (errno.EDQUOT, "write"),
        (errno.EFBIG, "write"),
        (errno.EROFS, "write"),
        (errno.EACCES, "access"),
        (errno.EPERM, "access"),
    ],
)
def test_every_storage_errno_is_one_line_naming_the_file(code, verb):
    from harness.util.errors import naming, storage_error

    with pytest.raises(OSError) as info, naming("/out/run/metrics.jsonl"):
        raise OSError(code, os.strerror(code))  # as write() raises it: no file name
    error = storage_error(info.value)
    assert str(error) == f"cannot {verb} /out/run/metrics.jsonl: {os.strerror(code)}"
    assert error.exit_code == 2


def test_other_errors_are_not_storage_errors():
    from harness.util.errors import storage_error

    assert storage_error(OSError(errno.ENOENT, "No such file or directory", "x")) is None
    assert storage_error(sqlite3.OperationalError("no such table: runs")) is None
    assert storage_error(ValueError("x")) is None
    full = storage_error(sqlite3.OperationalError("database or disk is full"))
    assert str(full) == "the results store cannot be written: database or disk is full"
