"""Leaderboards: stored runs -> frame -> rows grouped over seeds -> Markdown, CSV or LaTeX.

Computation is kept apart from I/O: :func:`build_tables` is a pure function of
run records and a :class:`LeaderboardSpec`; :func:`render` only formats.
A spec (TOML, see ``leaderboards/``) names the protocol, the metric family,
optional named rows matched against each run's resolved config, and how to
aggregate seeds: the best seed by the protocol's primary column (as papers
report), the mean over seeds with its 95 % confidence interval, or both. A spec's
``baseline`` row adds to the mean table each other row's difference to it, paired by seed,
with its interval, p-value and Holm-corrected significance (:mod:`harness.results.stats`).
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
from harness.registry.config import hashed_config, read_toml
from harness.registry.plugins import Plugins
from harness.results.stats import SeedStatistics, seed_statistics
from harness.results.store import RunRecord
from harness.util.errors import UsageError
from harness.util.specs import SpecFile

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
    "baseline",
}


@dataclass(frozen=True)
class RowSpec:
    """A named leaderboard row: the runs whose config matches every ``match`` entry."""

    label: str
    match: dict[str, Any]


@dataclass(frozen=True)
class ColumnSpec:
    """A column given as a table in a spec: ``metric`` of the spec's protocol, taken from the
    runs of each row that match ``where`` (e.g. ``{dataset = "esc50"}``), so one row can show
    several data sets (several runs) side by side; ``note`` says why it may be empty."""

    metric: str
    label: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    """The column's name in the table (CSV header, JSON key); default ``metric@where values``."""
    note: str = ""
    """Shown under the table when no row has a value in this column (e.g. needs the real data)."""

    @property
    def table_key(self) -> str:
        if self.key:
            return self.key
        if not self.where:
            return self.metric
        values = [v if isinstance(v, list) else [v] for v in self.where.values()]
        return f"{self.metric}@" + "+".join(str(v) for vs in values for v in vs)


COLUMN_KEYS = {"metric", "label", "where", "key", "note"}


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
    baseline: str | None = None
    """The row (its label, see :func:`row_name`) every other row is compared to, by seed."""
    column_specs: tuple[ColumnSpec, ...] = ()
    """Every column, when the spec gives some as tables (:class:`ColumnSpec`); ``columns``
    then holds their table keys."""

    @property
    def scoped(self) -> bool:
        """Whether a column takes its values from only some runs of a row (``where``)."""
        return any(c.where for c in self.column_specs)

    @classmethod
    def from_file(cls, path: Path) -> LeaderboardSpec:
        data = read_toml(path)
        unknown = set(data) - SPEC_KEYS
        if unknown:
            raise UsageError(f"unknown key '{sorted(unknown)[0]}' in leaderboard spec {path}")
        spec_file = SpecFile(data, path, "leaderboard spec")
        rows = []
        for i, row in enumerate(spec_file.tables("rows")):
            if "label" not in row or "match" not in row:
                raise UsageError(f"{path}: rows[{i}] needs 'label' and 'match'")
            label = spec_file.typed(f"rows[{i}].label", row["label"], str | int | float)
            match = spec_file.typed(f"rows[{i}].match", row["match"], dict)
            rows.append(RowSpec(str(label), dict(match)))
        column_specs = read_column_specs(spec_file)
        spec = cls(
            title=spec_file.get("title", str, ""),
            protocol=spec_file.get("protocol", str, cls.protocol),
            metric=spec_file.get("metric", str, None),
            agg=spec_file.get("agg", str, cls.agg),
            filters=spec_file.get("filters", dict, {}),
            rows=tuple(rows),
            columns=tuple(c.table_key for c in column_specs),
            column_specs=column_specs if any(c.where or c.label for c in column_specs) else (),
            recipe_augs=spec_file.strings("recipe_augs"),
            where=spec_file.get("where", dict, {}),
            baseline=spec_file.get("baseline", str, None),
        )
        return spec.validated(str(path))

    def with_options(self, **options: str | None) -> LeaderboardSpec:
        """Apply command-line options (None leaves the spec's value)."""
        filters = dict(self.filters)
        for key in ("backbone", "method", "aug", "dataset"):
            if options.get(key) is not None:
                filters[key] = options[key]
        changes: dict[str, Any] = {
            k: options[k]
            for k in ("protocol", "metric", "agg", "baseline")
            if options.get(k) is not None
        }
        if options.get("metric") is not None:
            changes["columns"] = ()  # the metric family's columns, not the spec's own list
            changes["column_specs"] = ()
        return replace(self, filters=filters, **changes).validated("command line")

    def validated(self, source: str) -> LeaderboardSpec:
        if self.agg not in AGGREGATIONS:
            raise UsageError(
                f"{source}: agg must be one of {', '.join(AGGREGATIONS)}, got {self.agg!r}"
            )
        unknown = set(self.filters) - set(RECORD_FIELDS)
        if unknown:
            raise UsageError(f"{source}: cannot filter by '{sorted(unknown)[0]}'")
        if len(set(self.columns)) < len(self.columns):
            twice = next(k for k in self.columns if self.columns.count(k) > 1)
            raise UsageError(f"{source}: two columns are named '{twice}' (give one a 'key')")
        if self.scoped and not self.rows:
            raise UsageError(f"{source}: columns with 'where' need named [[rows]]")
        return self


