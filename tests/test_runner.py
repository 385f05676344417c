"""The run's core (harness.run.experiment) in process: stages, validation and best-epoch selection,
warm-up, mid-epoch checkpoints and their contents, resume, run records and preflight."""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.api import Clip, Dataset, DataSplits
from harness.cli.main import main
from harness.engine import trainer as engine_module
from harness.engine.loop import Loop, Stepper
from harness.engine.trainer import build_optimizer, epoch_worker_seed
from harness.registry.config import hashed_config
from harness.results.store import ResultStore
from harness.run import preflight as preflight_module
from harness.run import record as record_module
from harness.run.preflight import check_audio_headers, check_metrics, check_output_folder
from harness.run.record import copy_training_records, environment, package_versions
from harness.run.training import describe_blocks, stage_phase
from harness.util import faults
from harness.util.errors import HarnessError
from tests.test_resume import args, assert_same_run, finished

# 18 training clips; 0.2 held out as 4 single-clip groups leaves 14: 7 batches of 2, so
# with grad_accum 2 an epoch has 3 optimizer steps and leaves its 7th batch out
VALIDATED = (
    "--batch-size", "2",
    "--set", "run.grad_accum=2",
    "--set", "run.valid_fraction=0.2",
    "--set", "run.select=best",
    "--set", "run.select_metric=valid_loss",
    "--set", "run.warmup_epochs=1",
    "--set", "run.plateau_patience=0",
    "--set", "run.checkpoint_every_steps=1",
    "--set", "run.sync_every=1", "--set", "run.log_every=1",
)  # fmt: skip
STAGED = (
    "--method", "staged", "--batch-size", "6",
    "--set", "run.checkpoint_every_steps=1", "--set", "run.sync_every=1",
    "--set", "run.log_every=1",
)  # fmt: skip


def interrupt_at(monkeypatch, stage: str) -> None:
    """Ctrl-C (not SIGKILL) at the kill hook's ``stage``, so the test process survives."""
    real_os = faults.os

    def interrupt(pid, sig):
        raise KeyboardInterrupt

    monkeypatch.setattr(faults, "os", SimpleNamespace(
        environ=real_os.environ, getpid=real_os.getpid, getppid=real_os.getppid, kill=interrupt,
    ))  # fmt: skip
    monkeypatch.setenv(faults.KILL_ENV, stage)


def interrupted(tmp_path, monkeypatch, out: str, stage: str, *extra: str) -> Path:
    interrupt_at(monkeypatch, stage)
    with pytest.raises(SystemExit) as stopped:
        main(args(tmp_path, out, *extra))
    assert stopped.value.code == 130
    monkeypatch.delenv(faults.KILL_ENV)
    (partial,) = (tmp_path / out / ".partial").iterdir()
    return partial


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# -- a validated run with accumulation, warm-up and best-epoch selection ------------------


