"""Distribution name, dependency ranges, lock file and the versions every run records."""

import os
import tomllib
from importlib.metadata import distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


@pytest.mark.skipif(
    not os.environ.get("HARNESS_FROM_LOCK"),
    reason="the environment was not installed from requirements.lock (set HARNESS_FROM_LOCK=1)",
)
def test_lock_pins_exactly_the_installed_versions():
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("torch", "torchaudio", "numpy", "scipy", "scikit-learn", "pluggy"):
        assert pins[name] == version(name), name


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
