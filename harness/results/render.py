"""Leaderboards rendered in every format: Markdown, CSV and LaTeX tables
(:mod:`harness.results.leaderboard`), JSON and the HTML page (:mod:`harness.results.html`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from harness.registry.plugins import Plugins
from harness.results.html import render_html, render_json
from harness.results.leaderboard import (
    RECORD_FIELDS,
    LeaderboardSpec,
    Table,
    build_tables,
    csv_frame,
    csv_safe_frame,
    exclusions,
    grouped_runs,
    non_default_options,
    one_line,
    options_note,
    render_table,
    statistics_notes,
)
from harness.results.store import ResultStore, RunRecord


def render(
    spec: LeaderboardSpec,
    tables: list[Table],
    fmt: str,
    records: Sequence[RunRecord] = (),
    options: list[tuple[str, list[str]]] | None = None,
    commands: Sequence[str] = (),
) -> str:
    """``tables`` as ``fmt`` (markdown, csv, latex, html or json); ``options``: each row's
    options away from their defaults, noted above Markdown and LaTeX tables; ``commands``: the
    commands that reproduce the page, shown in HTML."""
    if fmt == "json":
        return render_json(spec, tables)
    if fmt == "html":
        return render_html(spec, tables, records, commands, options or ())
    if not tables or tables[0].labels.empty:
        why = exclusions(spec, list(records)) if records else ""
        return f"no stored runs with protocol '{spec.protocol}' match this leaderboard" + (
            f" ({why})" if why else ""
        )
    if fmt == "csv":
        frame = pd.concat([csv_frame(t) for t in tables], ignore_index=True)
        return csv_safe_frame(frame).to_csv(index=False)
    parts = [f"# {one_line(spec.title)}\n" if spec.title and fmt == "markdown" else ""]
    if options:
        parts.append(options_note(options, fmt))
    for table in tables:  # titles and notes may quote labels: kept on their line
        notes = [one_line(note) for note in statistics_notes(table)]
        title = one_line(table.title)
        if fmt == "markdown":
            parts.append(f"## {title}\n\n{render_table(table, fmt)}\n")
            parts += ["".join(f"- {note}\n" for note in notes)] if notes else []
        else:
            parts.append(f"% {title}\n{render_table(table, fmt)}\n")
            parts += ["".join(f"% {note}\n" for note in notes)] if notes else []
    return "\n".join(p for p in parts if p).rstrip() + "\n"


def render_leaderboard(
    spec: LeaderboardSpec,
    store: ResultStore,
    plugins: Plugins,
    fmt: str,
    commands: Sequence[str] = (),
) -> str:
    """The leaderboard of every stored run ``spec`` selects, as ``fmt`` (see :func:`render`)."""
    records = store.records()
    options = [
        (labels.get("row") or " ".join(labels[k] for k in RECORD_FIELDS if k in labels), opts)
        for labels, runs in grouped_runs(spec, records)
        if (opts := non_default_options(runs, plugins))
    ]
    tables = build_tables(spec, records, plugins)
    return render(spec, tables, fmt, records, options, commands)
