"""Tests that catch wiring bugs (issue 12, item 9): each fails on one planted bug.

Planted and seen failing: ICL term dropped from the loss; ``targets`` for ``targets.T`` in
NNCLR's swapped term; Overall as the mean of devices; a group pooled instead of the mean
of its devices; TAU22's empty-field and ``filename``-column checks removed; command-line
flags overriding ``--set``. (Interrupts in staging, the store-insert cleanup, and exact
types after coercion are in test_hardening.py and test_domains.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss as sk_log_loss

from harness.api import Batch, Encoded
from harness.cli.main import raw_config
from harness.registry.config import resolve
from harness.registry.plugins import load_plugins
from harness.util.errors import DataError
from harness_plugins.protocols.device_logloss import device_metrics
from tests.test_nnclr import hand_method, unit


def test_icl_training_loss_is_ce_plus_lambda_times_the_hand_computed_icl_term():
    from harness_plugins.methods.icl import InverseContrastive

    method = InverseContrastive(
        InverseContrastive.Config(alpha=0.2, beta=1.0, lambda_icl=0.5, normalize=False)
    )
    method.head = lambda encoded: encoded.embedding  # logits = embedding (2 classes)
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    batch = Batch(
        wave=z,
        label=torch.tensor([0, 1, 1]),
        device=torch.tensor([0, 0, 1]),
        index=torch.arange(3),
        features=z,
    )
    out = method.training_step(batch, lambda x: Encoded(embedding=x, tokens=x[:, None]))
    ce = (math.log(2) + math.log(math.exp(3) + 1) + math.log(math.exp(4) + 1)) / 3
    icl = (2 * math.exp(0.2 - 3.0) + 2 * 16.0 + 2 * 1.0) / 6  # distances 3, 4, 1
    assert out.loss.item() == pytest.approx(ce + 0.5 * icl, rel=1e-6)


def soft_row(logits: list[float], targets: list[float]) -> float:
    """``-sum_j t_j log softmax(logits)_j`` by hand."""
    lse = math.log(sum(math.exp(v) for v in logits))
    return sum(t * (lse - v) for t, v in zip(targets, logits, strict=True))


def test_nnclr_swapped_term_uses_the_transposed_targets():
    method = hand_method(symmetric=True)
    z_anchor = unit([[0.9, 0.1], [0.2, 0.8]])
    p_positive = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z_positive = unit([[0.1, 0.9], [-0.9, 0.1]])
    p_anchor = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    targets = torch.tensor([[0.7, 0.3], [0.2, 0.8]])  # asymmetric: T != T.T
    forward = (soft_row([2, 1.2], [0.7, 0.3]) + soft_row([0, 1.6], [0.2, 0.8])) / 2
    swapped = (soft_row([2, 0], [0.7, 0.2]) + soft_row([0, -2], [0.3, 0.8])) / 2
    loss = method.contrastive_loss(z_anchor, p_anchor, z_positive, p_positive, targets)
    assert loss.item() == pytest.approx((forward + swapped) / 2, rel=1e-6)


def test_overall_pools_clips_and_groups_average_devices_with_unequal_sizes():
    rng = np.random.default_rng(0)
    counts = {"a": 40, "b": 5, "c": 15, "s1": 3}
    devices = [d for d, n in counts.items() for _ in range(n)]
    n = len(devices)
    probs = rng.dirichlet(np.ones(3), size=n)
    labels = rng.integers(0, 3, size=n)
    metrics = device_metrics(probs, labels, devices)
    per_device = {
        d: sk_log_loss(
            labels[np.array(devices) == d], probs[np.array(devices) == d], labels=range(3)
        )
        for d in counts
    }
    pooled = sk_log_loss(labels, probs, labels=range(3))
    mean_of_devices = np.mean(list(per_device.values()))
    assert metrics["logloss/overall"] == pytest.approx(pooled)
    assert abs(pooled - mean_of_devices) > 1e-3  # the two readings differ on this data
    real = [per_device[d] for d in ("a", "b", "c")]
    real_pooled = sk_log_loss(labels[:60], probs[:60], labels=range(3))
    assert metrics["logloss/real"] == pytest.approx(np.mean(real))
    assert abs(np.mean(real) - real_pooled) > 1e-3


def write_tau22(root, meta_rows, header=("filename", "scene_label", "identifier", "source_label")):
    (root / "evaluation_setup").mkdir(parents=True)
    lines = ["\t".join(header), *("\t".join(r) for r in meta_rows)]
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    fold = "filename\tscene_label\naudio/park-paris-1-2-0-a.wav\tpark\n"
    (root / "evaluation_setup" / "fold1_train.csv").write_text(fold)
    (root / "evaluation_setup" / "fold1_evaluate.csv").write_text(fold)


def test_tau22_empty_field_is_an_error_naming_the_line(tmp_path):
    from harness_plugins.datasets._tau22_layout import load_tau22

    write_tau22(tmp_path, [("audio/park-paris-1-2-0-a.wav", "park", "", "a")])
    with pytest.raises(DataError, match=r"meta\.csv: line 2: empty 'identifier'"):
        load_tau22(tmp_path)


def test_tau22_without_a_filename_column_is_an_error(tmp_path):
    from harness_plugins.datasets._tau22_layout import load_tau22

    header = ("file", "scene_label", "identifier", "source_label")
    write_tau22(tmp_path, [("audio/park-paris-1-2-0-a.wav", "park", "p-1", "a")], header)
    with pytest.raises(DataError, match=r"missing column 'filename'"):
        load_tau22(tmp_path)


def test_precedence_defaults_config_file_flags_set(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[run]\nepochs = 5\nseed = 4\n[method]\nname = "icl"\nalpha = 0.3\n')
    flags = {"epochs": 3, "method": "ce", "seed": None, "batch_size": None, "device": None}
    plugins = load_plugins()
    both = resolve(raw_config(str(config), flags, ("run.epochs=7", "method.name=icl")), plugins)
    assert both.run.epochs == 7 and both.method.name == "icl"  # --set beats flags
    assert both.method.config.alpha == 0.3 and both.run.seed == 4  # the file beats defaults
    flag_only = resolve(raw_config(str(config), {**flags, "method": "icl"}, ()), plugins)
    assert flag_only.run.epochs == 3  # flags beat the file
    file_only = resolve(raw_config(str(config), {}, ()), plugins)
    assert file_only.run.epochs == 5 and file_only.run.batch_size == 32  # file beats defaults


def test_icl_loss_changes_with_lambda():
    from harness_plugins.methods.icl import InverseContrastive

    z = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    batch = Batch(
        wave=z,
        label=torch.tensor([0, 1, 0]),
        device=torch.tensor([0, 1, 0]),
        index=torch.arange(3),
        features=z,
    )
    losses = []
    for lam in (0.0, 1.0):
        method = InverseContrastive(InverseContrastive.Config(lambda_icl=lam))
        method.head = lambda encoded: encoded.embedding
        out = method.training_step(batch, lambda x: Encoded(embedding=x, tokens=x[:, None]))
        losses.append(out.loss.item())
    assert losses[0] == pytest.approx(F.cross_entropy(z, batch.label).item())
    assert losses[1] > losses[0]


def test_param_groups_decay_lr_per_layer_and_exempt_biases_norms_and_tokens():
    """Two blocks under a stem and a norm: layers 0 (stem), 1, 2, 3 (above); with lr 1 and
    layer decay 0.5 the rates are 0.5^(3 - layer); only matrices get weight decay."""
    from torch import nn

    from harness.api import Backbone

    class Two(Backbone):
        name, description, sample_rate = "two", "test", 16000
        stem_prefixes = ("stem", "cls_token", "pos_embed")

        def __init__(self) -> None:
            super().__init__(None)
            self.stem = nn.Linear(2, 4)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
            self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
            self.norm = nn.LayerNorm(4)

    model = Two()
    model.blocks[0].bias.requires_grad = False
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = [
        (g["layer"], g["lr"], g["weight_decay"], sorted(name_of[id(p)] for p in g["params"]))
        for g in model.param_groups(lr=1.0, layer_decay=0.5, weight_decay=0.05)
    ]
    assert groups == [
        (0, 0.125, 0.0, ["cls_token", "pos_embed", "stem.bias"]),
        (0, 0.125, 0.05, ["stem.weight"]),
        (1, 0.25, 0.05, ["blocks.0.weight"]),
        (2, 0.5, 0.0, ["blocks.1.bias"]),
        (2, 0.5, 0.05, ["blocks.1.weight"]),
        (3, 1.0, 0.0, ["norm.bias", "norm.weight"]),
    ]
    plain = model.param_groups(lr=2.0)
    assert {g["lr"] for g in plain} == {2.0} and {g["weight_decay"] for g in plain} == {0.0}
    assert model.layer_of("stem.weight") == 0 and model.layer_of("head.weight") == 3


def test_preflight_checks_every_file_of_every_split_once(tmp_path, monkeypatch):
    from harness.api import Clip, DataSplits
    from harness.run import preflight

    seen = []
    monkeypatch.setattr(preflight, "check_header", seen.append)
    paths = {name: tmp_path / f"{name}.wav" for name in ("t", "e", "v", "s1", "s2")}
    splits = DataSplits(
        ["x"],
        train=[Clip(paths["t"], 0), Clip(paths["t"], 0)],
        eval=[Clip(paths["e"], 0), Clip(paths["s1"], 0, segments=(paths["s1"], paths["s2"]))],
        clip_seconds=1.0,
        valid=[Clip(paths["v"], 0)],
    )
    preflight.check_audio_headers(splits)
    assert seen == [paths[k] for k in ("t", "v", "e", "s1", "s2")]  # SPLIT_NAMES order


def test_run_records_name_the_data_generator_and_the_blocks_trained():
    from harness.run.record import environment
    from harness.run.training import describe_blocks

    module_level = load_plugins()["dataset"].get("tau22-embedded").cls
    assert environment(module_level)["data_generator_version"] == 1
    assert environment(None)["data_generator_version"] is None
    assert describe_blocks(None) == "as set up"
    assert describe_blocks(0) == "none (backbone frozen)"
    assert describe_blocks(1) == "top 1"


def test_git_commit_is_the_checkout_head_or_empty(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    import harness
    from harness.run import record as runner

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True,
        cwd=Path(harness.__file__).parent,
    )  # fmt: skip
    expected = head.stdout.strip() if head.returncode == 0 else ""
    monkeypatch.chdir(tmp_path)  # wherever the command runs, the harness checkout counts
    assert runner.git_commit() == expected
    monkeypatch.setattr(harness, "__file__", str(tmp_path / "harness" / "__init__.py"))
    (tmp_path / "harness").mkdir()
    assert runner.git_commit() == ""  # not a git checkout


def test_every_command_line_flag_lands_in_its_config_section():
    flags = {
        "backbone": "beats", "method": "icl", "dataset": "esc50", "aug": "multidir+vintage",
        "protocol": "fewshot", "epochs": 3, "batch_size": 4, "seed": 2, "device": "cpu",
    }  # fmt: skip
    assert raw_config(None, flags, ()) == {
        "backbone": {"name": "beats"}, "method": {"name": "icl"}, "dataset": {"name": "esc50"},
        "aug": {"names": "multidir+vintage"}, "protocol": {"names": "fewshot"},
        "run": {"epochs": 3, "batch_size": 4, "seed": 2, "device": "cpu"},
    }  # fmt: skip
    # an empty --aug still names "no augmentation"; unset flags leave the sections alone
    assert raw_config(None, {"aug": "", "backbone": None, "seed": None}, ()) == {
        "aug": {"names": ""}, "run": {},
    }  # fmt: skip


def test_the_in_progress_folder_holds_its_config_and_a_timestamped_state(tmp_path):
    import datetime
    import json

    from harness.engine.resume import remove_partial, start_partial, write_state

    folder = tmp_path / ".partial" / "run1"
    start_partial(folder, {"b": 1, "a": {"c": 2}})
    start_partial(folder, {"b": 1, "a": {"c": 2}})  # again, e.g. by a resumed run
    assert (folder / "config.json").read_text() == json.dumps(
        {"a": {"c": 2}, "b": 1}, indent=2, sort_keys=True
    )
    write_state(folder, {"global_step": 5})
    state = json.loads((folder / "state.json").read_text())
    assert state["global_step"] == 5 and set(state) == {"global_step", "updated"}
    updated = datetime.datetime.fromisoformat(state["updated"])
    assert updated.tzinfo is not None and updated.microsecond == 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "state.json"]
    (tmp_path / ".partial" / "run2").mkdir()
    remove_partial(folder)
    assert not folder.exists() and (tmp_path / ".partial").is_dir()  # another run's is kept
    remove_partial(tmp_path / ".partial" / "run2")
    assert not (tmp_path / ".partial").exists()
