"""The plugin guide's augmentation tutorial, run as written (docs/plugins.md)."""

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.api.testing import TinyBackbone, apply_augmentation, make_batch, make_task
from harness.registry.plugins import load_plugins

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    text = GUIDE.read_text()
    section = text.split("## Tutorial: a waveform augmentation", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    path = tmp_path_factory.mktemp("guide") / "random_gain.py"
    path.write_text(code)
    module = types.ModuleType("guide_random_gain")
    sys.modules[module.__name__] = module  # dataclasses resolve annotations through it
    exec(compile(code, str(path), "exec"), module.__dict__)
    yield module, path
    del sys.modules[module.__name__]


def test_gain_is_within_the_configured_decibels(tutorial):
    module, _ = tutorial
    task = make_task()
    batch = make_batch(task, TinyBackbone(), batch_size=8)
    out = apply_augmentation(module.RandomGain, task, batch, seed=0, max_db=6.0)
    ratio_db = 20 * torch.log10(out.abs().amax(1) / batch.wave.abs().amax(1))
    assert out.shape == batch.wave.shape
    assert ratio_db.abs().max() <= 6.0 + 1e-4 and ratio_db.std() > 0.1
    same = apply_augmentation(module.RandomGain, task, batch, seed=0, max_db=6.0)
    assert torch.equal(out, same)
    unchanged = apply_augmentation(module.RandomGain, task, batch, max_db=0.0)
    assert torch.allclose(unchanged, batch.wave)


def test_tutorial_file_loads_as_a_plugin(tutorial):
    _, path = tutorial
    entry = load_plugins([str(path)])["augmentation"].get("random-gain")
    assert entry.cls.stage == "waveform" and entry.plugin == str(path)
