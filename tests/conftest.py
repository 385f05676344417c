"""Shared fixtures: a private cache, silent progress bars, and the toy plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TOY_PLUGIN = TESTS / "toy_plugin.py"
SHARED = TESTS.parents[1] / "shared"


def _drop_broken_lazy_modules() -> None:
    """speechbrain registers lazy modules whose attribute access raises ImportError when an
    optional dependency (k2) is absent; hypothesis scans ``sys.modules`` for ``__file__``
    and would crash on them. Unimportable ones are dropped from ``sys.modules``."""
    for name, module in sys.modules.copy().items():  # a copy: GC finalizers may import
        if name.startswith("speechbrain"):
            try:
                getattr(module, "__file__", None)
            except ImportError:
                sys.modules.pop(name, None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems() -> None:
    _drop_broken_lazy_modules()


def pytest_runtest_setup() -> None:
    _drop_broken_lazy_modules()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("HARNESS_STORE", raising=False)
    monkeypatch.delenv("HARNESS_PLUGINS", raising=False)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``harness`` in a subprocess, as a user would."""
    full_env = {**os.environ, "HARNESS_PROGRESS": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=600,
    )


def toy_run_args(tmp_path: Path, *extra: str) -> list[str]:
    """Arguments of a fast run on the toy plugin, storing under tmp_path."""
    data = tmp_path / "tones"
    data.mkdir(exist_ok=True)
    return [
        "--plugin",
        str(TOY_PLUGIN),
        "run",
        "--backbone",
        "toy",
        "--dataset",
        "toy-tones",
        "--method",
        "ce",
        "--aug",
        "none",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--set",
        f"dataset.root={data}",
        "--set",
        "run.lr=0.01",
        "--out",
        str(tmp_path / "runs"),
        *extra,
    ]


# Property-based fuzzing (tests/test_fuzz.py): a fixed, derandomized profile by default, so
# every run (and CI) draws the same cases; HYPOTHESIS_PROFILE=explore draws new ones.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    settings.register_profile(
        "explore", deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; only the fuzz tests need it
    pass
