"""The paired spread of Table 3's comparison ICL + Multi DIRs - PaSST, live weights against
their moving average (``ema.toml``).

For each metric (the live weights' ``device-logloss/logloss/overall`` and the average's
``ema/device-logloss/logloss/overall``) it prints the rows' seed spreads, the paired
differences by seed, their standard deviation and the smallest paired difference detectable
at 80 % power with 3 and with all seeds (``harness.results.stats``); with ``--table3`` it
also checks that the live weights of seeds the device store holds give Table 3's values.

    python benchmarks/power/paired.py runs/power.sqlite [--table3 runs/device.sqlite]
"""

from __future__ import annotations

import argparse
import math

from harness.results.stats import compare_paired, detectable_difference, seeds_needed, summarize
from harness.results.store import ResultStore

METRIC = "device-logloss/logloss/overall"
ROWS = {"PaSST": ("ce", "none"), "ICL + Multi DIRs": ("icl", "multidir")}


def by_seed(store: ResultStore, method: str, aug: str, metric: str, ema: bool | None) -> dict:
    """``metric`` of the runs of ``method`` + ``aug``, by seed; ``ema`` picks runs with
    (True) or without (False) ``run.ema``, None any."""
    values = {}
    for record in store.records(method=method, aug=aug):
        has_ema = bool(record.config.get("run", {}).get("ema"))
        if ema is not None and has_ema != ema:
            continue
        if record.method == "icl" and not record.config["method"].get("normalize", True):
            continue
        if metric in record.metrics:
            values[record.seed] = record.metrics[metric]
    return values


def report(store: ResultStore, metric: str) -> None:
    rows = {label: by_seed(store, *key, metric, ema=True) for label, key in ROWS.items()}
    print(f"\n{metric}")
    for label, values in rows.items():
        summary = summarize(list(values.values()))
        cells = " ".join(f"{seed}:{value:.3f}" for seed, value in sorted(values.items()))
        print(f"  {label:18s} n={summary.n} mean {summary.mean:.3f} sd {summary.std:.3f}  {cells}")
    comparison = compare_paired(rows["ICL + Multi DIRs"], rows["PaSST"])
    sd = comparison.sd
    print(
        f"  paired ICL - PaSST: n={comparison.n_pairs} diff {comparison.diff:+.3f} "
        f"[{comparison.diff_low:+.3f}, {comparison.diff_high:+.3f}] sd {sd:.3f}; detectable at "
        f"80 % power: 3 seeds {detectable_difference(sd, 3):.3f}, "
        f"{comparison.n_pairs} seeds {comparison.detectable:.3f}; seeds for 0.05: "
        f"{seeds_needed(0.05, sd) if math.isfinite(sd) else 'n/a'}"
    )


def check_table3(store: ResultStore, table3: ResultStore) -> None:
    """The live weights of an ``run.ema`` run equal the same seed's run without it."""
    for label, key in ROWS.items():
        ours = by_seed(store, *key, METRIC, ema=True)
        theirs = by_seed(table3, *key, METRIC, ema=False)
        for seed in sorted(set(ours) & set(theirs)):
            same = "equal" if ours[seed] == theirs[seed] else "DIFFERENT"
            print(f"  {label} seed {seed}: {ours[seed]:.6f} vs Table 3 {theirs[seed]:.6f} {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--table3", help="Table 3's store, to check the live weights against")
    args = parser.parse_args()
    store = ResultStore(args.store)
    for metric in (METRIC, f"ema/{METRIC}"):
        report(store, metric)
    if args.table3:
        print("\nlive weights against Table 3's runs")
        check_table3(store, ResultStore(args.table3))


if __name__ == "__main__":
    main()