def read_column_specs(spec_file: SpecFile) -> tuple[ColumnSpec, ...]:
    """``columns``: metric names, or tables ``{metric, label, where, key, note}``."""
    out = []
    for i, value in enumerate(spec_file.get("columns", list, [])):
        name = f"columns[{i}]"
        if isinstance(value, str):
            out.append(ColumnSpec(value))
            continue
        if not isinstance(value, dict):
            raise UsageError(
                f"{spec_file.label} {spec_file.path}: {name} must be a string or a table, "
                f"got {value!r}"
            )
        entry = value
        unknown = set(entry) - COLUMN_KEYS
        if unknown:
            raise UsageError(
                f"{spec_file.label} {spec_file.path}: unknown key '{sorted(unknown)[0]}' in {name}"
            )
        if "metric" not in entry:
            raise UsageError(f"{spec_file.label} {spec_file.path}: {name} needs 'metric'")
        texts = {
            k: spec_file.typed(f"{name}.{k}", entry[k], str)
            for k in ("metric", "label", "key", "note")
            if k in entry
        }
        where = dict(spec_file.typed(f"{name}.where", entry.get("where", {}), dict))
        out.append(ColumnSpec(where=where, **texts))
    return tuple(out)


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


def column_matches(record: RunRecord, where: dict[str, Any]) -> bool:
    """A column's ``where`` holds: as :func:`matches`, and a list of values (``dataset =
    ["esc50", "fewshot-embedded"]``) matches a run whose (non-list) value is any of them."""
    for key, wanted in where.items():
        value = config_value(record, key)
        if isinstance(wanted, list) and not isinstance(value, list):
            if not any(_same(value, one) for one in wanted):
                return False
        elif not matches(record, {key: wanted}):
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
    """Identifies runs that differ only in their seed: their config as hashed (record-only
    settings, and settings added later at their default, left out) without the seed."""
    config = hashed_config(json.loads(json.dumps(record.config)))
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
    if spec.column_specs:
        return [scoped_column(c, declared) for c in spec.column_specs]
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


def scoped_column(column: ColumnSpec, declared: dict[str, Column]) -> Column:
    """The table column of a spec's column table: its label (else the protocol's), the
    protocol's direction for its metric, under its table key."""
    known = declared.get(column.metric, Column(column.metric, column.metric))
    return replace(
        known,
        key=column.table_key,
        label=column.label or known.label,
        group="" if column.label else known.group,
    )


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


def stored_metric_columns(plugins: Plugins) -> dict[str, Column]:
    """Every protocol's columns by their full stored key (``device-logloss/acc/overall``),
    a column's own error (``error_key``) under the column it belongs to."""
    out: dict[str, Column] = {}
    for name in plugins["protocol"].names():
        for column in plugins["protocol"].get(name).cls.columns:
            out.setdefault(f"{name}/{column.key}", column)
            if column.error_key:
                out.setdefault(f"{name}/{column.error_key}", column)
    return out


def shown_metric(key: str, columns: dict[str, Column]) -> tuple[str, float]:
    """``(header, scale)`` of a stored metric key as people read it: the key with its
    column's unit (``device-logloss/acc/overall (%)``) and the factor to its shown value;
    an EMA copy (``ema/...``) as its live metric; keys of no column as they are."""
    column = columns.get(key.removeprefix("ema/"))
    if column is None:
        return key, 1.0
    return key + column.unit_suffix, column.scale


