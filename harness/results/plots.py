"""Figures (PNG) of impulse-response collections and results, and what they show: quantile
bands of a DIR bank's responses, per-device values, few-shot curves, t-SNE of clip embeddings
and training curves. Drawn on Agg canvases (no global pyplot state); the ``harness plot``
commands (:mod:`harness.cli.plot`) call them."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from harness.api import Backbone, Clip, Column, DataSplits
from harness.nn.impulse import ResponseBands
from harness.results.leaderboard import (
    LeaderboardSpec,
    Table,
    grouped_runs,
    metrics_of,
    seedless_key,
)
from harness.results.store import RunRecord
from harness.util.errors import UsageError, naming

COVERAGE = (1.0, 0.8, 0.5)
"""Shares of the responses inside each band of ``harness plot dirs``, widest first."""

BAND_ALPHA = (0.18, 0.32, 0.5)
TITLE_CHARS_PER_INCH = 11
"""Characters of a medium-size title per inch of figure width."""


def wrapped(title: str, figure: Figure) -> str:
    """``title`` in lines that fit ``figure``'s width (wrapped instead of clipped)."""
    width = int(figure.get_figwidth() * TITLE_CHARS_PER_INCH)
    return "\n".join(textwrap.wrap(title, width, break_on_hyphens=False))


@dataclass
class Encoder:
    """A backbone with its weights, and where they came from."""

    backbone: Backbone
    source: str


