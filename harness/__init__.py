"""harness: a plugin-based benchmark harness for tuning audio transformers."""

import os
from importlib.metadata import PackageNotFoundError, version

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning
# threads slowed training steps up to 20x. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from harness.api.hookspecs import hookimpl
from harness.util import moved

DISTRIBUTION = "audio-tuning-harness"
"""The name on the package index (PyPI's ``harness`` is an unrelated project)."""

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

moved.install()  # old module paths (harness.config, harness.testing, ...) for one release

__all__ = ["__version__", "hookimpl"]
