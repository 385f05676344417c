"""Leaderboards: stored runs -> frame -> rows grouped over seeds -> Markdown, CSV or LaTeX.

Computation is kept apart from I/O: :func:`build_tables` is a pure function of
run records and a :class:`LeaderboardSpec`; :func:`render` only formats.
A spec (TOML, see ``leaderboards/``) names the protocol, the metric family,
optional named rows matched against each run's resolved config, and how to
aggregate seeds: the best seed by the protocol's primary column (as papers
report), mean ± std, or both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.api import Column
from harness.registry.config import read_toml
from harness.registry.plugins import Plugins
from harness.results.store import RunRecord
from harness.util.errors import UsageError

AGGREGATIONS = ("best", "mean", "both", "runs")
RECORD_FIELDS = ("backbone", "method", "aug", "dataset", "seed")
SPEC_KEYS = {
    "title",
    "protocol",
    "metric",
    "agg",
    "filters",
    "where",
    "rows",
    "columns",
    "recipe_augs",
    "sweep",
}


@dataclass(frozen=True)
class RowSpec:
    """A named leaderboard row: the runs whose config matches every ``match`` entry."""

    label: str
    match: dict[str, Any]


@dataclass(frozen=True)
class LeaderboardSpec:
    """What a leaderboard shows: protocol, metric, seed aggregation, filters, rows."""

    title: str = ""
    protocol: str = "device-logloss"
    metric: str | None = None
    agg: str = "both"
    filters: dict[str, str] = field(default_factory=dict)
    rows: tuple[RowSpec, ...] = ()
    columns: tuple[str, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)
    """A match every run of the leaderboard must satisfy (e.g. the protocols its sweep runs)."""
    recipe_augs: tuple[str, ...] = ()
    """Augmentations every run shares (a training recipe); rows match ``aug`` without them."""

    @classmethod
    def from_file(cls, path: Path) -> LeaderboardSpec:
        data = read_toml(path)
        unknown = set(data) - SPEC_KEYS
        if unknown:
            raise UsageError(f"unknown key '{sorted(unknown)[0]}' in leaderboard spec {path}")
        rows = []
        for i, row in enumerate(data.get("rows", [])):
            if not isinstance(row, dict) or "label" not in row or "match" not in row:
                raise UsageError(f"{path}: rows[{i}] needs 'label' and 'match'")
            rows.append(RowSpec(str(row["label"]), dict(row["match"])))
        spec = cls(
            title=data.get("title", ""),
            protocol=data.get("protocol", cls.protocol),
            metric=data.get("metric"),
            agg=data.get("agg", cls.agg),
            filters=dict(data.get("filters", {})),
            rows=tuple(rows),
            columns=tuple(data.get("columns", ())),
            recipe_augs=tuple(data.get("recipe_augs", ())),
            where=dict(data.get("where", {})),
        )
        return spec.validated(str(path))

    def with_options(self, **options: str | None) -> LeaderboardSpec:
        """Apply command-line options (None leaves the spec's value)."""
        filters = dict(self.filters)
        for key in ("backbone", "method", "aug", "dataset"):
            if options.get(key) is not None:
                filters[key] = options[key]
        changes = {
            k: options[k] for k in ("protocol", "metric", "agg") if options.get(k) is not None
        }
        return replace(self, filters=filters, **changes).validated("command line")

    def validated(self, source: str) -> LeaderboardSpec:
        if self.agg not in AGGREGATIONS:
            raise UsageError(
                f"{source}: agg must be one of {', '.join(AGGREGATIONS)}, got {self.agg!r}"
            )
        unknown = set(self.filters) - set(RECORD_FIELDS)
        if unknown:
            raise UsageError(f"{source}: cannot filter by '{sorted(unknown)[0]}'")
        return self


# -- computation ----------------------------------------------------------------


def config_value(record: RunRecord, key: str) -> Any:
    """A run's value for ``key``: a record field (method, aug, ...) or a dotted config path."""
    if key in RECORD_FIELDS:
        return getattr(record, key)
    node: Any = record.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def matches(
    record: RunRecord, match: dict[str, Any], recipe_augs: frozenset[str] = frozenset()
) -> bool:
    """Every ``match`` entry holds; for ``aug``, augmentations of the shared recipe are ignored."""
    for key, wanted in match.items():
        if key == "aug":
            if aug_set(record.aug) - recipe_augs != aug_set(str(wanted)) - recipe_augs:
                return False
        elif not _same(config_value(record, key), wanted):
            return False
    return True


def aug_set(label: str) -> frozenset[str]:
    """The augmentations of a ``a+b`` label (``none`` is the empty set)."""
    return frozenset(a for a in label.split("+") if a and a != "none")


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return math.isclose(value, wanted, rel_tol=1e-9, abs_tol=1e-12)
    return value == wanted


def seedless_key(record: RunRecord) -> str:
    """Identifies runs that differ only in their seed."""
    config = json.loads(json.dumps(record.config))
    config.get("run", {}).pop("seed", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config tables as ``{dotted.key: value}`` (lists as JSON)."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = json.dumps(value) if isinstance(value, list) else value
    return out


def varying_params(records: list[RunRecord]) -> list[str]:
    """Config keys (besides seed and component names) whose values differ between runs."""
    flat = [flatten(r.config) for r in records]
    keys = sorted({k for f in flat for k in f})
    skip = {
        "run.seed",
        "backbone.name",
        "method.name",
        "dataset.name",
        "aug.names",
        "protocol.names",
    }
    return [
        k for k in keys if k not in skip and len({json.dumps(f[k]) for f in flat if k in f}) > 1
    ]


def auto_label(record: RunRecord, params: list[str]) -> str:
    """``key=value, ...`` of the varying parameters, naming a row."""
    flat = flatten(record.config)
    parts = [f"{k}={flat[k]}" for k in params if k in flat and not k.startswith("protocol.")]
    return ", ".join(parts)


def select_columns(
    spec: LeaderboardSpec, plugins: Plugins, records: list[RunRecord]
) -> list[Column]:
    """The protocol's declared columns in the metric family, or the spec's explicit ones."""
    protocol = plugins["protocol"].get(spec.protocol).cls
    declared = {c.key: c for c in protocol.columns}
    if spec.columns:
        return [declared.get(k, Column(k, k)) for k in spec.columns]
    primary = protocol.primary or next(iter(declared), "")
    family = spec.metric or (primary.split("/")[0] if "/" in primary else "")
    columns = [c for c in protocol.columns if c.key.split("/")[0] == family or not family]
    if not columns:
        keys = sorted({k for r in records for k in metrics_of(r, spec.protocol)})
        columns = [Column(k, k) for k in keys if k.split("/")[0] == family or not family]
    present = {k for r in records for k in metrics_of(r, spec.protocol)}
    return [c for c in columns if c.key in present]


def no_columns_message(spec: LeaderboardSpec, plugins: Plugins, records: list[RunRecord]) -> str:
    """Why a protocol has no columns to show, with the metric families stored."""
    protocol = plugins["protocol"].get(spec.protocol).cls
    stored = {k.split("/")[0] for r in records for k in metrics_of(r, spec.protocol)}
    families = sorted({c.key.split("/")[0] for c in protocol.columns} | stored)
    wanted = f"metric '{spec.metric}'" if spec.metric else f"columns {', '.join(spec.columns)}"
    return (
        f"protocol '{spec.protocol}' reports no {wanted} in the stored runs; "
        f"choose --metric from: {', '.join(families) or 'none'}"
    )


def metrics_of(record: RunRecord, protocol: str) -> dict[str, float]:
    """A run's metrics of one protocol, without the ``protocol/`` prefix."""
    prefix = f"{protocol}/"
    return {k[len(prefix) :]: v for k, v in record.metrics.items() if k.startswith(prefix)}


def grouped_runs(
    spec: LeaderboardSpec, records: list[RunRecord]
) -> list[tuple[dict[str, str], list[RunRecord]]]:
    """``(row labels, runs)`` per leaderboard row, in spec order or first-seen order."""
    records = [r for r in records if all(getattr(r, k) == v for k, v in spec.filters.items())]
    records = [r for r in records if any(k.startswith(f"{spec.protocol}/") for k in r.metrics)]
    records = [r for r in records if matches(r, spec.where)]
    if spec.rows:
        out = []
        for row in spec.rows:
            runs = [r for r in records if matches(r, row.match, frozenset(spec.recipe_augs))]
            for _, group in _by_config(runs):
                out.append(({"row": row.label}, group))
        return out
    params = varying_params(records)
    return [
        (
            {
                "backbone": group[0].backbone,
                "method": group[0].method,
                "aug": group[0].aug,
                "dataset": group[0].dataset,
                "params": auto_label(group[0], params),
            },
            group,
        )
        for _, group in _by_config(records)
    ]


def _by_config(records: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(seedless_key(record), []).append(record)
    return list(groups.items())


@dataclass
class Table:
    """A leaderboard table: label columns, numeric cells and the column definitions."""

    title: str
    labels: pd.DataFrame
    values: pd.DataFrame
    errors: pd.DataFrame | None
    columns: list[Column]
    error_kind: str = "std"
    """``std`` over seeds, or ``own``: each run's own uncertainty (:attr:`Column.error_key`)."""


def build_tables(spec: LeaderboardSpec, records: list[RunRecord], plugins: Plugins) -> list[Table]:
    """The leaderboard's tables, one per seed aggregation (best, mean): a row per run group,
    a column per metric."""
    columns = select_columns(spec, plugins, records)
    groups = grouped_runs(spec, records)
    if groups and not columns:
        raise UsageError(no_columns_message(spec, plugins, records))
    protocol = plugins["protocol"].get(spec.protocol).cls
    primary = protocol.primary or (columns[0].key if columns else None)
    lower_better = not next(
        (c.higher_is_better for c in protocol.columns if c.key == primary), False
    )
    aggs = ("best", "mean") if spec.agg == "both" else (spec.agg,)
    return [_aggregate(agg, groups, columns, spec.protocol, primary, lower_better) for agg in aggs]


def numeric_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Metric rows as floats; anything missing, non-numeric or non-finite becomes NaN (a dash)."""
    frame = pd.DataFrame(rows)
    frame = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    return frame.where(frame.abs() != math.inf)


def _aggregate(agg, groups, columns, protocol, primary, lower_better) -> Table:
    label_rows, value_rows, error_rows = [], [], []
    own_errors = any(c.error_key for c in columns)
    for labels, runs in groups:
        metrics = numeric_frame([metrics_of(r, protocol) for r in runs])
        frame = metrics.reindex(columns=[c.key for c in columns])
        errors = pd.DataFrame(
            {
                c.key: metrics.get(c.error_key, math.nan) if c.error_key else math.nan
                for c in columns
            },
            index=metrics.index,
        )
        if agg == "runs":
            for (index, row), run in zip(frame.iterrows(), runs, strict=True):
                label_rows.append({**labels, "seed": run.seed, "run": run.run_id})
                value_rows.append(row)
                if own_errors:
                    error_rows.append(errors.loc[index])
            continue
        label_rows.append({**labels, "seeds": len(runs)})
        if agg == "mean":
            value_rows.append(frame.mean())
            error_rows.append(frame.std(ddof=1) if len(runs) > 1 else frame.iloc[0] * math.nan)
        else:
            ranking = (frame[primary] if primary in frame else frame.iloc[:, 0]).dropna()
            if ranking.empty:
                best = frame.index[0]  # no finite score to rank by: show the first run
            else:
                best = ranking.idxmin() if lower_better else ranking.idxmax()
            value_rows.append(frame.loc[best])
            if own_errors:
                error_rows.append(errors.loc[best])
    titles = {"best": "Best of seeds", "mean": "Mean ± std over seeds", "runs": "All runs"}
    return Table(
        title=titles[agg],
        labels=pd.DataFrame(label_rows),
        values=pd.DataFrame(value_rows).reset_index(drop=True),
        errors=pd.DataFrame(error_rows).reset_index(drop=True) if error_rows else None,
        columns=columns,
        error_kind="std" if agg == "mean" else "own",
    )


# -- rendering --------------------------------------------------------------------


def header(column: Column, fmt: str = "markdown") -> str:
    """A column heading with the arrow of the better direction."""
    if fmt == "latex":
        arrow = "$\\uparrow$" if column.higher_is_better else "$\\downarrow$"
    else:
        arrow = "↑" if column.higher_is_better else "↓"
    return f"{column.group} {column.label} {arrow}".strip()


def best_index(values: pd.Series, column: Column) -> Any:
    """The row of the best value of a column (None when all values are equal)."""
    if values.dropna().nunique() < 2:
        return None
    return values.idxmax() if column.higher_is_better else values.idxmin()


def cell_text(table: Table, row: int, column: Column, fmt: str) -> str:
    """A table cell: the value, its error if any, the best value in bold."""
    value = table.values.at[row, column.key]
    if pd.isna(value):
        return "–"
    text = f"{value:.3f}"
    error = table.errors.at[row, column.key] if table.errors is not None else math.nan
    if not pd.isna(error):
        pm = " $\\pm$ " if fmt == "latex" else " ± "
        text += f"{pm}{error:.3f}"
    bold = "**{}**" if fmt == "markdown" else "\\textbf{{{}}}"
    is_best = best_index(table.values[column.key], column) == row
    return bold.format(text) if is_best and len(table.values) > 1 else text


def csv_frame(table: Table) -> pd.DataFrame:
    """Plain numbers (and std columns) for CSV; the aggregation is a column."""
    frame = table.labels.copy()
    frame.insert(0, "aggregate", table.title)
    for column in table.columns:  # metric keys as headers: no arrows or spaces
        frame[column.key] = table.values[column.key].round(6)
        if table.errors is not None and (table.error_kind == "std" or column.error_key):
            name = "std" if table.error_kind == "std" else column.error_key
            frame[f"{column.key}_{name}"] = table.errors[column.key].round(6)
    return frame


def render_table(table: Table, fmt: str) -> str:
    """One table as Markdown (GitHub) or LaTeX."""
    rows = []
    for i in range(len(table.labels)):
        labels = [str(v) for v in table.labels.iloc[i].tolist()]
        rows.append(labels + [cell_text(table, i, c, fmt) for c in table.columns])
    headers = [*table.labels.columns, *(header(c, fmt) for c in table.columns)]
    return tabulate(rows, headers=headers, tablefmt="github" if fmt == "markdown" else "latex_raw")


# -- options away from their defaults (the seed methods' defaults are the papers') --------


def non_default_options(records: list[RunRecord], plugins: Plugins) -> list[str]:
    """``section.option=value`` of every component option the runs set away from its default."""
    found: dict[str, None] = {}
    for record in records:
        for prefix, kind, stored in components_of(record.config):
            try:
                defaults = to_plain_default(plugins[kind].get(str(stored.get("name"))).cls)
            except (UsageError, TypeError):
                continue
            for key, value in stored.items():
                if key in defaults and json.dumps(value) != json.dumps(defaults[key]):
                    found[f"{prefix}.{key}={json.dumps(value)}"] = None
    return sorted(found)


def components_of(config: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(config prefix, plugin kind, stored options)`` of each component of a run's config."""
    out = []
    for section, kind in (("backbone", "backbone"), ("method", "method"), ("dataset", "dataset")):
        if isinstance(config.get(section), dict):
            out.append((section, kind, config[section]))
    for section, kind in (("aug", "augmentation"), ("protocol", "protocol")):
        table = config.get(section) or {}
        for name in table.get("names", []):
            if isinstance(table.get(name), dict):
                out.append((f"{section}.{name}", kind, {"name": name, **table[name]}))
    return out


def to_plain_default(cls: type) -> dict[str, Any]:
    """A component's default options as stored in run configs."""
    return json.loads(json.dumps(dataclasses.asdict(cls.Config()), default=str))


def options_note(options: list[tuple[str, list[str]]], fmt: str) -> str:
    """The options each row sets away from their defaults (the papers' values for the seed
    methods, see docs/defaults.md); a Markdown list, or LaTeX comments."""
    lines = ["Options away from their defaults (seed-method defaults are the papers' values):"]
    lines += [f"- {row}: {', '.join(f'`{o}`' for o in opts)}" for row, opts in options]
    if fmt != "markdown":
        return "\n".join(f"% {line.replace('`', '')}" for line in lines) + "\n"
    return "\n".join(lines) + "\n"