def draw_bands(freqs: np.ndarray, bands: ResponseBands, title: str) -> Figure:
    """A matplotlib figure (Agg canvas, no global pyplot state) of the bands and the mean."""
    figure = Figure(figsize=(8.6, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for coverage, low, high, alpha in zip(
        bands.coverage, bands.lower, bands.upper, BAND_ALPHA, strict=False
    ):
        axes.fill_between(
            freqs,
            low,
            high,
            color="tab:blue",
            alpha=alpha,
            linewidth=0,
            label=f"{coverage:.0%} of responses",
        )
    axes.plot(freqs, bands.mean, color="black", linewidth=1.4, label="mean")
    axes.set_xscale("log")
    axes.set_xlim(freqs[0], freqs[-1])
    axes.set_ylim(max(-60.0, float(bands.lower[0].min()) - 3), float(bands.upper[0].max()) + 3)
    axes.set_xlabel("frequency (Hz)")
    axes.set_ylabel("magnitude (dB re 0.5-2 kHz)")
    axes.set_title(wrapped(title, figure), fontsize="medium")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, output: Path) -> None:
    """Write a PNG atomically (a temporary file renamed into place)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with naming(output):
            figure.savefig(partial, format="png")
            os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


DEVICE_GROUP_KEYS = ("real", "seen", "unseen", "other", "overall")


def device_columns(table: Table) -> list[Column]:
    """Per-device columns only: group averages and the overall value are not devices."""
    return [c for c in table.columns if c.key.split("/")[-1] not in DEVICE_GROUP_KEYS]


def seed_count(n: Any) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def chance_level(metric: str, classes: int, values: np.ndarray) -> float:
    """What a uniform guess over ``classes`` scores: log-loss ln(C), accuracy 1/C (as a
    percentage when the values are percentages)."""
    if metric == "logloss":
        return math.log(classes)
    finite = values[np.isfinite(values)]
    return (100.0 if finite.size and finite.max() > 1.0 else 1.0) / classes


def draw_devices(table: Table, metric: str, classes: int | None = None) -> Figure:
    """Grouped bars: a bar per leaderboard row and device, the seeds' std as error bars; the
    y axis starts near the data, the chance level of ``classes`` classes as a dashed line,
    the legend right of the axes (covering nothing)."""
    columns = device_columns(table)
    figure = Figure(figsize=(max(7.5, 0.7 * len(columns) + 2.5) + 3.2, 4.4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(columns))
    rows = len(table.labels)
    width = 0.8 / max(rows, 1)
    keys = [c.key for c in columns]
    seeds = sorted({int(n) for n in table.labels["seeds"]}) if "seeds" in table.labels else []
    values = table.values.loc[:, keys].to_numpy(dtype=float)
    errors_all = (
        table.errors.loc[:, keys].fillna(0.0).to_numpy(dtype=float)
        if table.errors is not None
        else np.zeros_like(values)
    )
    for i in range(rows):
        labels = table.labels.iloc[i]
        name = labels.get("row") or " ".join(
            str(labels[k]) for k in ("method", "aug", "params") if labels.get(k)
        )
        errors = table.errors.loc[i, keys].fillna(0.0) if table.errors is not None else None
        axes.bar(
            x + (i - (rows - 1) / 2) * width,
            table.values.loc[i, keys],
            width=width,
            yerr=errors,
            capsize=2,
            label=f"{name} ({seed_count(labels['seeds'])})" if "seeds" in labels else name,
        )
    low, high = np.nanmin(values - errors_all), np.nanmax(values + errors_all)
    if classes:
        chance = chance_level(metric, classes, values)
        low, high = min(low, chance), max(high, chance)
        axes.axhline(
            chance,
            color="0.25",
            linestyle="--",
            linewidth=1.0,
            zorder=3,
            label=f"chance ({classes} classes): {chance:.3g}",
        )
    pad = 0.08 * ((high - low) or 1.0)
    axes.set_ylim(max(0.0, low - pad), high + pad)  # bars start near the data, not at 0
    axes.set_xticks(x, [c.key.split("/")[-1].upper() for c in columns])
    axes.set_xlabel("recording device (real A-C, simulated S1-S3, unseen S4-S6)")
    unit = (
        "log-loss (nats, lower is better)"
        if metric == "logloss"
        else f"accuracy{columns[0].unit_suffix if columns else ''} (higher is better)"
    )
    axes.set_ylabel(unit)
    spread = "one seed per row: no error bars" if seeds == [1] else "error bars: std over seeds"
    what = "Log-loss" if metric == "logloss" else "Accuracy"
    title = f"{what} per recording device, mean over seeds; {spread}"
    axes.set_title(wrapped(title, figure), fontsize="medium")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return figure


FEWSHOT_KEY = re.compile(r"^acc_(\d+)way(\d+)shot$")


@dataclass
class FewshotCurve:
    """Accuracy (%) and its 95% CI of one leaderboard row at each N (or K)."""

    label: str
    x: list[int]
    acc: list[float]
    ci: list[float]
    run_id: str


def fewshot_curves(
    spec: LeaderboardSpec, records: list[RunRecord], vs: str, fixed: int
) -> list[FewshotCurve]:
    """One curve per leaderboard row: its best seed by ``acc`` (as the best-of-seeds table),
    at every stored N with K = ``fixed`` (``vs="n"``) or every K with N = ``fixed`` (``"k"``)."""
    if vs not in ("n", "k"):
        raise UsageError(f"bad value for --vs: {vs!r} (expected n or k)")
    curves = []
    for labels, runs in grouped_runs(spec, records):
        best = max(runs, key=lambda r: metrics_of(r, spec.protocol).get("acc", -math.inf))
        metrics = metrics_of(best, spec.protocol)
        points = []
        for key in metrics:
            found = FEWSHOT_KEY.match(key)
            if not found:
                continue
            n_way, k_shot = int(found[1]), int(found[2])
            if (k_shot if vs == "n" else n_way) == fixed:
                x = n_way if vs == "n" else k_shot
                points.append((x, metrics[key], metrics.get(f"ci_{n_way}way{k_shot}shot", 0.0)))
        if points:
            points.sort()
            label = labels.get("row") or row_name(labels) or seedless_key(best)
            curves.append(
                FewshotCurve(
                    label,
                    [p[0] for p in points],
                    [p[1] for p in points],
                    [p[2] for p in points],
                    best.run_id,
                )
            )
    return curves


def row_name(labels: dict[str, Any]) -> str:
    """A leaderboard row's name from its backbone, method and parameters."""
    return " ".join(str(labels[k]) for k in ("backbone", "method", "params") if labels.get(k))


def draw_fewshot(curves: list[FewshotCurve], vs: str, fixed: int) -> Figure:
    """Accuracy against N or K, one line per curve, the 95% CIs as error bars."""
    figure = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        axes.errorbar(curve.x, curve.acc, yerr=curve.ci, marker="o", capsize=3, label=curve.label)
    ticks = sorted({x for curve in curves for x in curve.x})
    chance = dict(color="0.35", linestyle="--", linewidth=1.0)
    if vs == "n":  # an N-way episode's chance level: 1/N
        axes.plot(ticks, [100.0 / n for n in ticks], label="chance (1/N)", **chance)
    else:
        axes.axhline(100.0 / fixed, label=f"chance (1/{fixed})", **chance)
    axes.set_xticks(ticks, [str(t) for t in ticks])
    if vs == "n":
        axes.set_xlabel(f"N (classes per episode), K = {fixed}")
    else:
        axes.set_xlabel(f"K (support clips per class), N = {fixed}")
    axes.set_ylabel("accuracy (%), 95% CI")
    axes.set_title(f"Few-shot accuracy vs {vs.upper()} (nearest class centroid)", fontsize="medium")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="best")  # where it covers the fewest points
    figure.tight_layout()
    return figure


def select_clips(splits: DataSplits, names: list[str], split: str) -> tuple[list[Clip], list[int]]:
    """The labeled clips of ``split`` (train, eval or all) in the named classes, in order,
    and each one's position in ``names``."""
    unknown = [n for n in names if n not in splits.classes]
    if unknown:
        shown = ", ".join(splits.classes[:10])
        more = f" ... ({len(splits.classes)} classes)" if len(splits.classes) > 10 else ""
        raise UsageError(f"unknown class {unknown[0]!r}; the data set has: {shown}{more}")
    if len(set(names)) != len(names):
        raise UsageError(f"--classes names a class twice: {', '.join(names)}")
    wanted = {splits.classes.index(n): i for i, n in enumerate(names)}
    parts = ["train", "eval"] if split == "all" else [split]
    clips = [c for part in parts for c in splits.split(part) if c.label in wanted]
    if len(clips) < 2:
        raise UsageError(f"the '{split}' split has {len(clips)} clips of these classes")
    return clips, [wanted[c.label] for c in clips]


