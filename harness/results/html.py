"""Leaderboards for programs (JSON) and people (one self-contained HTML page).

The page needs no network: CSS, the column-sorting script and the figures (inline SVG)
are all in the file. Figures: one grouped bar chart per table (a bar per row and column,
the seeds' std or each run's own uncertainty as error bars) and, when the runs store
few-shot grids (``acc_{N}way{K}shot``), accuracy against N and against K.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.api import Column
from harness.results.leaderboard import (
    COLLAPSED_MARK,
    LeaderboardSpec,
    Table,
    comparison_parts,
    exclusions,
    grouped_runs,
    header,
    marked,
    metrics_of,
    statistics_notes,
    value_text,
)
from harness.results.stats import Comparison, Detectable, SeedStatistics, Summary
from harness.results.store import RunRecord

PALETTE = (  # matplotlib's tab10: ten rows in ten distinct colours
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
EPISODE_KEY = re.compile(r"^acc_(\d+)way(\d+)shot$")


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def table_dict(table: Table) -> dict[str, Any]:
    """A table as plain data (labels, values and errors per row) for JSON."""
    rows = []
    for i in range(len(table.labels)):
        labels = {k: _plain(v) for k, v in table.labels.iloc[i].items()}
        values = {c.key: _number(table.values.at[i, c.key]) for c in table.columns}
        errors = {
            c.key: _number(table.errors.at[i, c.key]) if table.errors is not None else None
            for c in table.columns
        }
        row = {
            "labels": labels,
            "collapsed": table.is_collapsed(i),
            "values": values,
            "errors": errors,
        }
        if table.statistics is not None:
            row |= row_statistics(table.statistics, i, [c.key for c in table.columns])
        rows.append(row)
    return {
        "title": table.title,
        "error_kind": table.error_kind,
        **table_statistics(table),
        "columns": [
            {
                "key": c.key,
                "label": c.label,
                "group": c.group,
                "higher_is_better": c.higher_is_better,
                "error_key": c.error_key,
                "unit": c.unit,
                "heading": c.heading,
            }
            for c in table.columns
        ],
        "rows": rows,
    }


def _numbers(item: Summary | Comparison | Detectable) -> dict[str, Any]:
    """A dataclass of statistics as JSON numbers (null: none)."""
    out = {}
    for key, value in vars(item).items():
        out[key] = _number(value) if isinstance(value, float) else value
    return out


def row_statistics(statistics: SeedStatistics, row: int, keys: list[str]) -> dict[str, Any]:
    """A mean-table row's intervals (``stats``) and, for a compared row, its comparison to
    the baseline (``comparison``: null in the baseline's row)."""
    out: dict[str, Any] = {"stats": {k: _numbers(statistics.summaries[row][k]) for k in keys}}
    if statistics.comparisons is not None:
        compared = statistics.comparisons[row]
        out["comparison"] = {k: _numbers(compared[k]) for k in keys} if compared else None
    return out


def table_statistics(table: Table) -> dict[str, Any]:
    """A mean table's baseline, Holm's test count, detectable differences and notes."""
    statistics = table.statistics
    if statistics is None:
        return {"notes": list(table.notes)} if table.notes else {}
    detectable = statistics.detectable or {}
    return {
        "baseline": statistics.baseline,
        "tests": statistics.tests,
        "detectable": {k: _numbers(d) for k, d in detectable.items()},
        "notes": statistics_notes(table),
    }


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def spec_dict(spec: LeaderboardSpec) -> dict[str, Any]:
    """A leaderboard spec as plain data for JSON."""
    return {
        "title": spec.title,
        "protocol": spec.protocol,
        "metric": spec.metric,
        "agg": spec.agg,
        "filters": dict(spec.filters),
        "where": dict(spec.where),
        "recipe_augs": list(spec.recipe_augs),
        "rows": [{"label": r.label, "match": dict(r.match)} for r in spec.rows],
        "baseline": spec.baseline,
        "columns": [
            {"key": c.table_key, "metric": c.metric, "label": c.label, "where": dict(c.where)}
            for c in spec.column_specs
        ]
        or list(spec.columns),
    }


def render_json(spec: LeaderboardSpec, tables: list[Table]) -> str:
    """The spec and every table as JSON: labels, values and errors per row (null: missing),
    in each column's ``unit`` (accuracies in percent, see :meth:`Column.shown`)."""
    doc = {"spec": spec_dict(spec), "tables": [table_dict(t) for t in tables]}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


# -- figures (inline SVG) ------------------------------------------------------------


@dataclass
class Series:
    """One line or bar series of an SVG chart."""

    name: str
    x: list[float]
    y: list[float | None]
    err: list[float | None]


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 2)]


