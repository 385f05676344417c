"""Issue 23 item 8: clip file names that try to leave the data set root.

Hypothesis builds file names for a data set's CSV from ``..``, ``.``, empty components,
absolute prefixes, real folder and file names, and symlinks that point inside or outside the
root. The oracle is independent of the harness's check: a name reaches a file outside the
root exactly when the file it opens (followed through every link) has the device and inode
of no entry under the root. Each name either loads (its file is inside the root, or
it does not exist) or stops the run with one line saying it resolves outside the root, and no
message ever quotes a planted file's content.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.api import Clip, DataSplits  # noqa: E402
from harness.run.preflight import check_clips_inside_root  # noqa: E402
from harness.util.errors import HarnessError  # noqa: E402
from tests.fuzzing import cases  # noqa: E402
from tests.test_untrusted_files import SECRET, esc50_with  # noqa: E402

FUZZ = cases(60)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``base/ESC-50`` (the root) with links in ``audio/``, and secrets outside it."""
    base = tmp_path_factory.mktemp("paths")
    root = base / "ESC-50"
    esc50_with(root, "1-0.wav")
    (base / "secret.wav").write_text(SECRET)
    (base / "ESC-50-evil").mkdir()  # a sibling whose name starts like the root's
    (base / "ESC-50-evil" / "x.wav").write_text(SECRET)
    audio = root / "audio"
    os.symlink(base / "secret.wav", audio / "out-link.wav")
    os.symlink(audio / "2-0.wav", audio / "in-link.wav")
    os.symlink(base / "ESC-50-evil", audio / "out-dir")
    os.symlink(audio, audio / "loop")
    return base


def inside_entries(root: Path) -> set[tuple[int, int]]:
    """Device and inode of the root and everything under it (links not followed)."""
    entries = [root]
    for folder, names, files in os.walk(root):
        entries += [Path(folder) / n for n in names + files]
    return {(s.st_dev, s.st_ino) for s in (os.lstat(p) for p in entries)}


def reaches_outside(path: Path, base: Path) -> bool:
    """The oracle: ``path`` opens something (followed through every link) that is not the
    root or an entry under it."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) not in inside_entries(base / "ESC-50")


PARTS = st.sampled_from(
    ["..", "..", ".", "", "audio", "ESC-50", "ESC-50-evil", "meta", "1-1.wav", "2-0.wav",
     "secret.wav", "x.wav", "out-link.wav", "in-link.wav", "out-dir", "loop"]
)  # fmt: skip


@st.composite
def hostile_names(draw, base: Path) -> str:
    name = "/".join(draw(st.lists(PARTS, min_size=1, max_size=6)))
    prefix = draw(st.sampled_from(["", "", "/", f"{base}/", f"{base}/ESC-50/audio/"]))
    return prefix + name


def check_one_line(err: HarnessError) -> str:
    text = str(err)
    assert "\n" not in text and SECRET not in text
    return text


@FUZZ
@given(data=st.data())
def test_a_generated_clip_name_loads_inside_the_root_or_is_refused(tree, data):
    from harness_plugins.datasets.esc50 import Esc50

    name = data.draw(hostile_names(tree))
    assert SECRET not in name
    root = tree / "ESC-50"
    meta = root / "meta" / "esc50.csv"
    clean = meta.read_text()
    try:
        lines = clean.splitlines()
        first = lines[1].split(",")
        first[0] = name
        meta.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
        try:
            splits = Esc50(Esc50.Config(root=root)).load()
        except HarnessError as err:  # a malformed name (empty, a folder): one line
            check_one_line(err)
            return
        path = root / "audio" / name
        try:
            check_clips_inside_root(splits, "esc50", allow_outside=False)
        except HarnessError as err:
            assert "resolves outside the data set root" in check_one_line(err)
            assert not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(
                os.path.realpath(root)
            ), f"{name} opens a file inside the root yet was refused"
            return
        assert not reaches_outside(path, tree), f"{name} reads a file outside the root"
    finally:
        meta.write_text(clean)


@FUZZ
@given(data=st.data(), segmented=st.booleans())
def test_a_clip_or_segment_reaching_a_planted_file_outside_is_always_refused(tree, data, segmented):
    root = tree / "ESC-50"
    name = data.draw(hostile_names(tree))
    path = root / "audio" / name
    inside = root / "audio" / "1-1.wav"
    clip = Clip(inside, 0, segments=[inside, path]) if segmented else Clip(path, 0)
    splits = DataSplits(["a"], [clip], [Clip(inside, 0)], 1.0, root=root)
    outside = reaches_outside(path, tree)
    try:
        check_clips_inside_root(splits, "x", allow_outside=False)
        refused = False
    except HarnessError as err:
        assert "resolves outside the data set root" in check_one_line(err)
        refused = True
    if outside:
        assert refused, f"{name} reaches a planted file outside the root"
    elif path.exists():
        assert not refused, f"{name} opens a file inside the root yet was refused"
    check_clips_inside_root(splits, "x", allow_outside=True)  # the override allows all


def test_the_tree_has_links_both_ways(tree):
    audio = tree / "ESC-50" / "audio"
    assert reaches_outside(audio / "out-link.wav", tree)
    assert reaches_outside(audio / "out-dir" / "x.wav", tree)
    assert not reaches_outside(audio / "in-link.wav", tree)
