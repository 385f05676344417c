"""Distribution name, dependency ranges, lock file and the versions every run records."""

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import harness
from harness.run.experiment import KEY_PACKAGES, environment

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_distribution_name_is_not_pypis_harness():
    assert PYPROJECT["project"]["name"] == harness.DISTRIBUTION == "audio-tuning-harness"
    assert distribution(harness.DISTRIBUTION).entry_points.select(group="harness")
    assert PYPROJECT["project"]["scripts"] == {"harness": "harness.cli.main:main"}


def test_dependencies_are_ranges_and_the_installed_torch_satisfies_them():
    reqs = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    assert not [str(r) for r in reqs if any(s.operator in ("==", "===") for s in r.specifier)]
    by_name = {r.name: r for r in reqs}
    for name in ("torch", "torchaudio"):
        assert by_name[name].specifier.contains(version(name))


def lock_pins() -> dict[str, str]:
    return {
        canonicalize_name(name): pin
        for name, pin in (
            line.split("==")
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if line and not line.startswith("#")
        )
    }


def installed(name: str):
    try:
        return distribution(name)
    except PackageNotFoundError:
        return None


def installed_from_lock(pins: dict[str, str]) -> bool:
    """Whether this environment came from ``pip install -r requirements.lock``: pip marks
    every package named on its command line or in a ``-r`` file as REQUESTED, while an
    install from the ranges (``pip install -e .``) requests none of the dependencies."""
    dists = [d for d in map(installed, pins) if d is not None]
    return bool(dists) and all(d.read_text("REQUESTED") is not None for d in dists)


def test_installed_from_lock_is_told_by_pips_requested_markers(tmp_path, monkeypatch):
    site = tmp_path / "site"
    for name, requested in (("alpha", True), ("beta", False)):
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        if requested:
            (info / "REQUESTED").write_text("")
    monkeypatch.syspath_prepend(str(site))
    assert installed_from_lock({"alpha": "1.0"})
    assert not installed_from_lock({"alpha": "1.0", "beta": "1.0"})  # beta came as a dependency
    assert not installed_from_lock({"not-installed-anywhere": "1.0"})


def test_lock_pins_exactly_the_installed_versions_when_installed_from_it():
    """Compared only in an environment installed from the lock (detected, no flag): an
    install from the README's ranges may resolve to other patch versions and still pass."""
    pins = lock_pins()
    if not installed_from_lock(pins):
        pytest.skip("this environment was installed from the ranges, not requirements.lock")
    differ = {n: (p, version(n)) for n, p in pins.items() if installed(n) and version(n) != p}
    assert differ == {}


def test_lock_pins_satisfy_each_others_requirements():
    """The lock installs on a fresh venv: no pin contradicts a pinned package's requirement
    (the failure of a setuptools 65.5.0 pin against torch's setuptools>=77.0.3)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from write_lock import conflicts
    finally:
        sys.path.remove(str(ROOT / "tools"))
    pins = lock_pins()
    assert conflicts(pins) == []
    assert conflicts({**pins, "setuptools": "65.5.0"}) == (
        [f"torch=={pins['torch']} needs setuptools>=77.0.3 but the lock pins 65.5.0"]
        if installed("torch") and version("torch") == pins["torch"]
        else []
    )
    for name in ("setuptools", "torch", "torchaudio"):
        assert name in pins
    assert Version(pins["setuptools"]) >= Version("77.0.3")


def test_environment_records_key_packages_and_generator_version():
    from harness_plugins.datasets.tau22_embedded import GENERATOR_VERSION, Tau22Embedded

    env = environment(Tau22Embedded)
    assert set(env["packages"]) == set(KEY_PACKAGES)
    assert env["packages"]["torch"] == version("torch")
    assert env["packages"]["scikit-learn"] == version("scikit-learn")
    assert env["data_generator_version"] == GENERATOR_VERSION == 1
    assert environment(None)["data_generator_version"] is None


def test_embedded_generator_prints_a_summary_once(tmp_path, capsys):
    from harness_plugins.datasets.tau22_embedded import generate, scaled_sizes

    sizes = scaled_sizes(1000, 120, 2, 70, scale=0.02)
    folder = generate(tmp_path, 0, sizes)
    err = capsys.readouterr().err
    clips = len(list(folder.rglob("*.wav")))
    assert f"generated {clips} clips (" in err and f"MB) into {folder}" in err
    generate(tmp_path, 0, sizes)
    assert "generated" not in capsys.readouterr().err