SLANT_ABOVE = 6
"""Bar charts with more categories than this slant their names."""


LEGEND_CHARS = 30
"""Characters per line of a legend entry (longer names wrap; nothing is cut)."""


def wrap_label(text: str, width: int = LEGEND_CHARS) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces or commas."""
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def svg_chart(
    title: str,
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    categories: Sequence[str] | None = None,
    note: str = "",
    reference: tuple[float, str] | None = None,
) -> str:
    """Dots with whiskers over ``categories`` (x = category index; the y axis spans the
    data, not zero), or lines over numeric x. The legend sits right of the plot, every
    entry in full; ``reference``: a dashed horizontal line (value, label), e.g. chance."""
    slanted = categories is not None and len(categories) > SLANT_ABOVE
    legend = [wrap_label(s.name) for s in series]
    width, left, right, top = 900, 70, 230, 34
    plot_h, bottom = 236, 70
    if slanted:  # room for the slanted category names
        bottom = 120
    legend_h = sum(16 * len(lines) + 6 for lines in legend) + (22 if reference else 0)
    plot_h = max(plot_h, legend_h)
    height = top + plot_h + bottom
    plot_w = width - left - right
    tops = [y + (e or 0) for s in series for y, e in zip(s.y, s.err, strict=True) if y is not None]
    lows = [y - (e or 0) for s in series for y, e in zip(s.y, s.err, strict=True) if y is not None]
    if not tops:
        return ""
    if reference is not None:
        tops.append(reference[0])
        lows.append(reference[0])
    pad = 0.05 * ((max(tops) - min(lows)) or abs(max(tops)) or 1.0)
    ticks = _ticks(min(lows) - pad, max(tops) + pad)
    y0, y1 = ticks[0], ticks[-1]

    def sy(value: float) -> float:
        return top + plot_h * (1 - (value - y0) / (y1 - y0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<text x="{left}" y="20" class="t">{_esc(title)}</text>',
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
            f'class="g"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end">'
            f"{tick:g}</text>"
        )
    if reference is not None:  # its label goes in the legend, where it covers no data
        value = reference[0]
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" '
            f'class="c"/>'
        )
    if categories is not None:
        parts += _dots(series, categories, left, plot_w, top + plot_h, sy, slanted)
    else:
        parts += _lines(series, left, plot_w, top + plot_h, sy)
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle" class="a">'
        f"{_esc(xlabel)}</text>"
        f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle" class="a">{_esc(ylabel)}</text>'
    )
    parts += _legend(series, legend, left + plot_w + 14, top, reference)
    if note:
        parts.append(f'<text x="{left}" y="{height - 32}" class="n">{_esc(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(
    series, legend: list[list[str]], x: float, top: float, reference: tuple | None = None
) -> list[str]:
    """One entry per series, each name in full over as many lines as it needs; the
    reference line (chance) last, as a dashed swatch with its label."""
    parts, y = [], top + 12
    for i, (s, lines) in enumerate(zip(series, legend, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        spans = "".join(
            f'<tspan x="{x + 18}" dy="{0 if n == 0 else 14}">{_esc(line)}</tspan>'
            for n, line in enumerate(lines)
        )
        parts.append(
            f'<g class="legend"><title>{_esc(s.name)}</title>'
            f'<rect x="{x + 1}" y="{y - 10}" width="11" height="11" fill="{colour}"/>'
            f'<text x="{x + 18}" y="{y}">{spans}</text></g>'
        )
        y += 16 * len(lines) + 6
    if reference is not None:
        parts.append(
            f'<g class="legend chance"><line x1="{x}" x2="{x + 14}" y1="{y - 4}" y2="{y - 4}" '
            f'class="c"/><text x="{x + 18}" y="{y}" class="c">{_esc(reference[1])}</text></g>'
        )
    return parts


def _dots(series, categories, left, plot_w, base, sy, slanted: bool = False) -> list[str]:
    """A dot per series and category (side by side), its error as a whisker."""
    parts = []
    group_w = plot_w / len(categories)
    step = group_w * 0.7 / max(len(series), 1)
    for c, name in enumerate(categories):
        x_mid = left + group_w * (c + 0.5)
        if slanted:  # many categories: names slanted so that they do not overlap
            parts.append(
                f'<text x="{x_mid:.1f}" y="{base + 12}" text-anchor="end" '
                f'transform="rotate(-35 {x_mid:.1f} {base + 12})">{_esc(name)}</text>'
            )
        else:
            parts.append(
                f'<text x="{x_mid:.1f}" y="{base + 16}" text-anchor="middle">{_esc(name)}</text>'
            )
        for i, s in enumerate(series):
            value, error = s.y[c], s.err[c]
            if value is None:
                continue
            xc = x_mid + step * (i - (len(series) - 1) / 2)
            if error:
                parts.append(
                    f'<line x1="{xc:.1f}" x2="{xc:.1f}" y1="{sy(value - error):.1f}" '
                    f'y2="{sy(value + error):.1f}" class="e"/>'
                )
            parts.append(
                f'<circle cx="{xc:.1f}" cy="{sy(value):.1f}" r="4.5" '
                f'fill="{PALETTE[i % len(PALETTE)]}"><title>{_esc(s.name)} {_esc(name)}: '
                f"{value:.3f}{f' ± {error:.3f}' if error else ''}</title></circle>"
            )
    return parts


def _lines(series, left, plot_w, base, sy) -> list[str]:
    xs = sorted({x for s in series for x in s.x})
    span = (xs[-1] - xs[0]) or 1.0

    def sx(value: float) -> float:
        return left + 20 + (plot_w - 40) * (value - xs[0]) / span

    parts = [f'<text x="{sx(x):.1f}" y="{base + 16}" text-anchor="middle">{x:g}</text>' for x in xs]
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = [(x, y, e) for x, y, e in zip(s.x, s.y, s.err, strict=True) if y is not None]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y, e in points:
            if e:
                parts.append(
                    f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(y - e):.1f}" '
                    f'y2="{sy(y + e):.1f}" class="e"/>'
                )
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}"/>')
    return parts


def row_label(labels: dict[str, Any]) -> str:
    """A row's name in figures: its spec name, else method, aug and parameters."""
    if labels.get("row"):
        return str(labels["row"])
    parts = [str(labels[k]) for k in ("method", "aug", "params") if labels.get(k)]
    return " ".join(parts) or "run"


