"""The cache folder's building blocks: owner tags of temporary folders, which owners are
dead, which temporary folders are stale, and folders built once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.util import cache
from harness.util.cache import (
    DONE_MARKER,
    build_once,
    cache_root,
    host_name,
    owned_temp_dir,
    owner_alive,
    owner_tag,
    process_start,
    stale_temp_dirs,
    temp_owner,
)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_cache_root_expands_a_home_relative_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HARNESS_CACHE", "~/big/cache")
    assert cache_root() == tmp_path / "big" / "cache"
    monkeypatch.delenv("HARNESS_CACHE")
    assert cache_root() == tmp_path / ".cache" / "harness"


@pytest.mark.parametrize(
    ("name", "tag"), [("node-07.Cluster_A", "node-07-Cluster-A"), ("GPU1", "GPU1"), ("", "host")]
)
def test_host_names_become_tag_safe(monkeypatch, name, tag):
    monkeypatch.setattr(cache.socket, "gethostname", lambda: name)
    assert host_name() == tag


def test_process_start_is_field_22_of_proc_stat_even_with_a_parenthesis_in_the_name(
    monkeypatch,
):
    fields = " ".join(str(i) for i in range(3, 30))  # fields 3.. after "pid (comm)"
    stat = f"42 (we) ird) {fields}"

    class FakePath:
        def __init__(self, name):
            assert name == "/proc/42/stat"

        def read_text(self):
            return stat

    monkeypatch.setattr(cache, "Path", FakePath)
    assert process_start(42) == 22


def test_process_start_of_this_and_of_a_missing_process():
    text = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert process_start(os.getpid()) == int(text.rsplit(")", 1)[1].split()[19]) > 0
    assert process_start(dead_pid()) == 0


def test_owner_tags_name_this_process_and_tell_dead_owners(monkeypatch):
    pid = os.getpid()
    start = process_start(pid)
    assert owner_tag() == f"{host_name()}~{pid}~{start}"
    assert owner_alive(host_name(), pid, start)
    assert owner_alive(host_name(), pid, 0)  # no start time recorded: the pid decides
    assert not owner_alive(host_name(), pid, start + 1)  # the pid was reused
    assert not owner_alive(host_name(), dead_pid(), 0)
    assert owner_alive("another-host", dead_pid(), 5)  # cannot be checked from here
    monkeypatch.setattr(cache.os, "kill", lambda *a: (_ for _ in ()).throw(PermissionError()))
    assert owner_alive(host_name(), 1, 123)  # someone else's live process


def test_owned_temp_dirs_are_hidden_and_name_their_owner(tmp_path):
    folder = owned_temp_dir(tmp_path / "new" / "parent", "tau22")
    assert folder.parent == tmp_path / "new" / "parent" and folder.is_dir()
    assert folder.name.startswith(f".tau22.{owner_tag()}.")
    assert temp_owner(folder) == ("tau22", host_name(), os.getpid(), process_start(os.getpid()))
    assert temp_owner(tmp_path / "tau22") is None


def test_stale_temp_dirs_searches_each_parent_to_its_depth(tmp_path):
    gone = dead_pid()

    def dead(parent: Path, name: str) -> Path:
        path = parent / f".{name}.{host_name()}~{gone}~0.x1"
        path.mkdir(parents=True)
        return path

    first, second = tmp_path / "one", tmp_path / "two"
    top = dead(first, "a")
    mine = owned_temp_dir(first, "live")
    nested = dead(first / "sub", "b")
    deeper = dead(first / "sub" / "subsub", "c")
    dead(first / ".hidden", "d")
    done = first / "finished"
    dead(done, "e")
    (done / DONE_MARKER).write_text("done\n")
    (first / "link").symlink_to(dead(tmp_path / "elsewhere", "f"), target_is_directory=True)
    (first / "plain-file").write_text("x")
    other = dead(second, "g")
    missing = tmp_path / "missing"
    assert stale_temp_dirs([missing, first, second]) == [top, other]
    assert sorted(stale_temp_dirs([first], depth=2)) == sorted([top, nested])
    assert sorted(stale_temp_dirs([first], depth=3)) == sorted([top, nested, deeper])
    assert mine not in stale_temp_dirs([first], depth=3)


def test_build_once_builds_in_a_temporary_folder_and_marks_it_done(tmp_path, monkeypatch):
    reached: list[str] = []
    monkeypatch.setattr(cache, "checkpoint", reached.append)
    gone = dead_pid()
    ours = tmp_path / f".gen.{host_name()}~{gone}~0.x1"
    theirs = tmp_path / f".other.{host_name()}~{gone}~0.x1"
    ours.mkdir()
    theirs.mkdir()
    target = tmp_path / "gen"
    target.mkdir()
    (target / "half-written").write_text("x")  # an unfinished folder: built again

    def build(tmp: Path) -> None:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".gen.{owner_tag()}.")
        (tmp / "data").write_text("1")

    assert build_once(target, build) == target
    assert sorted(p.name for p in target.iterdir()) == [DONE_MARKER, "data"]
    marker = json.loads((target / DONE_MARKER).read_text())
    assert list(marker["files"]) == ["data"] and marker["files"]["data"][0] == 1
    assert reached == ["discard", "generate"]  # the unfinished folder moved aside, then built
    assert not ours.exists() and theirs.exists()  # only its own name's stale folders
    assert build_once(target, lambda tmp: pytest.fail("built twice")) == target


def test_a_failed_build_leaves_nothing(tmp_path):
    def build(tmp: Path) -> None:
        (tmp / "part").write_text("1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(tmp_path / "gen", build)
    assert list(tmp_path.iterdir()) == []
