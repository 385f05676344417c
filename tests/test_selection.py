"""Validation split, run.select=best and the plateau scheduler on the validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.api import Clip
from harness.run.experiment import hold_out
from tests.conftest import run_cli, toy_run_args
from tests.test_resume import finished

VALID = ("--set", "run.valid_fraction=0.3", "--set", "run.warmup_epochs=0")


def run(tmp_path: Path, out: str, *extra: str) -> Path:
    args = toy_run_args(tmp_path, *VALID, *extra)
    args[args.index("--out") + 1] = str(tmp_path / out)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return finished(tmp_path / out)


def epoch_events(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "epoch"]


def test_select_best_keeps_the_best_validation_epoch_not_the_last(tmp_path):
    best = run(
        tmp_path, "best", "--epochs", "5", "--set", "run.lr=0.05", "--set", "run.select=best"
    )
    accs = [e["valid_acc"] for e in epoch_events(best)]
    chosen = accs.index(max(accs)) + 1  # the first epoch reaching the best accuracy
    assert chosen < 5, accs  # the case is built so that the best is not the last
    assert f"selected the weights of stage 1 epoch {chosen}" in (best / "log.txt").read_text()
    # training is causal: a run stopped after that epoch has those weights. Two processes
    # may round a multithreaded reduction differently (seen once in CI), so the check is
    # to within float32 noise: an epoch's update at this learning rate is far larger.
    short = run(tmp_path, "short", "--epochs", str(chosen), "--set", "run.lr=0.05")
    for name in ("backbone.pt", "method.pt"):
        a = torch.load(best / name, weights_only=True)
        b = torch.load(short / name, weights_only=True)
        assert a.keys() == b.keys(), name
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    # health/* describe the training's last probe (epoch 5 against epoch `chosen`), not the
    # evaluated weights: the evaluation's metrics are what must agree
    evaluated = [evaluation_metrics(folder) for folder in (best, short)]
    assert evaluated[0] == pytest.approx(evaluated[1], rel=1e-5)


def evaluation_metrics(folder: Path) -> dict[str, float]:
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "health/effective_rank" in metrics
    return {k: v for k, v in metrics.items() if not k.startswith("health/")}


def expected_lrs(losses: list[float], lr: float, factor: float) -> list[float]:
    """ReduceLROnPlateau(patience=0, threshold=1e-4, rel): the lr each epoch trains with."""
    best, out = float("inf"), []
    for loss in losses:
        out.append(lr)
        if loss < best * (1 - 1e-4):
            best = loss
        else:
            lr *= factor
    return out


def test_plateau_watches_the_validation_loss(tmp_path):
    folder = run(
        tmp_path, "p", "--epochs", "5", "--set", "run.lr=0.3", "--set", "run.plateau_patience=0"
    )
    events = epoch_events(folder)
    lrs = [e["lr"] for e in events]
    on_valid = expected_lrs([e["valid_loss"] for e in events], 0.3, 0.5)
    on_train = expected_lrs([e["loss"] for e in events], 0.3, 0.5)
    assert lrs == on_valid and on_valid != on_train and min(lrs) < 0.3


def test_select_best_without_a_validation_split_is_a_one_line_error(tmp_path):
    result = run_cli(*toy_run_args(tmp_path, "--epochs", "1", "--set", "run.select=best"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "run.select=best needs a validation split" in line
    assert not (tmp_path / "runs" / ".partial").exists()


def test_hold_out_takes_whole_locations():
    clips = [Clip(Path(f"{i}.wav"), 0, meta={"identifier": f"loc{i % 4}"}) for i in range(20)]
    train, valid = hold_out(clips, 0.3, "identifier", seed=0)
    held = {c.meta["identifier"] for c in valid}
    assert held.isdisjoint({c.meta["identifier"] for c in train})
    assert len(held) == 2 and len(valid) == 10 and len(train) == 10  # 2 of 4 locations >= 30%
    assert hold_out(clips, 0.3, "identifier", seed=0) == (train, valid)  # seeded


def test_a_published_validation_list_is_validated_on_and_selects(tmp_path):
    """Speech Commands' validation_list.txt is the validation split: every epoch reports its
    loss (the plateau watches it) and run.select=best works without run.valid_fraction."""
    import numpy as np
    import soundfile as sf

    root = tmp_path / "sc"
    rng = np.random.default_rng(0)
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for label, word in enumerate(("no", "yes")):
        for i in range(12):
            tone = np.sin(2 * np.pi * (300 + 500 * label) * np.arange(8000) / 16000)
            wave = (0.3 * tone + 0.05 * rng.standard_normal(8000)).astype(np.float32)
            path = root / word / f"s{i}_nohash_0.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, 16000)
            if i in (0, 1, 2):
                lists["validation_list.txt"].append(f"{word}/{path.name}")
            elif i in (3, 4):
                lists["testing_list.txt"].append(f"{word}/{path.name}")
    for name, lines in lists.items():
        (root / name).write_text("\n".join(lines) + "\n")
    args = toy_run_args(tmp_path, "--epochs", "3", "--set", "run.select=best")
    args[args.index("--dataset") + 1] = "speech-commands"
    args[args.index(f"dataset.root={tmp_path / 'tones'}")] = f"dataset.root={root}"
    result = run_cli(*args, "--protocol", "linear")
    assert result.returncode == 0, result.stderr
    folder = finished(tmp_path / "runs")
    epochs = epoch_events(folder)
    assert len(epochs) == 3 and all("valid_loss" in e and "valid_acc" in e for e in epochs)
    assert "selected the weights of stage 1 epoch" in (folder / "log.txt").read_text()


def test_warm_up_then_plateau_schedule_by_hand():
    """Linear warm-up over 4 steps (0.25, 0.5, 0.75, 1.0 of each group's base rate), then the
    rate halves after 2 epochs without improvement (patience 1), counted from the warm-up's end."""
    import torch

    from harness.engine.schedules import WarmupPlateau

    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(
        [{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.1}]
    )
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    schedule = WarmupPlateau(optimizer, warmup_steps=4, patience=1, factor=0.5)
    rates = []
    for step in range(5):
        schedule.before_step(optimizer, step)
        rates.append([round(g["lr"], 6) for g in optimizer.param_groups])
    assert rates == [[0.25, 0.025], [0.5, 0.05], [0.75, 0.075], [1.0, 0.1], [1.0, 0.1]]
    for loss in (1.0, 1.0, 1.0):
        schedule.after_epoch(optimizer, loss, step=3)  # still warming up: not counted
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 0.1]
    for loss in (1.0, 1.0):
        schedule.after_epoch(optimizer, loss, step=4)
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 0.1]
    schedule.after_epoch(optimizer, 1.0, step=4)  # the second epoch without improvement
    assert [round(g["lr"], 6) for g in optimizer.param_groups] == [0.5, 0.05]


