"""Old module paths of the flat core still import, with a DeprecationWarning, for one release."""

import importlib
import sys

import pytest

from harness.util.moved import MOVED

OLD_NAMES = {
    "harness.config": ["domain_map", "Domain", "RunSettings", "RunConfig", "resolve"],
    "harness.testing": ["TinyBackbone", "make_batch", "make_task", "training_step"],
    "harness.pretrained": ["Pretrained", "fetch"],
    "harness.errors": ["UsageError", "DataError", "HarnessError"],
    "harness.impulse": ["convolve", "IRBank", "ImpulseResponseAugmentation"],
    "harness.cache": ["cache_root", "build_once"],
    "harness.layers": ["vit_block", "PatchEmbed"],
    "harness.hookspecs": ["hookimpl", "hookspec"],
    "harness.runner": ["run_experiment"],
    "harness.store": ["ResultStore"],
    "harness.checkpoints": ["load_backbone_checkpoint", "swap_prefix", "block_count"],
    "harness.leaderboard": ["LeaderboardSpec", "render_leaderboard"],
    "harness.dirgen": ["DirGenerator", "train_generator"],
}
"""Names plugins and notebooks used from the old modules (docs/plugins.md of 0.1)."""


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"^{old} moved to "):
        module = importlib.import_module(old)
    for name in OLD_NAMES.get(old, []):
        assert getattr(module, name) is vars(importlib.import_module(home_of(old, name)))[name]


def home_of(old: str, name: str) -> str:
    return next(home for home in MOVED[old] if name in vars(importlib.import_module(home)))


def test_a_name_no_home_has_is_an_import_error():
    sys.modules.pop("harness.config", None)
    with pytest.warns(DeprecationWarning), pytest.raises(ImportError, match="no_such_name"):
        exec("from harness.config import no_such_name", {})


def test_every_old_flat_module_has_a_home():
    """The 0.1 core's flat modules that are not packages now (api, data, engine, cli)."""
    flat = {
        "audio", "audio_cache", "cache", "checkpoints", "config", "dirgen", "distributed", "errors",
        "evaluation", "executors", "faults", "fbank", "hookspecs", "impulse", "layers",
        "leaderboard", "leaderboard_html", "metrics_log", "plugins", "pretrained", "progress",
        "resume", "runner",
        "store", "testing",
    }  # fmt: skip
    assert {name.removeprefix("harness.") for name in MOVED} >= flat
