"""``harness plot``: figures (PNG) of DIR collections and results.

``harness plot dirs --aug multidir --output dirs.png`` draws the frequency
responses of an impulse-response augmentation's bank as quantile bands (100%,
80% and 50% of the responses, lightest to darkest) and their mean, like the
seed paper's Figure 1. ``--set aug.<name>.<field>=value`` configures the
augmentation exactly as in ``harness run`` (e.g. a real collection's path).

Each figure is one sub-command of the ``plot`` group: add another with
``@plot.command("name")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import numpy as np

from harness import hookimpl
from harness.config import build_dataclass, parse_set
from harness.errors import UsageError
from harness.impulse import (
    ImpulseResponseAugmentation,
    IRBank,
    ResponseBands,
    frequency_responses_db,
    quantile_bands,
)

COVERAGE = (1.0, 0.8, 0.5)
BAND_ALPHA = (0.18, 0.32, 0.5)


@click.group("plot")
def plot() -> None:
    """Draw figures (PNG) of impulse-response collections and results."""


@plot.command("dirs")
@click.option(
    "--aug",
    "aug_name",
    default="multidir",
    show_default=True,
    help="An impulse-response augmentation (multidir, vintage, ...).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Configure it as in 'harness run', e.g. --set aug.multidir.path=DIR (repeatable).",
)
@click.option(
    "--sample-rate",
    type=int,
    default=32000,
    show_default=True,
    help="Rate the responses are resampled to before analysis.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG file to write (default: dirs-<aug>.png).",
)
@click.pass_context
def dirs(
    ctx: click.Context,
    aug_name: str,
    assignments: tuple[str, ...],
    sample_rate: int,
    output: Path | None,
) -> None:
    """Frequency-response quantile bands of a DIR collection (as the seed's Figure 1)."""
    from harness.cli import plugins_from

    entry = plugins_from(ctx)["augmentation"].get(aug_name)
    if not issubclass(entry.cls, ImpulseResponseAugmentation):
        raise UsageError(f"augmentation '{aug_name}' does not convolve with impulse responses")
    if sample_rate < 1000:
        raise UsageError(f"bad value for --sample-rate: {sample_rate} (expected Hz, e.g. 32000)")
    config = build_dataclass(
        entry.cls.Config, aug_settings(aug_name, assignments), f"aug.{aug_name}"
    )
    bank = entry.cls(config).load_bank(sample_rate)
    freqs, responses = frequency_responses_db(bank.irs, bank.sample_rate)
    bands = quantile_bands(responses, COVERAGE)
    output = output or Path(f"dirs-{aug_name}.png")
    title = f"{aug_name}: {len(bank)} responses, {len(bank.values('microphone'))} microphones"
    save_figure(draw_bands(freqs, bands, title), output)
    click.echo(f"wrote {output} ({describe_source(config, bank)})")


def aug_settings(aug_name: str, assignments: tuple[str, ...]) -> dict[str, Any]:
    """The ``aug.<aug_name>.<field>`` values of ``--set`` (any other key is an error)."""
    raw = parse_set(list(assignments))
    for section, values in raw.items():
        others = [f"aug.{name}" for name in values if name != aug_name] if section == "aug" else []
        if section != "aug" or others:
            bad = others[0] if others else section
            raise UsageError(
                f"bad --set key '{bad}...': plot dirs takes aug.{aug_name}.<field>=value"
            )
    values = raw.get("aug", {}).get(aug_name, {})
    if not isinstance(values, dict):
        raise UsageError(f"bad --set key 'aug.{aug_name}': expected aug.{aug_name}.<field>=value")
    return values


def describe_source(config: Any, bank: IRBank) -> str:
    source = config.path or "embedded bank"
    return f"{source}, {bank.length} samples at {bank.sample_rate} Hz"


def draw_bands(freqs: np.ndarray, bands: ResponseBands, title: str) -> Any:
    """A matplotlib figure (Agg canvas, no global pyplot state) of the bands and the mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=120)
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
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return figure


def save_figure(figure: Any, output: Path) -> None:
    """Write a PNG atomically (a temporary file renamed into place)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        figure.savefig(partial, format="png")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@plot.command("devices")
@click.option(
    "--spec",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A leaderboard spec, e.g. leaderboards/device_generalization.toml.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite results store (default: runs/results.sqlite, or $HARNESS_STORE).",
)
@click.option("--metric", default="logloss", show_default=True, help="logloss or acc.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("devices.png"),
    show_default=True,
    help="PNG file to write.",
)
@click.pass_context
def devices(
    ctx: click.Context, spec: Path | None, store: Path | None, metric: str, output: Path
) -> None:
    """Per-device values of each leaderboard row: mean over seeds with std error bars."""
    from harness.cli import DEFAULT_OUT, default_store, plugins_from
    from harness.leaderboard import LeaderboardSpec, build_tables
    from harness.store import ResultStore

    board = LeaderboardSpec.from_file(spec) if spec else LeaderboardSpec()
    board = board.with_options(protocol="device-logloss", metric=metric, agg="mean")
    records = ResultStore(store or default_store(DEFAULT_OUT)).records()
    [table] = build_tables(board, records, plugins_from(ctx))
    if table.labels.empty:
        raise UsageError("no stored device-logloss runs match this leaderboard")
    save_figure(draw_devices(table, metric), output)
    click.echo(f"wrote {output} ({len(table.labels)} rows)")


def draw_devices(table: Any, metric: str) -> Any:
    """One line per leaderboard row over the devices, with the seeds' std as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [c for c in table.columns if c.label not in ("Avg.", "Overall")]
    figure = Figure(figsize=(7.5, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(columns))
    for i in range(len(table.labels)):
        labels = table.labels.iloc[i]
        name = labels.get("row") or " ".join(
            str(labels[k]) for k in ("method", "aug", "params") if labels.get(k)
        )
        keys = [c.key for c in columns]
        axes.errorbar(
            x + (i - len(table.labels) / 2) * 0.04,
            table.values.loc[i, keys],
            yerr=table.errors.loc[i, keys],
            marker="o",
            capsize=3,
            label=name,
        )
    axes.set_xticks(x, [c.label for c in columns])
    axes.set_xlabel("device (real A-C, simulated S1-S3, unseen S4-S6)")
    axes.set_ylabel("log-loss" if metric == "logloss" else "accuracy")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(plot)
