"""A process that stores pre-trained run records (for the concurrency test).

``python store_worker.py OUT STORE START_FILE WORKER RUNS``: waits for START_FILE, then
commits RUNS records through :func:`harness.results.store.commit_run`, printing each run id.
Odd workers all store one identical configuration; even ones each their own.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness.results.store import ResultStore, RunRecord, commit_run, new_run_id, write_json


def main(out: Path, store: ResultStore, start: Path, worker: int, runs: int) -> None:
    while not start.exists():
        time.sleep(0.01)
    for i in range(runs):
        identical = worker % 2 == 1
        config_hash = "identical" if identical else f"w{worker}-{i}"
        run_id = new_run_id(datetime.now(UTC), config_hash)
        metrics = {"device-logloss/logloss/overall": 1.0 + worker + i / 10}
        config = {
            "run": {"seed": i},
            "method": {"name": "ce", "worker": -1 if identical else worker},
        }
        record = RunRecord(
            run_id, datetime.now(UTC).isoformat(), config_hash, "passt", "ce", "none",
            "tau22-embedded", "device-logloss", i, config, metrics, str(out / run_id), "0", "",
            {}, 0.1,
        )  # fmt: skip
        commit_run(
            out / run_id, store, record, lambda tmp, m=metrics: write_json(tmp / "metrics.json", m)
        )
        print(run_id, flush=True)


if __name__ == "__main__":
    out, store, start, worker, runs = sys.argv[1:6]
    main(Path(out), ResultStore(store), Path(start), int(worker), int(runs))
