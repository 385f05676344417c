"""What a run records besides its metrics: the moving average of the weights (``run.ema``),
per-clip predictions (``--log-samples``), parameter counts and the resolved configuration in
the run log, and the command line and dirty-tree flag in its provenance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn

import harness
import harness.notebook as hn
from harness.engine.ema import WeightAverage
from harness.registry.config import hashed_config
from tests.conftest import TOY_PLUGIN, run_cli, toy_run_args
from tests.test_resume import finished


def test_the_average_follows_decay_times_average_plus_the_rest_times_the_weights():
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average = WeightAverage({"backbone": layer}, decay=0.5)
    expected = 1.0
    for value in (2.0, 4.0, -1.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
        expected = 0.5 * expected + 0.5 * value
        assert float(average.weights()["backbone"]["weight"]) == pytest.approx(expected)
    with average.swapped_in():
        assert float(layer.weight) == pytest.approx(expected)  # 1.125
    assert float(layer.weight) == -1.0  # the live weights are back
    restored = WeightAverage({"backbone": nn.Linear(1, 1, bias=False)}, decay=0.5)
    restored.load(average.state())
    assert restored.updates == 3
    assert float(restored.weights()["backbone"]["weight"]) == pytest.approx(expected)


def test_new_run_settings_at_their_defaults_leave_the_config_hash_alone():
    cfg = hn.configure(backbone="passt", method="icl", aug="multidir")
    hashed = hashed_config(cfg.as_dict())["run"]
    assert not {"ema", "log_samples", "log_every"} & set(hashed)  # earlier runs keep hashes
    with_ema = hn.configure(backbone="passt", method="icl", aug="multidir", sets=["run.ema=0.99"])
    assert hashed_config(with_ema.as_dict())["run"]["ema"] == 0.99
    assert with_ema.config_hash() != cfg.config_hash()
    logging = hn.configure(backbone="passt", method="icl", aug="multidir", log_samples=True)
    assert logging.config_hash() == cfg.config_hash()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same toy run twice: plain, and with run.ema and --log-samples."""
    folders = []
    for name, extra in (("plain", ()), ("ema", ("--set", "run.ema=0.9", "--log-samples"))):
        tmp = tmp_path_factory.mktemp(name)
        result = run_cli(*toy_run_args(tmp, "--epochs", "2", *extra))
        assert result.returncode == 0, result.stderr
        folders.append(finished(tmp / "runs"))
    return folders[0], folders[1]


def metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


def test_ema_leaves_the_live_weights_metrics_bit_identical_and_adds_its_own(two_runs):
    plain, ema = two_runs
    live = {k: v for k, v in metrics(ema).items() if not k.startswith("ema/")}
    assert live == metrics(plain)
    averaged = {k[4:]: v for k, v in metrics(ema).items() if k.startswith("ema/")}
    assert set(averaged) == {k for k in metrics(plain) if k.startswith("device-logloss/")}
    assert averaged != {k: metrics(plain)[k] for k in averaged}  # other weights, other numbers
    assert "ema/device-logloss" in (ema / "tables.md").read_text()
    weights = torch.load(ema / "ema.pt", weights_only=True)
    backbone = torch.load(ema / "backbone.pt", weights_only=True)
    assert set(weights) == {"backbone", "method"} and set(weights["backbone"]) == set(backbone)
    assert not (plain / "ema.pt").exists()
    assert not any(torch.equal(weights["backbone"][k], backbone[k]) for k in backbone
                   if backbone[k].is_floating_point())  # fmt: skip


def test_log_samples_match_the_stored_log_loss_per_device(two_runs):
    _, folder = two_runs
    frame = hn.samples(folder)
    classes = ["low", "mid", "high"]
    assert list(frame.columns) == ["clip", "device", "label", "predicted",
                                   *[f"p({c})" for c in classes]]  # fmt: skip
    probs = frame[[f"p({c})" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (frame["predicted"] == [classes[i] for i in probs.argmax(axis=1)]).all()
    stored = metrics(folder)
    for device in sorted(set(frame["device"])):
        rows = frame["device"] == device
        labels = [classes.index(label) for label in frame["label"][rows]]
        chosen = probs[rows.to_numpy()]
        expected = log_loss(labels, chosen / chosen.sum(axis=1, keepdims=True), labels=[0, 1, 2])
        assert stored[f"device-logloss/logloss/{device}"] == pytest.approx(expected, rel=1e-4)
    # by run id through the store, as a notebook would
    store = folder.parent / "results.sqlite"
    assert hn.samples(folder.name, store=store).equals(frame)
    with pytest.raises(harness.util.errors.UsageError, match="--log-samples"):
        hn.samples(two_runs[0])


def test_the_run_log_opens_with_the_resolved_config_and_the_parameter_counts(two_runs):
    plain, _ = two_runs
    log = (plain / "log.txt").read_text().splitlines()
    assert log[0] == f"config hash {json.loads((plain / 'record.json').read_text())['config_hash']}"
    assert "config run: epochs=2, batch_size=8," in log[1]
    assert any(line.startswith("config backbone: name=toy, dim=16") for line in log)
    backbone = torch.load(plain / "backbone.pt", weights_only=True)
    method = torch.load(plain / "method.pt", weights_only=True)
    counts = json.loads((plain / "record.json").read_text())["environment"]["parameters"]
    # the toy models hold no buffers: their state dicts are their parameters
    assert counts["backbone"]["total"] == sum(v.numel() for v in backbone.values())
    assert counts["method"]["total"] == sum(v.numel() for v in method.values())
    total = counts["backbone"]["total"] + counts["method"]["total"]
    assert counts["all"] == {"total": total, "trainable": total}
    line = next(line for line in log if line.startswith("parameters: "))
    assert line.startswith(f"parameters: {total:,} ({total:,} trainable); backbone ")


def test_provenance_holds_the_command_line_and_the_dirty_tree_flag(two_runs):
    _, folder = two_runs
    environment = json.loads((folder / "record.json").read_text())["environment"]
    assert environment["command"].startswith(f"harness --plugin {TOY_PLUGIN} run --backbone toy")
    assert environment["command"].endswith("--set run.ema=0.9 --log-samples")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, cwd=Path(harness.__file__).parent,
    )  # fmt: skip
    expected = bool(status.stdout.strip()) if status.returncode == 0 else None
    assert environment["git_dirty"] is expected


def test_log_samples_without_a_classifier_is_a_one_line_error(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1", "--log-samples",
                                   "--method", "mae", "--protocol", "linear"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("harness: error: --log-samples needs class")


@pytest.mark.slow
def test_a_killed_ema_run_resumes_its_average_bit_for_bit(tmp_path):
    import signal

    from tests.test_resume import args, assert_same_run

    ema = ("--set", "run.ema=0.8")
    reference = run_cli(*args(tmp_path, "a", *ema))
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(*args(tmp_path, "b", *ema), env={"HARNESS_TEST_KILL_AT": "epoch 2/3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_cli(*args(tmp_path, "b", *ema), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = finished(tmp_path / "a"), finished(tmp_path / "b")
    assert_same_run(a, b)  # metrics.json holds the ema/ metrics too
    assert any(key.startswith("ema/") for key in metrics(b))
    x, y = (torch.load(f / "ema.pt", weights_only=True) for f in (a, b))
    for part in ("backbone", "method"):
        assert all(torch.equal(x[part][k], y[part][k]) for k in x[part])