def test_warmup_spans_the_first_epochs_optimizer_steps(tmp_path):
    main(args(tmp_path, "a", *VALIDATED))
    steps = [e for e in events(finished(tmp_path / "a")) if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == list(range(1, 10))
    assert [(e["stage"], e["stage_name"], e["epoch"], e["step"]) for e in steps[:4]] == [
        (1, "train", 1, 1), (1, "train", 1, 2), (1, "train", 1, 3), (1, "train", 2, 4),
    ]  # fmt: skip
    # run.lr 0.01, warm-up over 1 epoch = 3 optimizer steps (7 batches // grad_accum 2)
    assert [e["lr"] for e in steps[:3]] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert steps[3]["lr"] <= 0.01


def test_a_cosine_schedule_decays_after_the_warm_up_to_near_zero_at_the_last_step(tmp_path):
    main(args(tmp_path, "a", *VALIDATED, "--set", "run.schedule=cosine"))
    steps = [e for e in events(finished(tmp_path / "a")) if e["event"] == "step"]
    # 9 optimizer steps: warm-up over the first epoch's 3, then cosine over the other 6
    cosine = [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    expected = [0.01 / 3, 0.02 / 3, 0.01] + [0.01 * f for f in cosine]
    assert [e["lr"] for e in steps] == pytest.approx(expected)
    config = json.loads((finished(tmp_path / "a") / "config.json").read_text())
    assert config["run"]["schedule"] == "cosine"


def test_the_schedule_is_hashed_only_away_from_the_papers_plateau():
    base = {"run": {"epochs": 1, "schedule": "plateau"}}
    cosine = {"run": {"epochs": 1, "schedule": "cosine"}}
    assert hashed_config(base) == {"run": {"epochs": 1}}  # runs stored before it keep their hash
    assert hashed_config(cosine) == cosine


def test_the_best_validation_epoch_is_selected_and_named(tmp_path):
    main(args(tmp_path, "a", *VALIDATED))
    folder = finished(tmp_path / "a")
    epochs = [e for e in events(folder) if e["event"] == "epoch" and e["stage"] == 1]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(0 <= e["valid_acc"] <= 100 and e["valid_loss"] > 0 for e in epochs)
    losses = [e["valid_loss"] for e in epochs]
    best = losses.index(min(losses))
    log = (folder / "log.txt").read_text()
    assert f"selected the weights of stage 1 epoch {best + 1} (valid_loss {min(losses):.4f})" in log
    epoch_lines = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and all(", valid_loss " in line for line in epoch_lines)
    assert epoch_lines[0].startswith(f"epoch 1/3: loss {epochs[0]['loss']:.4f}, ")


def test_selection_by_accuracy_keeps_the_first_of_equal_epochs(tmp_path):
    extra = [a if a != "run.select_metric=valid_loss" else "run.select_metric=valid_acc"
             for a in VALIDATED]  # fmt: skip
    main(args(tmp_path, "a", *extra))
    folder = finished(tmp_path / "a")
    accs = [e["valid_acc"] for e in events(folder) if e["event"] == "epoch"]
    line = f"selected the weights of stage 1 epoch {accs.index(max(accs)) + 1} (valid_acc "
    assert line in (folder / "log.txt").read_text()


def test_a_mid_epoch_checkpoint_holds_the_whole_training_state(tmp_path, monkeypatch):
    # after optimizer step 2 of epoch 2 (micro-batch 3): global step 3 + 2
    partial = interrupted(tmp_path, monkeypatch, "b", "checkpoint 1:1:4", *VALIDATED)
    state = json.loads((partial / "state.json").read_text())
    updated = state.pop("updated")
    assert updated and state.pop("created")
    saved = torch.load(partial / "rank0.pt", weights_only=True)
    assert state.pop("config_hash") == saved["config_hash"] and len(saved["config_hash"]) >= 16
    assert state == {
        "run_id": partial.name, "backbone": "toy", "method": "ce", "dataset": "toy-tones",
        "world": 1, "stages": 1, "stage_name": "train", "stage_epochs": 3, "checkpoint": True,
        "global_step": 5, "stage": 1, "epoch": 1, "step": 5, "micro": 4,
    }  # fmt: skip
    assert set(saved) == {
        "format", "config_hash", "world", "position", "backbone", "method", "rng", "log",
        "global_step", "best", "metrics_offset", "optimizer", "plateau", "scaler",
        "generator", "epoch_generator", "sums", "window", "recent", "health",
    }  # fmt: skip
    assert saved["health"]["collapse"] is None and saved["health"]["last"]["effective_rank"] > 2
    assert saved["position"] == {"stage": 1, "epoch": 1, "step": 5, "micro": 4}
    assert (saved["world"], saved["global_step"]) == (1, 5)
    assert saved["sums"]["steps"] == 4 and saved["window"]["steps"] == 0  # window logged
    assert saved["metrics_offset"] == (partial / "metrics.jsonl").stat().st_size
    logged = events(partial)
    (first,) = [e for e in logged if e["event"] == "epoch"]
    assert saved["best"]["epoch"] == 1 and saved["best"]["stage"] == 1
    assert saved["best"]["value"] == pytest.approx(first["valid_loss"])
    assert saved["optimizer"]["state"] and saved["plateau"]["best"] == first["valid_loss"]
    assert [e["global_step"] for e in logged if e["event"] == "step"] == [1, 2, 3, 4, 5]
    assert any(line.startswith("epoch 1/3: ") for line in saved["log"])


def test_a_validated_run_resumed_mid_epoch_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    main(args(tmp_path, "a", *VALIDATED))
    interrupted(tmp_path, monkeypatch, "b", "checkpoint 1:1:4", *VALIDATED)
    main([*args(tmp_path, "b", *VALIDATED), "--resume"])
    a, b = finished(tmp_path / "a"), finished(tmp_path / "b")
    assert_same_run(a, b)
    log = (b / "log.txt").read_text()
    assert "at stage 1, epoch 1, step 5" in log
    assert [strip_timing(e) for e in events(a)] == [strip_timing(e) for e in events(b)]


def strip_timing(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in ("clips_per_s", "data_wait", "seconds")}


# -- staged methods ------------------------------------------------------------------------


def test_stages_train_in_order_with_their_own_settings(tmp_path):
    main(args(tmp_path, "a", *STAGED))
    folder = finished(tmp_path / "a")
    log = (folder / "log.txt").read_text().splitlines()
    assert [line for line in log if line.startswith("stage ")] == [
        "stage 1/2 'head': 1 epochs, lr 1.00e-02, batch 6, "
        "backbone blocks trained: none (backbone frozen); head only",
        "stage 2/2 'top': 2 epochs, lr 5.00e-03, batch 6, backbone blocks trained: top 1",
    ]
    logged = events(folder)
    epochs = [(e["stage"], e["stage_name"], e["epoch"], e["step"], e["global_step"])
              for e in logged if e["event"] == "epoch" and e["stage"]]  # fmt: skip
    # 18 clips in batches of 6: 3 steps an epoch; each stage counts its own steps
    assert epochs == [(1, "head", 1, 3, 3), (2, "top", 1, 3, 6), (2, "top", 2, 6, 9)]
    assert all(e["stage_steps"] == 1.0 for e in logged if e["event"] == "step")
    assert [line.split(":")[0] for line in log if line.startswith("epoch")] == [
        "epoch 1/1", "epoch 1/2", "epoch 2/2",
    ]  # fmt: skip
    # warm-up restarts with each stage's optimizer (1 epoch = 3 steps)
    lrs = [e["lr"] for e in logged if e["event"] == "step" and e["stage"] == 2]
    assert lrs[:3] == pytest.approx([0.005 / 3, 0.01 / 3, 0.005])


def test_a_staged_run_resumed_in_its_second_stage_equals_the_uninterrupted_one(
    tmp_path, monkeypatch
):
    main(args(tmp_path, "a", *STAGED))
    partial = interrupted(tmp_path, monkeypatch, "b", "checkpoint 2:0:1", *STAGED)
    state = json.loads((partial / "state.json").read_text())
    assert (state["stage"], state["stage_name"], state["stage_epochs"], state["stages"]) == (
        2, "top", 2, 2,
    )  # fmt: skip
    assert (state["epoch"], state["step"], state["micro"], state["global_step"]) == (0, 1, 1, 4)
    main([*args(tmp_path, "b", *STAGED), "--resume"])
    a, b = finished(tmp_path / "a"), finished(tmp_path / "b")
    for name in ("backbone.pt", "method.pt"):
        x = torch.load(a / name, weights_only=True)
        y = torch.load(b / name, weights_only=True)
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )
    log_b = (b / "log.txt").read_text()
    assert log_b.count("stage 1/2 'head'") == 1 and "at stage 2, epoch 0, step 1" in log_b
    assert [strip_timing(e) for e in events(a)] == [strip_timing(e) for e in events(b)]


def test_the_head_stage_trains_only_the_head_and_the_top_stage_the_top_block(tmp_path, monkeypatch):
    after_one_step = interrupted(tmp_path, monkeypatch, "b", "checkpoint 1:0:1", *STAGED)
    after_stage_1 = interrupted(tmp_path, monkeypatch, "c", "checkpoint 1:1:0", *STAGED)
    one, head_done = (torch.load(p / "rank0.pt", weights_only=True)
                      for p in (after_one_step, after_stage_1))  # fmt: skip
    assert not any(head_done["backbone"]["requires_grad"].values())
    one, head_done = (
        {part: saved[part]["state_dict"] for part in ("backbone", "method")}
        for saved in (one, head_done)
    )
    assert all(torch.equal(one["backbone"][k], v) for k, v in head_done["backbone"].items())
    assert any(not torch.equal(v, head_done["method"][k]) for k, v in one["method"].items())
    main(args(tmp_path, "a", *STAGED))
    final = torch.load(finished(tmp_path / "a") / "backbone.pt", weights_only=True)
    changed = {k for k, v in final.items() if not torch.equal(v, head_done["backbone"][k])}
    assert changed == {"blocks.1.weight", "blocks.1.bias", "norm.weight", "norm.bias"}


# -- records and preflight -----------------------------------------------------------------


def test_worker_seed_is_a_fixed_function_of_seed_stage_and_epoch():
    stage = SimpleNamespace(seed=3, number=2)
    assert epoch_worker_seed(stage, 5) == 3 * 1_000_003 + 2 * 10_007 + 5 == 3020028
    late = SimpleNamespace(seed=2**62, number=7)
    assert epoch_worker_seed(late, 9) == 4611686018427457962  # mod 2**63


def test_describe_blocks():
    assert [describe_blocks(b) for b in (None, 0, 1, 3)] == [
        "as set up", "none (backbone frozen)", "top 1", "top 3",
    ]  # fmt: skip


def test_generator_version_is_the_data_sets_declared_one():
    class Generated(Dataset):
        generator_version = 7

    assert environment(Generated)["data_generator_version"] == 7
    assert environment(Dataset)["data_generator_version"] is None


def test_environment_names_the_interpreter_libraries_and_generator():
    generated = type("G", (Dataset,), {"generator_version": 2})
    env = environment(generated)
    assert env == {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "packages": package_versions(),
        "data_generator_version": 2,
    }
    assert environment()["data_generator_version"] is None
    versions = package_versions(("numpy", "no-such-package-xyz"))
    assert versions == {"numpy": __import__("numpy").__version__, "no-such-package-xyz": None}


def stepper(tag: str) -> Stepper:
    return Stepper(
        tag,
        optimizer=SimpleNamespace(state_dict=lambda: f"o{tag}"),
        schedule=SimpleNamespace(state_dict=lambda: f"p{tag}"),
        scaler=SimpleNamespace(state_dict=lambda: f"s{tag}"),
    )


def test_loop_state_keeps_optimizer_schedule_and_scaler():
    loop = Loop("train", 1, None, [stepper("")], None, None, 1)
    assert loop.state() == {"optimizer": "o", "plateau": "p", "scaler": "s"}
    two = Loop("gan", 0, None, [stepper("1"), stepper("2")], None, None, 1)
    assert two.state() == {
        "optimizer": ["o1", "o2"], "plateau": ["p1", "p2"], "scaler": ["s1", "s2"],
    }  # fmt: skip


def test_check_output_folder(tmp_path):
    check_output_folder(tmp_path)  # an existing, writable folder
    check_output_folder(tmp_path / "new" / "deeper")  # can be created: nothing is
    assert list(tmp_path.iterdir()) == []
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(HarnessError, match=f"^output folder {afile} cannot be created"):
        check_output_folder(afile)
    with pytest.raises(HarnessError, match=f"cannot be created \\(check {afile}\\)$"):
        check_output_folder(afile / "sub")


def test_check_audio_headers_reads_every_file_of_every_split_once(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(preflight_module, "check_header", lambda path: seen.append(str(path)))
    clip = lambda name, *segments: Clip(Path(name), 0, segments=tuple(map(Path, segments)))  # noqa: E731
    splits = DataSplits(["x"], [clip("t1"), clip("t2")], [clip("e1"), clip("t1")], 1.0)
    splits.valid = [clip("v1", "v1", "v2")]
    check_audio_headers(splits)
    assert seen == ["t1", "t2", "v1", "v2", "e1"]


def test_check_metrics_names_every_non_finite_metric():
    check_metrics({"a": 1.0, "b": -2.5})
    with pytest.raises(HarnessError) as raised:
        check_metrics({"z": math.inf, "ok": 0.0, "a": math.nan})
    assert str(raised.value) == (
        "run failed: non-finite metrics (a=nan, z=inf); nothing was stored"
    )


def test_training_records_are_copied_without_checkpoints_or_state(tmp_path):
    partial, folder = tmp_path / "partial", tmp_path / "run"
    (partial / "tensorboard").mkdir(parents=True)
    (partial / "tensorboard" / "events.1").write_text("e")
    for name in ("metrics.jsonl", "config.json", "state.json", "rank0.pt", ".lock", "x.pt"):
        (partial / name).write_text(name)
    folder.mkdir()
    copy_training_records(partial, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl", "tensorboard"]
    assert (folder / "tensorboard" / "events.1").read_text() == "e"
    assert (folder / "metrics.jsonl").read_text() == "metrics.jsonl"
    copy_training_records(None, folder)
    copy_training_records(tmp_path / "missing", folder)
    assert len(list(folder.iterdir())) == 2


def test_a_stored_run_row_and_folder_name_the_run(tmp_path):
    main(args(tmp_path, "a", "--seed", "3"))
    (row,) = ResultStore(tmp_path / "a" / "results.sqlite").records()
    assert row.seed == 3 and row.config["run"]["seed"] == 3
    assert Path(row.run_dir) == finished(tmp_path / "a")
    created = datetime.fromisoformat(row.created)
    assert created.tzinfo is not None and created.microsecond == 0
    assert row.run_id.startswith(created.strftime("%Y%m%d-%H%M%S-"))
    assert not (tmp_path / "a" / ".partial").exists()


# -- the Experiment object ---------------------------------------------------------------


def experiment(tmp_path, **sections):
    from harness.registry.config import resolve
    from harness.registry.plugins import load_plugins
    from harness.run.experiment import Experiment
    from tests.conftest import TOY_PLUGIN

    (tmp_path / "tones").mkdir(exist_ok=True)
    raw = {
        "backbone": {"name": "toy"},
        "dataset": {"name": "toy-tones", "root": str(tmp_path / "tones")},
        "run": {"epochs": 1, "batch_size": 6},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return Experiment(resolve(raw, load_plugins([str(TOY_PLUGIN)])))


def test_selecting_the_best_epoch_needs_a_validation_split(tmp_path):
    from harness.util.errors import UsageError

    with pytest.raises(UsageError) as raised:
        experiment(tmp_path, run={"select": "best"})
    assert str(raised.value) == (
        "run.select=best needs a validation split: set run.valid_fraction "
        "(data set 'toy-tones' has none of its own)"
    )


def test_held_out_clips_leave_the_training_split(tmp_path):
    exp = experiment(tmp_path, run={"valid_fraction": 0.25})
    assert exp.has_valid and (len(exp.splits.train), len(exp.splits.valid)) == (13, 5)
    assert not {c.path for c in exp.splits.train} & {c.path for c in exp.splits.valid}
    plain = experiment(tmp_path)
    assert not plain.has_valid and plain.splits.valid == [] and len(plain.splits.train) == 18
    exp.close()
    plain.close()


def stage_optimizer(exp, stage) -> torch.optim.Optimizer:
    """The optimizer the run builds for ``stage`` (its phase through the one builder)."""
    phase = stage_phase(stage, exp.backbone, exp.method, exp.cfg.run)
    return build_optimizer(phase.param_groups, phase.optimizer)


def test_the_optimizer_trains_what_the_stage_names_with_the_runs_adam_settings(tmp_path):
    from harness.api import Stage

    exp = experiment(
        tmp_path, run={"betas": [0.8, 0.9], "eps": 1e-6, "weight_decay": 0.01, "lr": 0.002}
    )
    exp.setup()
    everything = stage_optimizer(exp, Stage("all", 1, 0.002, 6))
    (group,) = everything.param_groups
    assert group["betas"] == (0.8, 0.9) and group["eps"] == 1e-6
    assert group["lr"] == group["base_lr"] == 0.002 and group["weight_decay"] == 0.01
    trainable = [p for p in [*exp.backbone.parameters(), *exp.method.parameters()]]
    assert len(group["params"]) == len(trainable)
    frozen = stage_optimizer(exp, Stage("head", 1, 0.01, 6, backbone_blocks=0))
    assert not any(p.requires_grad for p in exp.backbone.parameters())
    assert sum(len(g["params"]) for g in frozen.param_groups) == len(list(exp.method.parameters()))
    assert all(g["base_lr"] == g["lr"] for g in frozen.param_groups)
    top = stage_optimizer(exp, Stage("top", 1, 0.01, 6, backbone_blocks=1, layer_decay=0.5))
    names = {n for n, p in exp.backbone.named_parameters() if p.requires_grad}
    assert names == {"blocks.1.weight", "blocks.1.bias", "norm.weight", "norm.bias"}
    assert len(top.param_groups) >= 2
    exp.close()


def test_more_accumulation_than_batches_is_a_usage_error(tmp_path):
    from harness.util.errors import UsageError

    exp = experiment(tmp_path, run={"grad_accum": 4})  # 18 clips: 3 batches of 6
    exp.setup()
    with pytest.raises(UsageError) as raised:
        exp.train()
    assert str(raised.value) == "run.grad_accum 4 exceeds the 3 batches of an epoch"
    exp.close()


def test_evaluation_prefixes_each_protocols_metrics_with_its_name(tmp_path):
    exp = experiment(tmp_path, protocol={"names": ["device-logloss"]})
    exp.setup()
    exp.train()
    metrics, tables = exp.evaluate()
    assert metrics and all(k.startswith("device-logloss/") for k in metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert list(tables) == ["device-logloss"] and tables["device-logloss"].startswith("| device")
    assert exp.embed("eval") is exp.embed("eval")  # embedded once, then kept
    assert exp.embed("eval").shape == (len(exp.splits.eval), 16)
    probs = exp.predict("eval")
    assert probs.shape == (len(exp.splits.eval), 3)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
    exp.close()
    assert exp.checkpoints.metrics is None and exp.parts._loaders == {}


def test_run_threads_sets_the_torch_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        experiment(tmp_path, run={"threads": 1}).close()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_each_split_is_read_at_its_own_clip_length(tmp_path):
    exp = experiment(tmp_path, run={"valid_fraction": 0.25})
    exp.splits.train_clip_seconds = 0.25
    assert exp.parts.audio("train").source.length == 2000  # 0.25 s at 8 kHz
    assert exp.parts.audio("valid").source.length == 2000
    assert exp.parts.audio("eval").source.length == 4000  # the data set's clip length, 0.5 s
    assert exp.parts.audio("eval") is exp.parts.audio("eval")
    exp.close()


def test_seed_everything_seeds_python_numpy_and_torch():
    import random

    import numpy as np

    from harness.run.experiment import seed_everything

    seed = 2**40 + 7  # numpy takes it modulo 2**32
    seed_everything(seed)
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    assert drawn == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_precision_checks_and_what_the_experiment_hands_on(tmp_path):
    from harness.run.experiment import check_precision
    from harness.util.errors import UsageError

    check_precision(torch.device("cpu"), "bf16")  # CPUs compute in bf16
    check_precision(torch.device("cpu"), "fp32")
    exp = experiment(tmp_path, run={"audio_cache": "off", "precision": "bf16", "workers": 0})
    assert exp.engine.precision == "bf16" and exp.parts.workers == 0
    assert exp.task.time_axis == exp.backbone.time_axis and exp.task.devices == ["a", "b", "s4"]
    assert len(exp.parts.loader("train", 4, train=True)) == 4  # 18 clips, the last 2 dropped
    assert len(exp.parts.loader("eval", 4, train=False)) == 5  # 18 clips, all kept
    exp.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="decoded-audio cache folder .* is not writable"):
        experiment(tmp_path, run={"audio_cache": str(tmp_path / "file" / "cache")})


def test_state_info_outside_a_run_folder_names_no_run(tmp_path):
    from harness.api import Stage
    from harness.engine.resume import Position

    exp = experiment(tmp_path)
    info = exp.checkpoints.state_info(Stage("train", 2, 0.1, 6), Position(), checkpointed=False)
    assert (info["run_id"], info["created"], info["checkpoint"]) == ("", "", False)
    assert (info["stage_name"], info["stage_epochs"], info["stages"]) == ("train", 2, 0)
    exp.close()


def test_evaluation_bars_name_what_they_compute(tmp_path, monkeypatch):
    shown: list[str] = []
    real = engine_module.progress

    def record(items, desc, **kw):
        shown.append(desc)
        return real(items, desc=desc, **kw)

    monkeypatch.setattr(engine_module, "progress", record)
    exp = experiment(tmp_path)
    exp.setup()
    exp.embed("eval")
    exp.predict("eval")
    assert shown == ["embedding eval", "predicting eval"]
    exp.close()


def test_git_commit_is_empty_when_git_fails_or_hangs(monkeypatch):
    import subprocess

    from harness.run.record import git_commit

    calls = []

    def failing(*args, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(returncode=128, stdout="fatal: not a git repository\n")

    monkeypatch.setattr(record_module.subprocess, "run", failing)
    assert git_commit() == ""
    assert calls[0]["timeout"] == 5 and calls[0]["capture_output"] and calls[0]["text"]

    def hanging(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 5)

    monkeypatch.setattr(record_module.subprocess, "run", hanging)
    assert git_commit() == ""


def test_headers_of_listed_splits_the_data_set_lacks_are_skipped(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(preflight_module, "check_header", lambda path: seen.append(str(path)))
    splits = DataSplits(["x"], [Clip(Path("t"), 0)], [Clip(Path("e"), 0)], 1.0)
    splits.extra_splits = ("missing",)
    check_audio_headers(splits)
    assert seen == ["t", "e"]


def test_the_run_folder_files_by_hand(tmp_path, monkeypatch):
    from harness.run.record import write_run_folder
    from tests.test_store import make_record

    reached: list[str] = []
    monkeypatch.setattr(record_module, "checkpoint", reached.append)
    module = torch.nn.Linear(1, 1)
    experiment_like = SimpleNamespace(
        backbone=module, method=module, log_lines=["one", "two"], partial_dir=None
    )
    write_run_folder(tmp_path, make_record(), experiment_like, {"a": "TA", "b": "TB"})
    assert reached == ["staging"]
    assert (tmp_path / "log.txt").read_text() == "one\ntwo\n"
    assert (tmp_path / "tables.md").read_text() == "## a\n\nTA\n\n## b\n\nTB\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"p/acc": 0.5}


def test_every_training_record_is_copied_whatever_the_folder_order(tmp_path):
    partial, folder = tmp_path / "partial", tmp_path / "run"
    partial.mkdir()
    folder.mkdir()
    names = [f"log{i}.jsonl" for i in range(20)]
    for name in [*names, "state.json"]:
        (partial / name).write_text(name)
    copy_training_records(partial, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_a_protocols_training_reports_to_the_run_log_and_metrics(tmp_path):
    extra = ("--protocol", "finetune", "--epochs", "1", "--set", "protocol.finetune.epochs=2")
    main(args(tmp_path, "a", *extra))
    folder = finished(tmp_path / "a")
    jobs = [e for e in events(folder) if e["stage"] == 0 and e["event"] == "epoch"]
    assert [(e["stage_name"], e["epoch"]) for e in jobs] == [("finetune", 1), ("finetune", 2)]
    log = (folder / "log.txt").read_text()
    assert "finetune epoch 1/2: loss " in log and "finetune epoch 2/2: loss " in log


def test_an_unfinished_run_is_not_resumed_unless_asked(tmp_path, monkeypatch):
    interrupted(tmp_path, monkeypatch, "b", "epoch 2/3")
    main(args(tmp_path, "b"))  # neither --resume nor --resume-if-any: a fresh run
    log = (finished(tmp_path / "b") / "log.txt").read_text()
    assert "resumed from" not in log
    assert len(list((tmp_path / "b" / ".partial").iterdir())) == 1  # the old one is kept