def unit_parts(table: Table) -> list[Table]:
    """The table once per unit (log-loss in nats, percent, millions): one figure each, so
    that a y axis never mixes values of different scales."""
    parts: dict[str, list[Column]] = {}
    for column in table.columns:
        parts.setdefault(column.unit, []).append(column)
    return [dataclasses.replace(table, columns=columns) for columns in parts.values()]


def table_figure(table: Table) -> str:
    """A bar per row and column; error bars as the table shows them (std or own)."""
    series = []
    for i in range(len(table.labels)):
        labels = dict(table.labels.iloc[i].items())
        values = [_number(table.values.at[i, c.key]) for c in table.columns]
        errors = [_error_bar(table, i, c.key) for c in table.columns]
        name = marked(row_label(labels), table.is_collapsed(i))
        series.append(Series(name, list(range(len(values))), values, errors))
    seeds = sorted({int(s) for s in table.labels.get("seeds", [])} or {1})
    if table.statistics is not None:
        note = (
            f"dots: mean over seeds ({', '.join(map(str, seeds))} per row); "
            "whiskers: 95% t interval"
        )
    elif table.error_kind == "std":
        note = f"dots: mean over seeds ({', '.join(map(str, seeds))} per row); whiskers: std"
    else:
        note = "dots: the best seed's values; whiskers: its own uncertainty where reported"
    categories = [c.label for c in table.columns]
    if len(set(categories)) < len(categories):
        categories = [f"{c.group} {c.label}".strip() for c in table.columns]
    chance = table.chance()
    if chance is None and table.classes is None and any(c.chance for c in table.columns):
        note += "; no chance line: the runs do not record their class count"
    return svg_chart(
        table.title, series, x_axis_title(table), y_axis_title(table), categories, note, chance
    )


