"""The example plugin installs from its own folder into a fresh virtual environment.

pip resolves the plugin's dependency ``audio-tuning-harness`` (the distribution name)
from the project folder given in the same command; torch and the other dependencies come
from the interpreter's site-packages (``--system-site-packages``), so nothing large is
downloaded. CI runs the same steps (see docs/plugins.md, "Testing the package").
"""

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git", "build", "*.egg-info", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"
)


@pytest.mark.slow
def test_example_plugin_installs_with_the_project_by_its_new_name(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=IGNORE)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            str(project),
            str(project / "examples" / "harness-focal-loss"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    show = subprocess.run(
        [str(python), "-m", "pip", "show", "harness-focal-loss"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Requires: audio-tuning-harness" in show
    listed = subprocess.run(
        [str(env_dir / "bin" / "harness"), "plugins"], capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr
    assert "focal  (harness-focal-loss 0.1.0)" in listed.stdout
    assert "icl  (audio-tuning-harness 0.1.0)" in listed.stdout
