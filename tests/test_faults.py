"""The kill suite's hook, one-line errors and the torchrun environment, in process."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.engine.distributed import Ranks, env_ranks
from harness.util import faults
from harness.util.errors import DataError, HarnessError, Interrupted


@pytest.mark.parametrize(
    ("wanted", "stage", "fires"),
    [
        ("epoch", "epoch 1/3", True),  # a progress bar's name starts with the stage
        ("epoch 2/3", "epoch 2/3", True),
        ("epoch", "epochs", False),
        ("insert", "commit", False),
        ("", "insert", False),
        (None, "insert", False),
    ],
)
def test_the_kill_hook_fires_on_its_stage_or_a_bar_of_that_name(monkeypatch, wanted, stage, fires):
    sent = []
    real = faults.os
    monkeypatch.setattr(faults, "os", SimpleNamespace(
        environ=real.environ, getpid=lambda: 11, getppid=lambda: 7,
        kill=lambda pid, sig: sent.append((pid, sig)),
    ))  # fmt: skip
    if wanted is None:
        monkeypatch.delenv(faults.KILL_ENV, raising=False)
    else:
        monkeypatch.setenv(faults.KILL_ENV, wanted)
    faults.checkpoint(stage)
    assert sent == ([(11, faults.signal.SIGKILL)] if fires else [])
    assert not faults.in_data_worker()


def test_errors_are_one_line_whatever_the_message_holds():
    error = DataError("bad file a\r\nb\nc.wav")
    assert str(error) == "bad file a\\r\\nb\\nc.wav" and error.exit_code == 2
    assert Interrupted("stopped").exit_code == 130 and isinstance(error, HarnessError)


def test_torchrun_ranks_come_from_its_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_ranks() == Ranks() and not Ranks().active and Ranks().is_main
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ranks = env_ranks()
    assert ranks == Ranks(1, 2, 1) and ranks.active and not ranks.is_main
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert env_ranks() == Ranks()