METRIC_TITLES = {"logloss": "log-loss (nats)", "acc": "accuracy", "loss": "loss"}
"""Axis titles of the metric families leaderboards show (units: each column's own)."""


UNIT_WORDS = {"%": "percent", "M": "millions"}


def y_axis_title(table: Table) -> str:
    """The metric the columns hold (a leaderboard column's label where the metric has no
    title), its unit and the better direction; more than two metrics: the unit's name."""
    families: dict[str, str] = {}
    for column in table.columns:
        family = column.key.split("/")[0]
        families.setdefault(family, METRIC_TITLES.get(family, column.label) + column.unit_suffix)
    names = list(families.values())
    units = {c.unit for c in table.columns}
    if len(names) > 2 and len(units) == 1:
        unit = units.pop()
        names = [UNIT_WORDS.get(unit) or "value" + table.columns[0].unit_suffix]
    better = {c.higher_is_better for c in table.columns}
    direction = "" if len(better) > 1 else (" (higher is better)" if better.pop() else
                                            " (lower is better)")  # fmt: skip
    return " / ".join(names) + direction


def x_axis_title(table: Table) -> str:
    """What the columns are: recording devices and their groups, or the protocol's columns."""
    groups = list(dict.fromkeys(c.group for c in table.columns if c.group))
    if any("device" in g.lower() or g.lower().startswith(("real", "unseen", "seen"))
           for g in groups):  # fmt: skip
        return "recording device (groups: " + ", ".join(groups) + ")"
    return "leaderboard column" + (f" ({', '.join(groups)})" if groups else "")


def _error_bar(table: Table, row: int, key: str) -> float | None:
    """Half the 95 % interval in the mean table, else the table's error (None: no bar)."""
    if table.statistics is not None:
        return _number(table.statistics.summaries[row][key].half_width)
    return _number(table.errors.at[row, key]) if table.errors is not None else None


def episode_figures(spec: LeaderboardSpec, records: Iterable[RunRecord]) -> list[str]:
    """Accuracy vs N (at the smallest K) and vs K (at the smallest N) of each row's best run."""
    grids = []
    for labels, runs in grouped_runs(spec, list(records)):
        best = max(runs, key=lambda r: metrics_of(r, spec.protocol).get("acc", -math.inf))
        metrics = metrics_of(best, spec.protocol)
        points = {}
        for key, value in metrics.items():
            found = EPISODE_KEY.match(key)
            if found:
                n_way, k_shot = int(found[1]), int(found[2])
                ci = metrics.get(f"ci_{n_way}way{k_shot}shot")
                points[n_way, k_shot] = (value, ci)
        if points:
            grids.append((row_label(labels), points))
    if not grids:
        return []
    figures = []
    all_points = {p for _, g in grids for p in g}
    k_fixed = min(k for _, k in all_points)
    n_fixed = min(n for n, _ in all_points)
    for vs, fixed in (("N", k_fixed), ("K", n_fixed)):
        series = []
        for name, grid in grids:
            keys = sorted(p for p in grid if (p[1] if vs == "N" else p[0]) == fixed)
            xs = [float(p[0] if vs == "N" else p[1]) for p in keys]
            if len(xs) > 1:
                ys = [_number(grid[p][0]) for p in keys]
                errs = [_number(grid[p][1]) for p in keys]
                series.append(Series(name, xs, ys, errs))
        if series:
            other = "K" if vs == "N" else "N"
            figures.append(
                svg_chart(
                    f"Few-shot accuracy vs {vs} ({other} = {fixed}), best seed per row",
                    series,
                    f"{vs} ({'classes per episode' if vs == 'N' else 'support clips per class'})",
                    "accuracy (%)",
                    note="error bars: 95% CI over episodes",
                )
            )
    return figures