def shown(column: Column, value: Any) -> Any:
    """A stored number in the unit ``column`` shows it in (anything else unchanged)."""
    return column.shown(value) if isinstance(value, int | float) else value


def shown_metrics(record: RunRecord, protocol: str, columns: list[Column]) -> dict[str, Any]:
    """:func:`metrics_of` in the units the columns show (:meth:`Column.shown`): a column's
    value and its own error (``error_key``) scaled alike; other metrics as stored."""
    metrics: dict[str, Any] = metrics_of(record, protocol)
    for column in columns:
        for key in (column.key, column.error_key):
            if key and key in metrics:
                metrics[key] = shown(column, metrics[key])
    return metrics


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
            if spec.scoped:
                out += [({"row": row.label}, runs)] if scoped_runs(spec, row.label, runs) else []
                continue
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


def scoped_runs(spec: LeaderboardSpec, label: str, runs: list[RunRecord]) -> list[RunRecord]:
    """The runs of a row of a spec with ``where`` columns that some column takes (a column
    without ``where`` takes every run of the row); a one-line error when a ``where`` column's
    runs in the row differ in more than the seed."""
    taken = []
    for column in spec.column_specs:
        cell = [r for r in runs if column_matches(r, column.where)]
        if column.where and len(_by_config(cell)) > 1:
            raise UsageError(
                f"row '{label}', column '{column.table_key}': its runs differ in more than "
                f"the seed; give the row or the column a narrower match"
            )
        taken += [r for r in cell if r not in taken]
    return [r for r in runs if r in taken]


def exclusions(spec: LeaderboardSpec, records: list[RunRecord]) -> str:
    """Why a leaderboard is empty: how many of the stored runs each of its filters excluded,
    in the order :func:`grouped_runs` applies them."""
    if not records:
        return "the store holds no runs"
    steps: list[tuple[str, Any]] = [
        (f"filters {k}={v}", lambda r, k=k, v=v: getattr(r, k) == v)
        for k, v in spec.filters.items()
    ]
    steps.append(
        (
            f"no '{spec.protocol}' metrics",
            lambda r: any(k.startswith(f"{spec.protocol}/") for k in r.metrics),
        )
    )
    steps += [
        (f"where {k}={v}", lambda r, k=k, v=v: matches(r, {k: v})) for k, v in spec.where.items()
    ]
    if spec.rows:
        augs = frozenset(spec.recipe_augs)
        steps.append(
            ("no row matches", lambda r: any(matches(r, row.match, augs) for row in spec.rows))
        )
    left, parts = list(records), []
    for name, keep in steps:
        kept = [r for r in left if keep(r)]
        if len(kept) < len(left):
            parts.append(f"{len(left) - len(kept)} by {name}")
        left = kept
    return f"of {len(records)} stored run(s), excluded " + ", ".join(parts) if parts else ""


