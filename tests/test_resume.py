"""Checkpoints and exact resume: a run SIGKILLed during training continues bit for bit."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli, toy_run_args

NNCLR = [
    "--method",
    "nnclr-tcutmix",
    "--protocol",
    "linear",
    *("--set", "method.proj_hidden=32", "--set", "method.pred_hidden=32"),
    *("--set", "method.out_dim=8", "--set", "method.queue_size=64"),
    *("--set", "method.tune_blocks=1", "--set", "method.preset=small"),
]


def args(tmp_path: Path, out: str, *extra: str) -> list[str]:
    full = toy_run_args(tmp_path, *extra)
    full[full.index("--out") + 1] = str(tmp_path / out)
    return full


def finished(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folder


def assert_same_run(a: Path, b: Path) -> None:
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )
    for name in ("backbone.pt", "method.pt"):
        x = torch.load(a / name, weights_only=True)
        y = torch.load(b / name, weights_only=True)
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), (name, key)
    epochs = [
        [line for line in (f / "log.txt").read_text().splitlines() if line.startswith("epoch")]
        for f in (a, b)
    ]
    strip = [[line.rsplit(",", 1)[0] for line in lines] for lines in epochs]  # minus timing
    assert strip[0] == strip[1] and len(strip[0]) == 3
    logged = [  # metrics.jsonl: every event once, with the same losses and health
        [
            (e["event"], e["global_step"], e.get("loss"), e.get("effective_rank"))
            for e in map(json.loads, (f / "metrics.jsonl").read_text().splitlines())
        ]
        for f in (a, b)
    ]
    assert logged[0] == logged[1] and len(logged[0]) >= 3
    assert [e[0] for e in logged[0]].count("health") == 3  # one probe per epoch


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "kill_at"),
    [
        ((), "epoch 2/3"),  # epoch boundary: killed in the first batch of epoch 2
        # staged NNCLR with its queue, killed inside stage 2's first epoch after a
        # mid-epoch checkpoint (stage 1 'head' has 1 epoch, stage 2 'top' has 2)
        ((*NNCLR, "--set", "run.checkpoint_every_steps=1"), "checkpoint 2:0:1"),
    ],
    ids=["ce", "nnclr-tcutmix-mid-epoch"],
)
def test_sigkilled_run_resumes_bit_for_bit(tmp_path, extra, kill_at):
    reference = run_cli(*args(tmp_path, "a", *extra))
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(*args(tmp_path, "b", *extra), env={"HARNESS_TEST_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = tmp_path / "b"
    assert not any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir())
    listed = run_cli("runs", "--partial", "--out", str(out))
    assert listed.returncode == 0 and "epoch" in listed.stdout
    expected = "stage 2/2 ('top'), epoch 0/2 + 1 batches" if extra else "epoch 1/3 done"
    assert expected in listed.stdout, listed.stdout
    resumed = run_cli(*args(tmp_path, "b", *extra), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(finished(tmp_path / "a"), finished(out))
    assert not (out / ".partial").exists()  # a finished run removes its state
    assert "resumed from" in (finished(out) / "log.txt").read_text()


def kill_in_epoch_2(tmp_path: Path) -> Path:
    killed = run_cli(*args(tmp_path, "b"), env={"HARNESS_TEST_KILL_AT": "epoch 2/3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (partial,) = (tmp_path / "b" / ".partial").iterdir()
    return partial


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_resume_with_nothing_to_resume_is_an_error_and_resume_if_any_starts_afresh(tmp_path):
    error = one_line_error(run_cli(*args(tmp_path, "b"), "--resume"))
    assert "nothing to resume" in error and ".partial" in error
    error = one_line_error(run_cli(*args(tmp_path, "b"), "--resume", str(tmp_path / "nope")))
    assert "no in-progress run" in error
    fresh = run_cli(*args(tmp_path, "b"), "--resume-if-any")
    assert fresh.returncode == 0, fresh.stderr
    assert "resumed from" not in (finished(tmp_path / "b") / "log.txt").read_text()


def test_bad_resumes_are_one_line_errors_and_keep_the_state(tmp_path):
    partial = kill_in_epoch_2(tmp_path)
    changed = ("--set", "run.lr=0.02", "--seed", "3")
    error = one_line_error(run_cli(*args(tmp_path, "b", *changed), "--resume"))
    assert "run.lr" in error and "run.seed" in error and "differs" in error
    error = one_line_error(run_cli(*args(tmp_path, "b", *changed), "--resume", str(partial)))
    assert "run.lr, run.seed" in error
    state = partial / "rank0.pt"
    data = state.read_bytes()
    for damaged in (data[: len(data) // 2], b"not a checkpoint"):
        state.write_bytes(damaged)
        error = one_line_error(run_cli(*args(tmp_path, "b"), "--resume"))
        assert "corrupt or truncated" in error and str(state) in error
        assert state.read_bytes() == damaged and (partial / "config.json").is_file()
    assert not any(p.is_dir() and not p.name.startswith(".") for p in (tmp_path / "b").iterdir())


@pytest.mark.slow
def test_two_process_gloo_run_resumes_bit_for_bit(tmp_path):
    ddp = ("--device", "cpu", "--nproc", "2")
    reference = run_cli(*args(tmp_path, "a", *ddp))
    assert reference.returncode == 0, reference.stderr
    killed = run_cli(*args(tmp_path, "b", *ddp), env={"HARNESS_TEST_KILL_AT": "epoch 2/3"})
    assert killed.returncode != 0
    (partial,) = (tmp_path / "b" / ".partial").iterdir()
    assert {p.name for p in partial.iterdir()} >= {"rank0.pt", "rank1.pt", "state.json"}
    one = one_line_error(run_cli(*args(tmp_path, "b"), "--device", "cpu", "--resume"))
    assert "2 processes" in one  # the world size is part of the state
    resumed = run_cli(*args(tmp_path, "b", *ddp), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(finished(tmp_path / "a"), finished(tmp_path / "b"))
