"""The README's Tour works as written (issue 24, item 2): ``tools/tour.py --small`` runs each
line in a fresh folder with the line's ``[CI: ...]`` settings; every line must succeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from tour import TourLine, tour_lines  # noqa: E402

sys.path.remove(str(ROOT / "tools"))


def test_tour_lines_read_commands_and_ci_notes():
    readme = """## Tour

text

```bash
harness --help                           # fast
harness run --epochs 5   # [CI: --epochs 1 --set dataset.scale=0.05]
harness run ... --nproc 4   # 4 GPUs [CI: skip, needs GPUs]
```
"""
    assert tour_lines(readme) == [
        TourLine("harness --help"),
        TourLine("harness run --epochs 5", ci_args="--epochs 1 --set dataset.scale=0.05"),
        TourLine("harness run ... --nproc 4", ci_skip="needs GPUs"),
    ]


def test_every_readme_tour_line_is_a_harness_command():
    lines = tour_lines((ROOT / "README.md").read_text())
    assert len(lines) >= 15
    assert all(line.command.startswith("harness ") for line in lines)
    assert all(line.ci_skip or "..." not in line.command for line in lines)


@pytest.mark.slow
@pytest.mark.tour
def test_the_tour_runs_top_to_bottom_with_small_settings(tmp_path):
    for shared in ("configs", "leaderboards"):
        (tmp_path / shared).symlink_to(ROOT / shared)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tour.py"), "--small"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HARNESS_PROGRESS": "0"},
        timeout=3600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "tour: all" in done.stdout
