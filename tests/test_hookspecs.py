"""Meta-tests: every hook is documented in hookspecs.py and in the plugin guide."""

import inspect
from pathlib import Path

import pytest

from harness.api import hookspecs

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
HOOKS = [
    name
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
]


def test_there_is_a_hook_per_plugin_kind_and_for_commands():
    assert set(HOOKS) == {
        "register_backbones",
        "register_methods",
        "register_augmentations",
        "register_datasets",
        "register_protocols",
        "register_loggers",
        "register_commands",
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and ":param" in doc
    assert f"`{hook}(" in GUIDE
