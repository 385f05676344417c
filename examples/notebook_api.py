"""The Python API in a notebook: run, read the store as a DataFrame, render a leaderboard.

A tiny PaSST on a small embedded device benchmark (about a minute on a laptop CPU).
Run it as a script (``python examples/notebook_api.py [OUT_FOLDER]``) or cell by cell.
"""

import sys
from pathlib import Path

import harness.notebook as hn

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/notebook")
tiny = [
    "backbone.size=tiny",
    "dataset.scale=0.02",  # a few dozen training clips
    "dataset.eval_recordings=2",
    "run.lr=0.001",
]

# 1. Run two configurations; the same objects `harness run` builds and stores.
for method in ("ce", "icl"):
    cfg = hn.configure(backbone="passt", method=method, aug="none", epochs=1, sets=tiny)
    result = hn.run(cfg, out=out)
    print(result.record.run_id, result.record.metrics["device-logloss/logloss/overall"])
print(result.tables["device-logloss"])

# 2. The store as a pandas DataFrame: one row per run, one column per metric.
frame = hn.runs_frame(out / "results.sqlite")
print(frame[["method", "seed", "device-logloss/logloss/overall"]])

# 3. A leaderboard from a spec (here the default: device log-loss, best and mean of seeds).
print(hn.leaderboard(None, out / "results.sqlite", agg="best"))
tables = hn.leaderboard(None, out / "results.sqlite", fmt="tables", agg="mean")
print(tables[0].values)
