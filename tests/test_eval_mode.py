"""Tests that bite (issue 23, item 9): no protocol evaluates in training mode.

A backbone whose train and eval modes differ (``toy-moody``: in training mode its
embedding is swamped by noise, like heavy dropout) records the mode of every forward pass
made without gradients, i.e. every inference pass. For every protocol the toy data set
supports, every inference pass of the run (validation, health probes, the protocol's
predictions and embeddings) must be in eval mode; the test's own check that the moody
backbone is moody makes it able to fail.
"""

from __future__ import annotations

import pytest
import torch

from harness.cli.main import main
from tests.conftest import toy_run_args
from tests.test_hardening import make_tones

MOODY = r"""
import os

import torch
from harness import hookimpl
from tests.toy_plugin import ToyBackbone

INFERENCE_MODES = []


def record(training):
    INFERENCE_MODES.append(training)
    if os.environ.get("MOODY_LOG"):
        with open(os.environ["MOODY_LOG"], "a") as log:
            log.write("train\n" if training else "eval\n")


class Moody(ToyBackbone):
    name = "toy-moody"

    def forward(self, features):
        encoded = super().forward(features)
        if not torch.is_grad_enabled():
            record(self.training)
        if self.training:
            noise = 100 * torch.randn_like(encoded.embedding)
            tokens = encoded.tokens + noise.unsqueeze(1)
            return type(encoded)(embedding=encoded.embedding + noise, tokens=tokens)
        return encoded


@hookimpl
def register_backbones(register):
    register(Moody)
"""

PROTOCOLS = ["device-logloss", "device-probe", "linear", "finetune"]


@pytest.fixture
def moody(tmp_path):
    path = tmp_path / "moody.py"
    path.write_text(MOODY)
    return path


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_inference_pass_of_a_protocol_runs_in_eval_mode(
    tmp_path, moody, protocol, monkeypatch
):
    log = tmp_path / "modes.txt"
    monkeypatch.setenv("MOODY_LOG", str(log))
    make_tones(tmp_path / "tones")
    # with validation after each epoch, where the trained modules are still in train mode
    validate = ["--set", "run.valid_fraction=0.25"]
    args = toy_run_args(tmp_path, "--epochs", "2", "--protocol", protocol, *validate)
    args[args.index("toy", args.index("--backbone"))] = "toy-moody"
    main(["--plugin", str(moody), *args])
    modes = log.read_text().split()
    trained = modes.count("train")
    assert modes and not trained, f"{protocol}: {trained} of {len(modes)} passes in train mode"


def test_the_moody_backbone_differs_between_its_modes(moody):
    import importlib.util

    spec = importlib.util.spec_from_file_location("moody_check", moody)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backbone = module.Moody(module.Moody.Config())
    features = torch.randn(4, 1, 16, 10)
    with torch.no_grad():
        trained = backbone.train()(features).embedding
        evaluated = backbone.eval()(features).embedding
    assert (trained - evaluated).abs().mean() > 10
    assert module.INFERENCE_MODES == [True, False]
