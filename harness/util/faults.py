"""Test hook: stop this process with SIGKILL at a named stage (for the kill suite).

Set ``HARNESS_TEST_KILL_AT`` to a stage name and the process kills itself the
first time it reaches that stage; unset (always, outside tests) it does nothing.
Stages: ``generate`` (a cache folder such as generated data is filled but not yet
in place, its done marker not written), ``discard`` (a damaged cache folder is moved
aside, not yet deleted), ``audio`` (the first audio file is read), ``epoch`` (the first training
batch), ``predicting`` / ``embedding`` (the first evaluation batch), ``staging``
(part of a run folder is written), ``insert`` (the store row is inserted but not
committed), ``commit`` (the row is committed, the run folder not yet renamed), ``renamed``
(the run folder is in place, its ``OUT/.partial/<id>`` not yet removed), ``partial``
(``OUT/.partial/<id>`` was just created, nothing in it yet).
Progress-bar stages match the start of a bar's name (``epoch`` matches ``epoch 1/3``).
In a DataLoader worker the hook kills the worker's parent, the harness process.
"""

from __future__ import annotations

import os
import signal
import sys

KILL_ENV = "HARNESS_TEST_KILL_AT"


def checkpoint(stage: str) -> None:
    """SIGKILL this process if ``HARNESS_TEST_KILL_AT`` names ``stage`` (or a prefix of it)."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and (stage == wanted or stage.startswith(f"{wanted} ")):
        os.kill(os.getppid() if in_data_worker() else os.getpid(), signal.SIGKILL)


def in_data_worker() -> bool:
    """Whether this is a DataLoader worker process (whose parent is the harness process)."""
    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None