def _by_config(records: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(seedless_key(record), []).append(record)
    return list(groups.items())


def row_name(labels: dict[str, Any]) -> str:
    """A row's name, as ``baseline`` and notes give it: its spec label, else its backbone,
    method, augmentation, data set and varying parameters."""
    if labels.get("row"):
        return str(labels["row"])
    keys = ("backbone", "method", "aug", "dataset", "params")
    return " ".join(str(labels[k]) for k in keys if labels.get(k)) or "run"


def baseline_row(spec: LeaderboardSpec, groups: list[tuple[dict[str, str], Any]]) -> int | None:
    """The index of the spec's baseline row; None without a baseline, and when it is a row of
    the spec without runs here (none stored yet, or filtered out). A one-line error when the
    name matches no row, or several (runs of one label that differ in more than the seed)."""
    if spec.baseline is None or not groups:
        return None
    names = [row_name(labels) for labels, _ in groups]
    found = [i for i, name in enumerate(names) if name == spec.baseline]
    if len(found) == 1:
        return found[0]
    if not found and spec.baseline in {row.label for row in spec.rows}:
        return None
    rows = "; ".join(dict.fromkeys(names))
    if not found:
        raise UsageError(f"baseline '{spec.baseline}' names no row; rows: {rows}")
    raise UsageError(
        f"baseline '{spec.baseline}' names {len(found)} rows (their runs differ in more than "
        f"the seed); give the row a narrower match"
    )


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
    statistics: SeedStatistics | None = None
    """The mean table's intervals and comparisons to the baseline (None in other tables)."""
    collapsed: list[bool] = field(default_factory=list)
    """Per row: whether a run of it collapsed in training (:attr:`RunRecord.collapsed`)."""
    classes: int | None = None
    """The class count every run of the table shares (None: unknown, or they differ): what
    the chance level of its columns (:meth:`Column.chance_level`) is taken over."""
    notes: list[str] = field(default_factory=list)
    """Notes shown under the table (e.g. why a column is empty)."""

    def chance(self) -> tuple[float, str] | None:
        """``(shown value, label)`` of the chance level all the table's columns share, e.g.
        ``(10.0, "chance (10 classes): 10")``; None without one."""
        if self.classes is None:
            return None
        levels = {c.chance_level(self.classes) for c in self.columns}
        if len(levels) != 1 or None in levels:
            return None
        level = levels.pop()
        assert level is not None
        return level, f"chance ({self.classes} classes): {level:.3g}"

    def is_collapsed(self, row: int) -> bool:
        """Whether row ``row`` is marked collapsed (False for tables built without marks)."""
        return row < len(self.collapsed) and self.collapsed[row]


COLLAPSED_MARK = "⚠ collapsed"
"""Appended to the first label of a row with a collapsed run (Markdown, LaTeX, HTML)."""


def marked(label: str, collapsed: bool) -> str:
    """``label`` with :data:`COLLAPSED_MARK` when ``collapsed``."""
    return f"{label} {COLLAPSED_MARK}" if collapsed else label


def build_tables(spec: LeaderboardSpec, records: list[RunRecord], plugins: Plugins) -> list[Table]:
    """The leaderboard's tables, one per seed aggregation (best, mean): a row per run group,
    a column per metric."""
    columns = select_columns(spec, plugins, records)
    groups = grouped_runs(spec, records)
    if groups and not columns:
        raise UsageError(no_columns_message(spec, plugins, records))
    baseline = baseline_row(spec, groups)
    protocol = plugins["protocol"].get(spec.protocol).cls
    primary = protocol.primary or (columns[0].key if columns else None)
    lower_better = not next(
        (c.higher_is_better for c in protocol.columns if c.key == primary), False
    )
    aggs = ("best", "mean") if spec.agg == "both" else (spec.agg,)
    classes = shared_class_count([r for _, runs in groups for r in runs], plugins)
    tables = []
    sources = cell_sources(spec)
    for agg in aggs:
        table = _aggregate(agg, groups, columns, spec.protocol, primary, lower_better, sources)
        table.notes = empty_column_notes(spec, table)
        if agg == "mean":
            table = _with_statistics(table, groups, spec, baseline)
        tables.append(replace(table, classes=classes))
    return tables


def class_count(record: RunRecord, plugins: Plugins) -> int | None:
    """The number of classes a run was scored over: recorded in its environment (runs since
    the record has it), else its data set's fixed count (:attr:`Dataset.class_count`);
    None when neither says."""
    recorded = record.environment.get("classes")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    if record.dataset not in plugins["dataset"]:
        return None
    return plugins["dataset"].get(record.dataset).cls.class_count


def shared_class_count(records: list[RunRecord], plugins: Plugins) -> int | None:
    """The class count of ``records`` when every one knows it and they agree, else None."""
    counts = {class_count(r, plugins) for r in records}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def cell_sources(spec: LeaderboardSpec) -> dict[str, ColumnSpec]:
    """Table key -> where its values come from, for a spec with ``where`` columns (else {})."""
    return {c.table_key: c for c in spec.column_specs} if spec.scoped else {}


def run_values(
    runs: list[RunRecord],
    columns: list[Column],
    protocol: str,
    sources: dict[str, ColumnSpec] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run per row, a column per table column: the values and their own errors (NaN where
    a run has none, or does not match the column's ``where``)."""
    if not sources:
        metrics = numeric_frame([shown_metrics(r, protocol, columns) for r in runs])
        errors = pd.DataFrame(
            {
                c.key: metrics.get(c.error_key, math.nan) if c.error_key else math.nan
                for c in columns
            },
            index=metrics.index,
        )
        return metrics.reindex(columns=[c.key for c in columns]), errors
    values, errors = [], []
    for run in runs:
        metrics = metrics_of(run, protocol)
        value_row, error_row = {}, {}
        for column in columns:
            source = sources.get(column.key, ColumnSpec(column.key))
            taken = column_matches(run, source.where)
            value_row[column.key] = shown(column, metrics.get(source.metric)) if taken else None
            error_row[column.key] = shown(column, metrics.get(column.error_key)) if taken else None
        values.append(value_row)
        errors.append(error_row)
    keys = [c.key for c in columns]
    return (
        numeric_frame(values).reindex(columns=keys),
        numeric_frame(errors).reindex(columns=keys),
    )


def seed_values(
    runs: list[RunRecord],
    columns: list[Column],
    protocol: str,
    sources: dict[str, ColumnSpec] | None = None,
) -> dict[str, dict[int, float]]:
    """``{column key: {seed: value}}`` of a row's finite shown values (runs of one seed
    averaged)."""
    keys = [c.key for c in columns]
    out: dict[str, dict[int, float]] = {}
    frame, _ = run_values(runs, columns, protocol, sources)
    frame["seed__"] = [r.seed for r in runs]
    by_seed = frame.groupby("seed__").mean()
    for key in keys:
        column = by_seed[key].dropna()
        out[key] = {int(seed): float(value) for seed, value in column.items()}
    return out


def _with_statistics(
    table: Table,
    groups: list[tuple[dict[str, str], list[RunRecord]]],
    spec: LeaderboardSpec,
    baseline: int | None,
) -> Table:
    """The mean table with its values, stds and statistics taken over seeds."""
    keys = [c.key for c in table.columns]
    sources = cell_sources(spec)
    rows = [seed_values(runs, table.columns, spec.protocol, sources) for _, runs in groups]
    statistics = seed_statistics(rows, keys, spec.baseline, baseline)
    means = [{k: s.mean for k, s in row.items()} for row in statistics.summaries]
    stds = [{k: s.std for k, s in row.items()} for row in statistics.summaries]
    return replace(
        table,
        title="Mean over seeds ± 95 % CI",
        values=pd.DataFrame(means, columns=keys, dtype=float),
        errors=pd.DataFrame(stds, columns=keys, dtype=float),
        statistics=statistics,
    )


def _at(frame: pd.DataFrame, index: Any, key: str) -> float:
    return math.nan if index is None else float(frame.at[index, key])


def empty_column_notes(spec: LeaderboardSpec, table: Table) -> list[str]:
    """The notes of the spec's columns that no row of ``table`` has a value in."""
    notes = []
    for column, source in zip(table.columns, spec.column_specs or (), strict=False):
        if source.note and table.values.get(column.key, pd.Series()).isna().all():
            notes.append(f"{column_name(column)}: no runs here; {source.note}")
    return notes


def numeric_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Metric rows as floats; anything missing, non-numeric or non-finite becomes NaN (a dash)."""
    frame = pd.DataFrame(rows)
    frame = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    return frame.where(frame.abs() != math.inf)


def _aggregate(agg, groups, columns, protocol, primary, lower_better, sources=None) -> Table:
    label_rows, value_rows, error_rows = [], [], []
    collapsed: list[bool] = []
    own_errors = any(c.error_key for c in columns)
    for labels, runs in groups:
        frame, errors = run_values(runs, columns, protocol, sources)
        if agg == "runs":
            for (index, row), run in zip(frame.iterrows(), runs, strict=True):
                label_rows.append({**labels, "seed": run.seed, "run": run.run_id})
                collapsed.append(run.collapsed)
                value_rows.append(row)
                if own_errors:
                    error_rows.append(errors.loc[index])
            continue
        seeds = len({run.seed for run in runs}) if sources else len(runs)
        label_rows.append({**labels, "seeds": seeds})
        collapsed.append(any(run.collapsed for run in runs))
        if agg == "best" and sources:  # each cell's best seed (its own runs)
            picks = {c.key: best_index(frame[c.key], c, ties=True) for c in columns}
            value_rows.append(pd.Series({k: _at(frame, i, k) for k, i in picks.items()}))
            error_rows.append(pd.Series({k: _at(errors, i, k) for k, i in picks.items()}))
            continue
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
    titles = {"best": "Best of seeds", "mean": "Mean over seeds", "runs": "All runs"}
    return Table(
        title=titles[agg],
        labels=pd.DataFrame(label_rows),
        values=pd.DataFrame(value_rows).reset_index(drop=True),
        errors=pd.DataFrame(error_rows).reset_index(drop=True) if error_rows else None,
        columns=columns,
        error_kind="std" if agg == "mean" else "own",
        collapsed=collapsed,
    )


# -- rendering --------------------------------------------------------------------

LATEX_SPECIALS = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "Δ": "$\\Delta$",
    "⚠": "\\textbf{!}",
    "±": "$\\pm$",
    "\n": " ",
    "\r": " ",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (and Δ, ± in math mode); a line
    break becomes a space (a blank line would end the table's paragraph)."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def one_line(text: str) -> str:
    """``text`` with its line breaks as spaces: for a LaTeX ``%`` comment (a line break would
    end the comment and run the rest as LaTeX), a Markdown heading or list item."""
    return " ".join(text.splitlines()) if text else text


def markdown_escape(text: str) -> str:
    """A Markdown table cell: ``|`` escaped (it would split the cell) and on one line."""
    return one_line(text).replace("|", "\\|")


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters a spreadsheet reads as a formula (CSV injection)."""


def csv_safe(text: Any) -> Any:
    """A CSV text cell a spreadsheet shows as text: one starting like a formula gets a
    leading ``'``; numbers and other values are returned unchanged."""
    if isinstance(text, str) and text.startswith(CSV_FORMULA_START):
        return "'" + text
    return text


def csv_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell and header made :func:`csv_safe`."""
    safe = frame.rename(columns=lambda name: csv_safe(str(name)))
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):  # text (object or string dtype)
            safe[column] = safe[column].map(csv_safe, na_action="ignore")
    return safe


def column_name(column: Column) -> str:
    """A column's group and label, e.g. ``Unseen S4``."""
    return f"{column.group} {column.label}".strip()


def header(column: Column, fmt: str = "text") -> str:
    """A column heading with its unit and the arrow of the better direction, e.g.
    ``Unseen S4 acc. (%) ↑`` (escaped for ``fmt``: ``latex``, ``markdown``; ``text`` as is)."""
    text = column.heading
    if fmt == "latex":
        arrow = "$\\uparrow$" if column.higher_is_better else "$\\downarrow$"
        return f"{latex_escape(text)} {arrow}".strip()
    arrow = "↑" if column.higher_is_better else "↓"
    shown = markdown_escape(text) if fmt == "markdown" else text
    return f"{shown} {arrow}".strip()


def best_index(values: pd.Series, column: Column, ties: bool = False) -> Any:
    """The row of the best value of a column (None when all values are equal, unless ``ties``:
    then the first of them; None when the column has no value)."""
    finite = values.dropna()
    if finite.empty or (not ties and finite.nunique() < 2):
        return None
    return values.idxmax() if column.higher_is_better else values.idxmin()


def value_text(table: Table, row: int, column: Column) -> str:
    """A cell's plain text: the value; in the mean table ``± half the 95 % CI (n=seeds)``,
    elsewhere ``± its error`` if any."""
    value = table.values.at[row, column.key]
    if pd.isna(value):
        return "–"
    digits = column.decimals
    text = f"{value:.{digits}f}"
    if table.statistics is not None:
        summary = table.statistics.summaries[row][column.key]
        if summary.n > 1:
            text += f" ± {summary.half_width:.{digits}f}"
        return f"{text} (n={summary.n})"
    error = table.errors.at[row, column.key] if table.errors is not None else math.nan
    return text if pd.isna(error) else f"{text} ± {error:.{digits}f}"


def comparison_text(table: Table, row: int, column: Column) -> str:
    """A cell's difference to the baseline: ``Δ +0.052 [0.014, 0.090] (n=3) p=0.012 *``
    (``n.s.``: not significant after Holm), a note when there is nothing to test, or ``""``
    (the baseline's own row, tables without a baseline)."""
    return " ".join(comparison_parts(table, row, column))


def comparison_parts(table: Table, row: int, column: Column) -> list[str]:
    """:func:`comparison_text` in its parts: the difference, its interval, the test, the
    seeds 80 % power would need (a narrow HTML cell puts each on its own line)."""
    statistics = table.statistics
    if statistics is None or statistics.comparisons is None:
        return []
    comparison = statistics.comparisons[row].get(column.key)
    if comparison is None or statistics.summaries[row][column.key].n == 0:
        return []  # the baseline's own row, or a cell without runs (shown as –)
    if comparison.n_pairs == 0:
        return [comparison.note]
    digits = column.decimals
    text = f"Δ {comparison.diff:+.{digits}f}"
    if comparison.note and comparison.n_pairs > 1:  # a column no seed changes: no test
        return [text, f"({comparison.note})"]
    if comparison.n_pairs == 1:
        return [text, "(n=1, no interval)"]
    mark = "*" if comparison.significant else "n.s."
    parts = [
        text,
        f"[{comparison.diff_low:+.{digits}f}, {comparison.diff_high:+.{digits}f}]",
        f"(n={comparison.n_pairs}) {p_text(comparison.p)} {mark}",
    ]
    if comparison.seeds_needed is not None:
        parts.append(f"(n={comparison.seeds_needed} for 80 % power)")
    return parts


def p_text(p: float) -> str:
    """``p=0.012``, ``p<0.001``."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def cell_text(table: Table, row: int, column: Column, fmt: str) -> str:
    """A table cell: the value, its error or interval if any, the best value in bold."""
    text = value_text(table, row, column)
    if text == "–":
        return text
    if fmt == "latex":
        text = latex_escape(text)
    bold = "**{}**" if fmt == "markdown" else "\\textbf{{{}}}"
    is_best = best_index(table.values[column.key], column) == row
    return bold.format(text) if is_best and len(table.values) > 1 else text


STAT_FIELDS = ("n", "ci_low", "ci_high")
COMPARISON_FIELDS = (
    "n_pairs",
    "diff",
    "diff_low",
    "diff_high",
    "p",
    "p_holm",
    "significant",
    "detectable",
    "seeds_needed",
)


def csv_frame(table: Table) -> pd.DataFrame:
    """Plain numbers for CSV (the aggregation is a column): the values, their std or own
    errors; in the mean table per column also n and the 95 % CI and, with a baseline,
    ``vs`` (its name) and the paired comparison's numbers (``_diff``, ``_p``, ...)."""
    frame = table.labels.copy()
    frame.insert(0, "aggregate", table.title)
    statistics = table.statistics
    if statistics is not None and statistics.comparisons is not None:
        frame["vs"] = [
            "" if i == statistics.baseline_row else statistics.baseline for i in range(len(frame))
        ]
    frame["collapsed"] = pd.Series(
        [table.is_collapsed(i) for i in range(len(frame))], dtype="boolean"
    )
    for column in table.columns:  # metric keys and units as headers: no arrows
        unit = column.unit_suffix
        frame[column.key + unit] = table.values[column.key].round(6)
        if table.errors is not None and (table.error_kind == "std" or column.error_key):
            name = "std" if table.error_kind == "std" else column.error_key
            frame[f"{column.key}_{name}{unit}"] = table.errors[column.key].round(6)
        if statistics is not None:
            for name, values in _stat_columns(statistics, column.key).items():
                frame[f"{column.key}_{name}{unit if name in VALUED_STATS else ''}"] = values
    return frame


VALUED_STATS = ("ci_low", "ci_high", "diff", "diff_low", "diff_high", "detectable")
"""CSV statistics in the value's unit (the rest are counts, p-values and flags)."""


COLUMN_DTYPES = {"n": "Int64", "diff_n": "Int64", "seeds_needed": "Int64", "significant": "boolean"}
"""CSV columns of counts and flags, kept integer (or true/false) beside empty cells."""


def _stat_columns(statistics: SeedStatistics, key: str) -> dict[str, pd.Series]:
    summaries = [row[key] for row in statistics.summaries]
    out: dict[str, list[Any]] = {
        "n": [s.n for s in summaries],
        "ci_low": [_rounded(s.ci_low) for s in summaries],
        "ci_high": [_rounded(s.ci_high) for s in summaries],
    }
    if statistics.comparisons is not None:
        comparisons = [row.get(key) for row in statistics.comparisons]
        for field_name in COMPARISON_FIELDS:
            name = "diff_n" if field_name == "n_pairs" else field_name
            out[name] = [_comparison_value(c, field_name) for c in comparisons]
    return {
        name: pd.Series(values, dtype=COLUMN_DTYPES.get(name, "Float64"))
        for name, values in out.items()
    }


def _comparison_value(comparison: Any, field_name: str) -> Any:
    if comparison is None:
        return None
    value = getattr(comparison, field_name)
    if field_name == "significant":
        return value if math.isfinite(comparison.p_holm) else None
    return _rounded(value) if isinstance(value, float) else value


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def render_table(table: Table, fmt: str) -> str:
    """One table as Markdown (GitHub) or LaTeX; with a baseline, a ``Δ vs`` row under each
    compared row."""
    rows = []
    escape = latex_escape if fmt == "latex" else markdown_escape
    for i in range(len(table.labels)):
        labels = [str(v) for v in table.labels.iloc[i].tolist()]
        labels[0] = marked(labels[0], table.is_collapsed(i))
        labels = [escape(v) for v in labels]
        rows.append(labels + [cell_text(table, i, c, fmt) for c in table.columns])
        differences = [comparison_text(table, i, c) for c in table.columns]
        if any(differences):
            name = table.statistics.baseline if table.statistics else ""
            first = [escape(f"Δ vs {name}")] + [""] * (len(labels) - 1)
            rows.append(first + [escape(d) for d in differences])
    headers = [*(escape(str(c)) for c in table.labels.columns)]
    headers += [header(c, fmt) for c in table.columns]
    return tabulate(rows, headers=headers, tablefmt="github" if fmt == "markdown" else "latex_raw")


def statistics_notes(table: Table) -> list[str]:
    """What the mean table's numbers are, one sentence a line (none for other tables)."""
    statistics = table.statistics
    if statistics is None:
        return list(table.notes)
    notes = [
        *table.notes,
        "Cells: mean over seeds ± half the 95 % Student t confidence interval (n = seeds).",
    ]
    if statistics.most_seeds < 2:
        notes.append("No intervals: they need at least 2 seeds, and every row has 1.")
    elif any(s.n == 1 for row in statistics.summaries for s in row.values()):
        notes.append("A cell with n=1 has one seed and no interval.")
    if statistics.comparisons is None:
        if statistics.baseline is not None:
            notes.append(
                f"No differences: the baseline row '{statistics.baseline}' has no runs here."
            )
        return notes
    if statistics.tests == 0:
        notes.append(
            f"Δ: difference to {statistics.baseline}, paired by seed; no row shares 2 seeds "
            "with it, so no interval and no test: no finding."
        )
        return [*notes, detectable_note(table)]
    tests = f"{statistics.tests} test" + ("" if statistics.tests == 1 else "s")
    notes.append(
        f"Δ: difference to {statistics.baseline}, paired by seed (n = common seeds), "
        f"[95 % t interval], p: paired t-test; * significant after Holm's correction over "
        f"the table's {tests} (α = 0.05); n.s.: not significant, so no "
        f"finding, with the seeds a paired t-test needs to detect the observed difference "
        f"at 80 % power at α = 0.05 / {statistics.tests} (enough for Holm's mark)."
    )
    notes.append(detectable_note(table))
    return notes


def detectable_note(table: Table) -> str:
    """The smallest difference detectable at 80 % power in each column, with the seeds present
    (from the pooled std of the column's paired differences)."""
    statistics = table.statistics
    detectable = statistics.detectable if statistics is not None else None
    if not detectable:
        return "No detectable difference: it needs at least 2 seeds in common with the baseline."
    columns = {c.key: c for c in table.columns}
    parts = []
    for key, d in detectable.items():
        name, digits = column_name(columns[key]), columns[key].decimals
        parts.append(
            f"{name} {d.difference:.{digits}f} (n={d.n_pairs}, paired sd {d.sd:.{digits}f})"
        )
    return (
        "Smallest difference detectable at 80 % power (paired t-test, two-sided α = 0.05) "
        "with the seeds present: " + "; ".join(parts) + "."
    )


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
    lines += [
        f"- {one_line(row)}: {', '.join(f'`{one_line(o)}`' for o in opts)}" for row, opts in options
    ]
    if fmt != "markdown":
        return "\n".join(f"% {line.replace('`', '')}" for line in lines) + "\n"
    return "\n".join(lines) + "\n"
