"""A 4-cell sweep on ``--executor local --jobs 2`` against the same sweep ``inline``.

Each round runs the whole sweep as a user would (fresh ``harness sweep`` processes, a fresh
output folder); the inline sweep runs in pytest-benchmark's untimed ``setup`` so both see
the same machine load. The ratio of the minima (inline / local) is printed and stored in
``extra_info``; the README reports it.

Run with ``python -m pytest tests/benchmarks/test_sweep_executors.py --benchmark-only -s``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.benchmarks.claims import idle
from tests.conftest import TOY_PLUGIN

SPEC = """
[sweep]
seeds = [0, 1]
[sweep.base]
backbone = {{ name = "toy" }}
dataset = {{ name = "toy-tones", root = "{root}", per_class = 60 }}
run = {{ epochs = 150, batch_size = 8 }}
[[sweep.grid]]
method = ["ce", "icl"]
"""


def sweep(spec: Path, out: Path, *args: str) -> float:
    command = [sys.executable, "-m", "harness", "--plugin", str(TOY_PLUGIN), "sweep", str(spec)]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--out", str(out), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "4 stored, 0 already stored, 0 failed" in result.stdout
    return time.perf_counter() - start


def test_local_jobs_2_against_inline(benchmark, tmp_path):
    root = tmp_path / "tones"
    root.mkdir()
    spec = tmp_path / "s.toml"
    spec.write_text(textwrap.dedent(SPEC.format(root=root)))
    rounds = itertools.count()
    inline: list[float] = []
    local = ("--executor", "local", "--jobs", "2")
    benchmark.pedantic(
        lambda: sweep(spec, tmp_path / f"local{next(rounds)}", *local),
        setup=lambda: inline.append(sweep(spec, tmp_path / f"inline{len(inline)}")),
        rounds=1,
        iterations=1,
    )
    ratio = min(inline) / benchmark.stats.stats.min
    benchmark.extra_info["inline_min_s"] = round(min(inline), 2)
    benchmark.extra_info["local_jobs_2_min_s"] = round(benchmark.stats.stats.min, 2)
    benchmark.extra_info["speedup"] = round(ratio, 3)
    print(
        f"\n4-cell sweep: inline {min(inline):.1f} s, local --jobs 2 "
        f"{benchmark.stats.stats.min:.1f} s: {ratio:.2f}x"
    )
    if idle():
        assert ratio > 1.0  # the README's claim: faster than inline