class ConstantLoss(torch.nn.Module):
    """A loss of exactly 1 whatever the weight (so the training loss never improves), that
    records the features each batch had and the training mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen: list[tuple] = []

    def forward(self, batch):
        from harness.api import StepOutput

        self.seen.append((tuple(batch.features.shape), self.training))
        return StepOutput((self.weight * 0 + 1.0).sum())


class Halve(torch.nn.Module):
    def forward(self, wave):
        assert self.training and not torch.is_grad_enabled()
        return wave[:, ::2]


def test_a_protocol_job_stops_after_patience_epochs_without_progress_and_reports_each_loss():
    """Through the core's engine: waveform batches through the job's front-end; the constant
    loss never improves, so patience 2 stops it after epochs 1 (best), 2 and 3."""
    from harness.api import Clip, TrainingJob
    from harness.data.loader import ClipAudio
    from harness.engine.trainer import build_optimizer, standalone

    clips = [Clip(Path(f"c{i}.wav"), i % 2) for i in range(8)]
    labels = torch.tensor([c.label for c in clips])
    audio = ClipAudio(clips, torch.randn(8, 6), labels, torch.full((8,), -1), 16000)
    model = ConstantLoss()
    job = TrainingJob(
        name="probe", model=model, data=audio, epochs=10, batch_size=4, lr=0.1,
        patience=2, frontend=Halve(), drop_last=False, log_epochs=False,
    )  # fmt: skip
    result = standalone(torch.device("cpu")).fit(job)
    assert result.epoch_losses == [1.0, 1.0, 1.0] and result.steps == 6
    assert set(model.seen) == {((4, 3), True)} and len(model.seen) == 6
    assert not model.training  # handed back in evaluation mode
    spec = TrainingJob(
        "x", model, audio, 1, 4, lr=0.5, optimizer="adamw", weight_decay=0.1,
        param_groups=[{"params": [model.weight]}],
    )  # fmt: skip
    optimizer = build_optimizer(spec.phases[0].param_groups, spec.phases[0].optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["base_lr"], group["weight_decay"]) == (0.5, 0.5, 0.1)
