"""The README's figures reproduce (issue 24, item 1): rerun the quickstart's main job and
compare its printed overall log-loss with the README's table (between the
``quickstart-figures`` markers) within :data:`TOLERANCE`, so the README cannot drift.

One end-to-end run of the default main job (1-3 minutes on 2 cores); part of CI (marked
``reproduce``; deselect with ``-m "not reproduce"``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ["run", "--method", "icl", "--aug", "multidir"]
TOLERANCE = 0.01
"""Log-loss the printed overall may differ from the README's by. A run is deterministic on
a CPU given its seed, so the slack is for the README's rounding (3 decimals) and for other
patch versions of torch and numpy that the dependency ranges allow."""
START, END = "<!-- quickstart-figures", "<!-- /quickstart-figures -->"


def readme_figures(text: str) -> dict[str, dict[str, float]]:
    """``{command: {column: log-loss}}`` of the marked table (cells ``LOGLOSS / ACC %``)."""
    if START not in text or END not in text:
        raise ValueError("README.md has no quickstart-figures table")
    block = text[text.index(START) : text.index(END)]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    figures = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        command = re.search(r"`([^`]+)`", cells[0])
        values = {
            name: float(cell.split("/")[0])
            for name, cell in zip(header, cells, strict=True)
            if re.fullmatch(r"\d+\.\d+ / \d+(\.\d+)? %", cell)
        }
        if command:
            figures[command.group(1)] = values
    return figures


def printed_overall(stdout: str) -> float:
    """The overall log-loss of the printed device-logloss table."""
    match = re.search(r"^\|\s*Overall\s*\|\s*([0-9.]+)\s*\|", stdout, re.MULTILINE)
    if match is None:
        raise ValueError(f"no Overall row in the output:\n{stdout[-2000:]}")
    return float(match.group(1))


def test_readme_figures_parse_by_hand():
    text = f"""{START} -->
| command | wall time | real A-C | overall |
|---|---|---|---|
| `harness run --method icl` (main) | 113 s | 1.600 / 47.1 % | 1.764 / 41 % |
{END}
"""
    assert readme_figures(text) == {"harness run --method icl": {"real A-C": 1.6, "overall": 1.764}}
    table = "| device | log-loss | accuracy |\n|--|--|--|\n| Overall        | 1.7642 | 0.410 |"
    assert printed_overall(table) == 1.7642


@pytest.mark.slow
@pytest.mark.reproduce
def test_quickstart_reproduces_the_readmes_overall_logloss(tmp_path):
    expected = readme_figures((ROOT / "README.md").read_text())["harness " + " ".join(MAIN_JOB)]
    done = subprocess.run(
        [sys.executable, "-m", "harness", *MAIN_JOB, "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1800,
        env={**os.environ, "HARNESS_PROGRESS": "0"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    overall = printed_overall(done.stdout)
    assert overall == pytest.approx(expected["overall"], abs=TOLERANCE), (
        f"printed overall log-loss {overall:.3f}, README {expected['overall']:.3f}: update the "
        "README's quickstart-figures table from a fresh install (see its rows' commands)"
    )
