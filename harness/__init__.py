"""harness: a plugin-based benchmark harness for tuning audio transformers."""

from importlib.metadata import PackageNotFoundError, version

from harness.hookspecs import hookimpl

try:
    __version__ = version("harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