def tsne_2d(embeddings: torch.Tensor, seed: int, perplexity: float | None = None) -> np.ndarray:
    """scikit-learn's t-SNE of ``[M, D]`` embeddings to ``[M, 2]`` (PCA initialisation)."""
    count = embeddings.shape[0]
    if count < 3:
        raise UsageError(f"t-SNE needs at least 3 clips, got {count}")
    perplexity = perplexity or min(30.0, (count - 1) / 3)
    if not 0 < perplexity < count:
        raise UsageError(f"bad value for --perplexity: {perplexity} (must be below {count} clips)")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # One OpenMP thread: a few hundred points take well under a second, whereas busy-waiting
    # threads on a shared CPU made the same fit take tens of seconds.
    with threadpool_limits(limits=1):
        return tsne.fit_transform(np.asarray(embeddings, dtype=np.float64))


def draw_tsne(panels: list[tuple[str, np.ndarray]], labels: np.ndarray, names: list[str]) -> Figure:
    """Side-by-side scatter plots of 2-D points, one colour per class, one legend."""
    figure = Figure(figsize=(5.0 * len(panels) + 1.8, 4.6), dpi=120)
    FigureCanvasAgg(figure)
    colours = figure_colours(len(names))
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (title, points) in zip(axes_list, panels, strict=True):
        for index, name in enumerate(names):
            chosen = labels == index
            axes.scatter(*points[chosen].T, s=14, color=colours[index], label=name)
        axes.set_title(title, fontsize="medium")
        axes.set_xticks([])
        axes.set_yticks([])
    handles, texts = axes_list[0].get_legend_handles_labels()
    figure.legend(handles, texts, loc="center right", fontsize="small", frameon=False)
    figure.tight_layout(rect=(0.0, 0.0, 1.0 - 1.8 / figure.get_figwidth(), 1.0))
    return figure


def figure_colours(count: int) -> list[Any]:
    """``count`` distinct colours of a qualitative colour map (repeating beyond 20)."""
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


CURVE_SKIP = {
    "event", "stage", "stage_name", "epoch", "step", "global_step", "seconds", "collapsed",
}  # fmt: skip


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """A run folder's (or in-progress folder's) ``metrics.jsonl`` events."""
    path = folder / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err} (runs log it since harness 0.1)") from None
    events = []
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path} line {number} is not JSON") from None
        # stage 0: a protocol's training (device probe, fine-tuning), not the run's curves
        if isinstance(event, dict) and "global_step" in event and event.get("stage") != 0:
            step = event["global_step"]
            if (
                isinstance(step, bool)
                or not isinstance(step, int | float)
                or not math.isfinite(step)
            ):
                raise UsageError(f"{path} line {number}: global_step is {step!r}, not a number")
            events.append(event)
    if not events:
        raise UsageError(f"{path} holds no logged steps")
    return events


def curve_keys(events: list[dict[str, Any]], wanted: str | None) -> list[str]:
    """The logged numeric keys to draw: ``wanted`` (comma list, checked) or all."""
    present = [k for e in events for k, v in e.items() if isinstance(v, int | float)]
    keys = list(dict.fromkeys(k for k in present if k not in CURVE_SKIP))
    if wanted is None:
        return keys
    chosen = [k.strip() for k in wanted.split(",") if k.strip()]
    missing = [k for k in chosen if k not in keys]
    if missing:
        raise UsageError(f"--metrics: {', '.join(missing)} not logged (logged: {', '.join(keys)})")
    return chosen


def draw_curves(events: list[dict[str, Any]], keys: list[str], title: str) -> Figure:
    """One panel per key: step events as a line, epoch (and health) events as dots."""
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.5), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, key in enumerate(keys):
        axes = grid[index // columns][index % columns]
        for kind, style in (
            # the step line on top of the epoch dots (hollow), so neither hides the other
            ("step", {"linewidth": 1.2, "zorder": 3, "color": "tab:blue"}),
            (
                "epoch",
                {
                    "marker": "o",
                    "ms": 6,
                    "linestyle": ":",
                    "markerfacecolor": "none",
                    "color": "tab:orange",
                    "zorder": 2,
                },
            ),
            ("health", {"marker": "s", "ms": 4, "color": "tab:green"}),  # per epoch
        ):
            points = [
                (e["global_step"], e[key])
                for e in events
                if e.get("event") == kind and isinstance(e.get(key), int | float)
            ]
            if points:
                axes.plot(*zip(*points, strict=True), label=kind, **style)
        axes.set_title(key, fontsize="medium")
        axes.set_xlabel("optimizer step")
        axes.grid(True, alpha=0.3)
        if key == "lr" or key.startswith("lr/"):
            axes.set_yscale("log")
    for index in range(len(keys), rows * columns):
        grid[index // columns][index % columns].set_visible(False)
    grid[0][0].legend(fontsize="small")
    figure.suptitle(wrapped(title, figure), fontsize="medium")
    figure.tight_layout()
    return figure