# -- the page ------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em auto;max-width:1360px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
.w{overflow-x:auto;max-width:100%}table{border-collapse:separate;border-spacing:0;margin:.6em 0}
th,td{border:1px solid #ccc;border-width:0 1px 1px 0;padding:3px 8px;text-align:right;
white-space:nowrap;background:#fff}
tr>:first-child{border-left-width:1px}thead th{border-top-width:1px}
td.l,th.l{text-align:left}
tr>:first-child{position:sticky;left:0;z-index:1;box-shadow:2px 0 2px -1px #bbb}
th.k,td.k{position:sticky;right:0;z-index:1;box-shadow:-2px 0 2px -1px #bbb}
td.p{white-space:normal;min-width:8em;max-width:20em}
.chip{display:inline-block;max-width:14em;overflow:hidden;text-overflow:ellipsis;
vertical-align:bottom;background:#eef3fa;border:1px solid #c9d6ea;border-radius:8px;
padding:0 6px;margin:1px 2px;font-size:.85em}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.best{font-weight:bold}td .d{font-size:.85em;color:#555;font-weight:normal}
td .u{font-size:.8em;color:#555;font-weight:normal}th .grp{display:block;font-weight:normal;
font-size:.85em;color:#555}
.collapsed{color:#b00;font-weight:bold}
p.n{font-size:.9em;color:#444;margin:.3em 0}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
svg text{font:11px sans-serif}svg .t{font-size:13px;font-weight:bold}svg .n{fill:#555}
svg .g{stroke:#e4e4e4}svg .e{stroke:#222;stroke-width:1.2}svg .a{font-size:12px}
svg line.c{stroke:#b00;stroke-dasharray:5 4}svg text.c{fill:#b00}
ul.o code{background:#f3f3f3;padding:0 3px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:bold}
"""

SCRIPT = """
function sortTable(th){
  const table=th.closest('table'),body=table.tBodies[0],col=th.cellIndex;
  const dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  for(const other of th.parentNode.cells)other.removeAttribute('aria-sort');
  th.setAttribute('aria-sort',dir);
  const key=r=>{const c=r.cells[col],v=c.dataset.v;return v===undefined?c.textContent:Number(v)};
  const rows=Array.from(body.rows).sort((a,b)=>{
    const x=key(a),y=key(b);
    if(typeof x==='number'&&typeof y==='number'){
      if(isNaN(x))return 1;if(isNaN(y))return -1;return dir==='ascending'?x-y:y-x}
    return dir==='ascending'?String(x).localeCompare(y):String(y).localeCompare(x)});
  for(const r of rows)body.appendChild(r);
}
document.addEventListener('click',e=>{const th=e.target.closest('th');if(th)sortTable(th)});
"""


def is_key_column(column: Any) -> bool:
    """The column a reader looks for first (Table 3's Overall): it stays at the right edge
    of the window while the other data scroll."""
    return column.key.rsplit("/", 1)[-1] == "overall"


def _classes(*names: str) -> str:
    joined = " ".join(n for n in names if n)
    return f' class="{joined}"' if joined else ""


def _cell(table: Table, i: int, column: Any) -> str:
    value = _number(table.values.at[i, column.key])
    difference = comparison_parts(table, i, column)
    lines = "<br>".join(_esc(part) for part in difference)
    below = f'<br><span class="d">{lines}</span>' if difference else ""
    key = "k" if is_key_column(column) else ""
    if value is None:
        return f'<td data-v="NaN"{_classes(key)}>–{below}</td>'
    finite = [v for v in table.values[column.key] if _number(v) is not None]
    best = max(finite) if column.higher_is_better else min(finite)
    bold = "best" if len(set(finite)) > 1 and value == best else ""
    full = value_text(table, i, column)
    main, _, rest = full.partition(" ")
    # the uncertainty on a second, smaller line (the seeds column gives n): narrow columns
    error = rest.split(" (n=")[0].replace("± ", "±") if rest else ""
    second = f'<br><span class="u">{_esc(error)}</span>' if error else ""
    return (
        f'<td data-v="{value!r}"{_classes(bold, key)} title="{_esc(full)}">'
        f"{_esc(main)}{second}{below}</td>"
    )


def _head(column: Any) -> str:
    """A column heading: its group (device group) above its label and arrow."""
    group = f'<span class="grp">{_esc(column.group)}</span> ' if column.group else ""
    label = header(dataclasses.replace(column, group=""))
    return f"<th{_classes('k' if is_key_column(column) else '')}>{group}{_esc(label)}</th>"


def shown_label_columns(table: Table) -> tuple[list[str], dict[str, Any]]:
    """The label columns that tell rows apart (all of them for a single row), and the
    values every row shares (stated once above the table)."""
    columns = list(table.labels.columns)
    if len(table.labels) < 2:
        return columns, {}
    shared = {
        c: _plain(table.labels[c].iloc[0])
        for c in columns[:-1]
        if c not in ("row", "seeds") and table.labels[c].nunique(dropna=False) == 1
    }
    shown = [c for c in columns if c not in shared]
    return shown, {k: v for k, v in shared.items() if v not in ("", None)}


PARAM_SPLIT = re.compile(r", (?=[\w.\-]+=)")


def chips(params: str) -> str:
    """``key=value, ...`` as compact chips: the key's last part and the value, the full
    ``section.key=value`` as the tooltip."""
    out = []
    for item in PARAM_SPLIT.split(params):
        key, _, value = item.partition("=")
        short = f"{key.rsplit('.', 1)[-1]}={value}" if value else item
        out.append(f'<span class="chip" title="{_esc(item)}">{_esc(short)}</span>')
    return "".join(out)


def table_html(table: Table) -> str:
    """A sortable HTML table, the best value of each column in bold; label columns every
    row shares are stated once above it."""
    shown, shared = shown_label_columns(table)
    heads = [f'<th class="l">{_esc(c)}</th>' for c in shown]
    heads += [_head(c) for c in table.columns]
    rows = []
    for i in range(len(table.labels)):
        labels = []
        for column, name in enumerate(shown):
            plain = _plain(table.labels.at[i, name])
            attr = f' data-v="{plain}"' if isinstance(plain, int | float) else ""
            mark = ""
            if column == 0 and table.is_collapsed(i):
                mark = f' <span class="collapsed">{_esc(COLLAPSED_MARK)}</span>'
            if name == "params" and plain:
                labels.append(f'<td class="l p" data-v="{_esc(plain)}">{chips(str(plain))}</td>')
                continue
            labels.append(f'<td class="l"{attr}>{_esc(plain)}{mark}</td>')
        cells = [_cell(table, i, c) for c in table.columns]
        rows.append(f"<tr>{''.join(labels + cells)}</tr>")
    common = ", ".join(f"{k} {v}" for k, v in shared.items())
    note = f'<p class="n">every row: {_esc(common)}</p>' if common else ""
    return (
        f'{note}<div class="w"><table><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_html(
    spec: LeaderboardSpec,
    tables: list[Table],
    records: Iterable[RunRecord] = (),
    commands: Sequence[str] = (),
    defaults: Sequence[tuple[str, list[str]]] = (),
) -> str:
    """One self-contained page: the spec's header, the options each row sets away from
    their defaults, every table (sortable, its first column fixed while the data scroll)
    and figures."""
    records = list(records)
    title = spec.title or f"Leaderboard: {spec.protocol}"
    options = spec_dict(spec)
    header = "".join(
        f"<dt>{_esc(k)}</dt><dd>{_esc(json.dumps(v) if not isinstance(v, str) else v)}</dd>"
        for k, v in options.items()
        if v not in ("", None, [], {}) and k not in ("title", "rows")
    )
    rows = "".join(
        f"<li>{_esc(r['label'])}: <code>{_esc(json.dumps(r['match']))}</code></li>"
        for r in options["rows"]
    )
    body = [f"<h1>{_esc(title)}</h1>"]
    if commands:
        body.append("<pre>" + _esc("\n".join(commands)) + "</pre>")
    body.append(f"<dl>{header}</dl>")
    if rows:
        body.append(f"<details><summary>rows</summary><ul>{rows}</ul></details>")
    if defaults:
        items = "".join(
            f"<li>{_esc(row)}: {' '.join(f'<code>{_esc(o)}</code>' for o in opts)}</li>"
            for row, opts in defaults
        )
        body.append(
            '<p class="n">Options away from their defaults (seed-method defaults are the '
            f'papers\' values):</p><ul class="o">{items}</ul>'
        )
    if not tables or tables[0].labels.empty:
        why = exclusions(spec, records) if records else ""
        why = f" ({_esc(why)})" if why else ""
        body.append(f"<p>no stored runs with protocol '{_esc(spec.protocol)}' match{why}</p>")
    for table in tables:
        body.append(f"<h2>{_esc(table.title)}</h2>{table_html(table)}")
        body += [f'<p class="n">{_esc(note)}</p>' for note in statistics_notes(table)]
        if not table.labels.empty:
            figures = (table_figure(part) for part in unit_parts(table))
            body += [f"<figure>{svg}</figure>" for svg in figures if svg]
    for figure in episode_figures(spec, records):
        body.append(f"<figure>{figure}</figure>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n"
    )
