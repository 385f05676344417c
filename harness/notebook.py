"""The Python API for notebooks: the objects the command line uses, as functions.

::

    import harness.notebook as hn

    result = hn.run(backbone="passt", method="icl", aug="multidir", epochs=1,
                    sets=["backbone.size=tiny", "dataset.scale=0.05"], out="runs")
    result.record.metrics["device-logloss/logloss/overall"]
    print(result.tables["device-logloss"])
    frame = hn.runs_frame("runs/results.sqlite")   # one column per metric
    clips = hn.samples(result.record.run_dir)      # per-clip predictions (log_samples=True)
    print(hn.leaderboard("leaderboards/device_generalization.toml", "runs/results.sqlite"))

Configurations resolve exactly as ``harness run`` resolves them (defaults < ``config``
file < keyword flags < ``sets``), runs are stored in the same SQLite store, and
leaderboards are rendered by the same code as ``harness leaderboard``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.cli.main import raw_config
from harness.registry.config import RunConfig, resolve
from harness.registry.plugins import Plugins, load_plugins
from harness.results.leaderboard import (
    LeaderboardSpec,
    Table,
    build_tables,
    shown_metric,
    stored_metric_columns,
)
from harness.results.render import render
from harness.results.store import SAMPLES_FILE, ResultStore, RunRecord
from harness.util.errors import UsageError

__all__ = [
    "ResultStore",
    "RunConfig",
    "Table",
    "configure",
    "leaderboard",
    "plugins",
    "run",
    "runs_frame",
    "samples",
]

FLAGS = (
    "backbone", "method", "aug", "dataset", "protocol", "epochs", "batch_size", "seed",
    "log_samples",
)  # fmt: skip

_loaded: dict[tuple[tuple[str, ...], tuple[str, ...]], Plugins] = {}


def plugins(extra: Iterable[str] = (), blocked: Iterable[str] = ()) -> Plugins:
    """The installed plugins plus ``extra`` files or modules (loaded once per combination)."""
    key = (tuple(extra), tuple(blocked))
    if key not in _loaded:
        _loaded[key] = load_plugins(*key)
    return _loaded[key]


def configure(
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    plugin_specs: Iterable[str] = (),
    device: str | None = None,
    **flags: Any,
) -> RunConfig:
    """A resolved, validated run configuration, as ``harness run`` would build it.

    ``flags`` are the command's flags (``backbone``, ``method``, ``aug``, ``dataset``,
    ``protocol``, ``epochs``, ``batch_size``, ``seed``); ``sets`` are ``--set`` assignments.
    """
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise UsageError(f"unknown run option '{sorted(unknown)[0]}' (use sets=['key=value'])")
    raw = raw_config(str(config) if config else None, {**flags, "device": device}, tuple(sets))
    return resolve(raw, plugins(plugin_specs))


def run(
    config: RunConfig | str | Path | None = None,
    *,
    out: str | Path = "runs",
    store: str | Path | None = None,
    sets: Sequence[str] = (),
    **flags: Any,
):
    """Train, evaluate and store one run; returns its ``RunResult`` (``record``, ``tables``).

    ``config`` is a :class:`RunConfig` from :func:`configure`, or a TOML file.
    """
    from harness.run.experiment import run_experiment  # torch: reading results needs none

    cfg = config if isinstance(config, RunConfig) else configure(config, sets, **flags)
    out = Path(out)
    return run_experiment(cfg, out, ResultStore(store or out / "results.sqlite"))


def runs_frame(store: str | Path, **filters: str | None) -> pd.DataFrame:
    """The store as a DataFrame: one row per run, record fields, then one column per metric,
    in the unit leaderboards show it with the unit in its name: accuracies in percent
    (``device-logloss/acc/overall (%)``, stored as a fraction), log-loss as is
    (``device-logloss/logloss/overall``). ``RunRecord.metrics`` keeps the stored values."""
    records = ResultStore(store).records(**filters)
    skip = ("config", "metrics", "environment")
    fields = [f.name for f in dataclasses.fields(RunRecord) if f.name not in skip]
    columns = stored_metric_columns(plugins()) if records else {}
    shown = {k: shown_metric(k, columns) for r in records for k in r.metrics}
    rows = [
        {
            **{f: getattr(r, f) for f in fields},
            **{shown[k][0]: v * shown[k][1] for k, v in r.metrics.items()},
        }
        for r in records
    ]
    frame = pd.DataFrame(rows)
    metric_columns = sorted({name for name, _ in shown.values()})
    return frame.reindex(columns=[*fields, *metric_columns])


def samples(run: str | Path, store: str | Path | None = None) -> pd.DataFrame:
    """A run's per-clip predictions (saved with ``--log-samples``) as a DataFrame: ``clip``,
    ``device``, ``label``, ``predicted``, then one ``p(<class>)`` column per class.

    ``run``: the run folder, or a run id looked up in ``store``.
    """
    folder = Path(run)
    if not folder.is_dir():
        if store is None:
            raise UsageError(f"no run folder {run} (pass store= to look a run id up)")
        found = [r for r in ResultStore(store).records() if r.run_id == str(run)]
        if not found:
            raise UsageError(f"no run {run} in {store}")
        folder = Path(found[0].run_dir)
    path = folder / SAMPLES_FILE
    if not path.is_file():
        raise UsageError(f"{path} not found: the run was not made with --log-samples")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame([{k: v for k, v in row.items() if k != "probabilities"} for row in rows])
    probabilities = pd.DataFrame([row["probabilities"] for row in rows])
    return pd.concat([frame, probabilities.add_prefix("p(").add_suffix(")")], axis=1)


def leaderboard(
    spec: str | Path | LeaderboardSpec | None,
    store: str | Path,
    fmt: str = "markdown",
    plugin_specs: Iterable[str] = (),
    **options: str | None,
) -> str | list[Table]:
    """A leaderboard from a spec file (or :class:`LeaderboardSpec`) and a store.

    ``fmt``: ``markdown``, ``csv``, ``latex``, ``json``, ``html`` (text), or ``tables`` for
    the :class:`Table` objects themselves (``labels``, ``values``, ``errors`` frames, and
    ``statistics`` in the mean table). ``options`` are ``harness leaderboard``'s (``protocol``,
    ``metric``, ``agg``, ``baseline``, filters).
    """
    if isinstance(spec, LeaderboardSpec):
        board = spec
    else:
        board = LeaderboardSpec.from_file(Path(spec)) if spec else LeaderboardSpec()
    board = board.with_options(**options)
    records = ResultStore(store).records()
    tables = build_tables(board, records, plugins(plugin_specs))
    return tables if fmt == "tables" else render(board, tables, fmt, records)
