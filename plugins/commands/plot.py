"""``harness plot``: figures (PNG) of DIR collections and results.

``harness plot dirs --aug multidir --output dirs.png`` draws the frequency
responses of an impulse-response augmentation's bank as quantile bands (100%,
80% and 50% of the responses, lightest to darkest) and their mean, like the
seed paper's Figure 1. ``--set aug.<name>.<field>=value`` configures the
augmentation exactly as in ``harness run`` (e.g. a real collection's path).

``harness plot fewshot --spec leaderboards/fewshot_mixing.toml --vs n`` draws few-shot accuracy
against N (at K = 1) or, with ``--vs k``, against K (at N = 5), one line per leaderboard row
with 95% CIs (uaMix-MAE Figures 3-5). ``harness plot tsne --run RUN --classes a,b,c`` embeds
the chosen classes' clips with the encoder before and after tuning and draws a t-SNE of each
side by side (Figure 6). ``harness plot curves --run RUN`` draws a run's training curves from
its ``metrics.jsonl`` (loss, the method's logged values, learning rate, throughput).

Each figure is one sub-command of the ``plot`` group: add another with
``@plot.command("name")``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from harness import hookimpl
from harness.api import UsageError
from harness.nn.impulse import (
    ImpulseResponseAugmentation,
    IRBank,
    ResponseBands,
    frequency_responses_db,
    quantile_bands,
)
from harness.registry.config import build_dataclass, parse_set

COVERAGE = (1.0, 0.8, 0.5)
BAND_ALPHA = (0.18, 0.32, 0.5)


def store_option(run_ids: bool = False) -> Callable:
    """``--store``: the SQLite results store (of the run ids, for commands given one)."""
    what = "SQLite results store for run ids" if run_ids else "SQLite results store"
    return click.option(
        "--store",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{what} (default: runs/results.sqlite, or $HARNESS_STORE).",
    )


def png_option(default: str) -> Callable:
    """``--output``: the PNG file a plot command writes."""
    return click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path(default),
        show_default=True,
        help="PNG file to write.",
    )


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
    from harness.cli.main import plugins_from

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
    if not config.path:
        title += " (synthetic embedded bank, not measured)"
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
    source = config.path or "synthetic embedded bank"
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
@store_option()
@click.option("--metric", default="logloss", show_default=True, help="logloss or acc.")
@png_option("devices.png")
@click.pass_context
def devices(
    ctx: click.Context, spec: Path | None, store: Path | None, metric: str, output: Path
) -> None:
    """Per-device values of each leaderboard row: mean over seeds with std error bars."""
    from harness.cli.main import DEFAULT_OUT, default_store, plugins_from
    from harness.results.leaderboard import LeaderboardSpec, build_tables
    from harness.results.store import ResultStore

    board = LeaderboardSpec.from_file(spec) if spec else LeaderboardSpec()
    board = board.with_options(protocol="device-logloss", metric=metric, agg="mean")
    records = ResultStore(store or default_store(DEFAULT_OUT)).records()
    [table] = build_tables(board, records, plugins_from(ctx))
    if table.labels.empty:
        raise UsageError("no stored device-logloss runs match this leaderboard")
    save_figure(draw_devices(table, metric), output)
    click.echo(f"wrote {output} ({len(table.labels)} rows)")


DEVICE_GROUP_KEYS = ("real", "seen", "unseen", "other", "overall")


def device_columns(table: Any) -> list[Any]:
    """Per-device columns only: group averages and the overall value are not devices."""
    return [c for c in table.columns if c.key.split("/")[-1] not in DEVICE_GROUP_KEYS]


def seed_count(n: Any) -> str:
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def draw_devices(table: Any, metric: str) -> Any:
    """Grouped bars: a bar per leaderboard row and device, the seeds' std as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = device_columns(table)
    figure = Figure(figsize=(max(7.5, 0.7 * len(columns) + 2.5), 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(len(columns))
    rows = len(table.labels)
    width = 0.8 / max(rows, 1)
    keys = [c.key for c in columns]
    seeds = sorted({int(n) for n in table.labels["seeds"]}) if "seeds" in table.labels else []
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
    axes.set_xticks(x, [c.key.split("/")[-1].upper() for c in columns])
    axes.set_xlabel("recording device (real A-C, simulated S1-S3, unseen S4-S6)")
    axes.set_ylabel("log-loss" if metric == "logloss" else "accuracy")
    spread = "one seed per row: no error bars" if seeds == [1] else "error bars: std over seeds"
    axes.set_title(f"Mean over seeds per device; {spread}", fontsize="medium")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


# -- few-shot accuracy vs N or K (uaMix-MAE Figures 3-5) -----------------------------

FEWSHOT_KEY = re.compile(r"^acc_(\d+)way(\d+)shot$")


@dataclass
class FewshotCurve:
    """Accuracy (%) and its 95% CI of one leaderboard row at each N (or K)."""

    label: str
    x: list[int]
    acc: list[float]
    ci: list[float]
    run_id: str


def fewshot_curves(spec: Any, records: list[Any], vs: str, fixed: int) -> list[FewshotCurve]:
    """One curve per leaderboard row: its best seed by ``acc`` (as the best-of-seeds table),
    at every stored N with K = ``fixed`` (``vs="n"``) or every K with N = ``fixed`` (``"k"``)."""
    from harness.results.leaderboard import grouped_runs, metrics_of, seedless_key

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
    return " ".join(str(labels[k]) for k in ("backbone", "method", "params") if labels.get(k))


@plot.command("fewshot")
@click.option(
    "--spec",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A leaderboard spec whose rows are the curves, e.g. leaderboards/fewshot_mixing.toml.",
)
@store_option()
@click.option(
    "--vs",
    type=click.Choice(["n", "k"]),
    default="n",
    show_default=True,
    help="x axis: N (classes per episode) or K (clips per class).",
)
@click.option("--k", "k_shot", type=int, default=1, show_default=True, help="K when --vs n.")
@click.option("--n", "n_way", type=int, default=5, show_default=True, help="N when --vs k.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG file to write (default: fewshot-vs-<n|k>.png).",
)
@click.pass_context
def fewshot(
    ctx: click.Context,
    spec: Path | None,
    store: Path | None,
    vs: str,
    k_shot: int,
    n_way: int,
    output: Path | None,
) -> None:
    """Few-shot accuracy vs N or K per leaderboard row, with 95% CIs (Figures 3-5).

    The runs need the sweep metrics, e.g. harness run ... --sweep-n 5,10,15 --sweep-k 1,5,10.
    """
    from harness.cli.main import DEFAULT_OUT, default_store
    from harness.results.leaderboard import LeaderboardSpec
    from harness.results.store import ResultStore

    board = LeaderboardSpec.from_file(spec) if spec else LeaderboardSpec()
    board = board.with_options(protocol="fewshot")
    records = ResultStore(store or default_store(DEFAULT_OUT)).records()
    fixed = k_shot if vs == "n" else n_way
    curves = fewshot_curves(board, records, vs, fixed)
    if not curves:
        shape = f"K = {fixed}" if vs == "n" else f"N = {fixed}"
        raise UsageError(
            f"no stored fewshot runs matching this leaderboard have accuracies at {shape}; "
            "run them with --sweep-n and --sweep-k (e.g. --sweep-n 5,10,15 --sweep-k 1,5,10)"
        )
    output = output or Path(f"fewshot-vs-{vs}.png")
    save_figure(draw_fewshot(curves, vs, fixed), output)
    click.echo(f"wrote {output} ({len(curves)} curves)")


def draw_fewshot(curves: list[FewshotCurve], vs: str, fixed: int) -> Any:
    """Accuracy against N or K, one line per curve, the 95% CIs as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        axes.errorbar(curve.x, curve.acc, yerr=curve.ci, marker="o", capsize=3, label=curve.label)
    ticks = sorted({x for curve in curves for x in curve.x})
    axes.set_xticks(ticks, [str(t) for t in ticks])
    if vs == "n":
        axes.set_xlabel(f"N (classes per episode), K = {fixed}")
    else:
        axes.set_xlabel(f"K (support clips per class), N = {fixed}")
    axes.set_ylabel("accuracy (%), 95% CI")
    axes.set_title(f"Few-shot accuracy vs {vs.upper()} (nearest class centroid)", fontsize="medium")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


# -- t-SNE of embeddings before and after tuning (uaMix-MAE Figure 6) -------------------


@dataclass
class Encoder:
    """A backbone with its weights, and where they came from."""

    backbone: Any
    source: str


def find_run(value: str, store: Path) -> Path:
    """A run folder (with ``config.json`` and ``backbone.pt``) named by path or run id."""
    from harness.results.store import ResultStore

    path = Path(value)
    if path.is_dir():
        for name in ("config.json", "backbone.pt"):
            if not (path / name).is_file():
                raise UsageError(f"run folder {path} has no {name}")
        return path
    records = ResultStore(store).records()
    found = [r for r in records if r.run_id == value] or [
        r for r in records if r.run_id.startswith(value)
    ]
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs"
        raise UsageError(f"{what} with id {value!r} in {store} (give a run id or a run folder)")
    return find_run(found[0].run_dir, store)


def stored_config(folder: Path) -> dict[str, Any]:
    """A run folder's ``config.json``."""
    import json

    try:
        stored = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {folder / 'config.json'}: {err}") from None
    if not isinstance(stored, dict):
        raise UsageError(f"{folder / 'config.json'} is not a run config")
    return stored


def run_config(folder: Path, plugins: Any) -> Any:
    """A stored run's run settings, backbone and data set, resolved (method, augmentations and
    protocols are left at their defaults: a t-SNE needs none of them)."""
    from harness.registry.config import resolve

    stored = stored_config(folder)
    return resolve({k: stored[k] for k in ("run", "backbone", "dataset") if k in stored}, plugins)


def run_title(folder: Path) -> str:
    """``<method> on <backbone>`` and the run folder's name, for a panel title."""
    stored = stored_config(folder)
    method = stored.get("method", {}).get("name", "?")
    backbone = stored.get("backbone", {}).get("name", "?")
    return f"{method} on {backbone}\n{folder.name}"


def run_encoder(folder: Path, cfg: Any) -> Encoder:
    """The backbone of a run folder with its trained weights (``backbone.pt``)."""
    import torch

    backbone = cfg.backbone.build()
    try:
        state = torch.load(folder / "backbone.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable: missing, truncated, not a torch file
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise UsageError(f"cannot read {folder / 'backbone.pt'}: {detail}") from None
    try:
        backbone.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UsageError(f"{folder / 'backbone.pt'} does not fit its config: {first}") from None
    return Encoder(backbone, run_title(folder))


def initial_encoder(cfg: Any) -> Encoder:
    """The encoder a run started from: its seeded initialisation, or its checkpoint."""
    from harness.registry.checkpoints import load_backbone_checkpoint
    from harness.run.experiment import seed_everything

    seed_everything(cfg.run.seed)  # the runner builds the backbone right after seeding
    backbone = cfg.backbone.build()
    checkpoint = backbone.checkpoint_source()
    if checkpoint:
        load_backbone_checkpoint(backbone, checkpoint)
        return Encoder(backbone, f"{cfg.backbone.name}\ncheckpoint {Path(checkpoint).name}")
    return Encoder(backbone, f"{cfg.backbone.name}\ninitialisation (seed {cfg.run.seed})")


def before_encoder(value: str | None, cfg: Any, store: Path, plugins: Any) -> Encoder:
    """``--before``: a run (folder or id), a checkpoint file, or (None) the run's start."""
    from harness.registry.checkpoints import load_backbone_checkpoint

    if value is None:
        return initial_encoder(cfg)
    path = Path(value)
    if path.is_file():
        backbone = cfg.backbone.build()
        load_backbone_checkpoint(backbone, path)
        return Encoder(backbone, f"{cfg.backbone.name}\ncheckpoint {path.name}")
    folder = find_run(value, store)
    return run_encoder(folder, run_config(folder, plugins))


def select_clips(splits: Any, names: list[str], split: str) -> tuple[list[Any], list[int]]:
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


def embed_clips(encoder: Encoder, clips: list[Any], splits: Any, batch_size: int) -> Any:
    """Clip embeddings ``[M, D]`` (float32, CPU) of the frozen encoder, in eval mode."""
    import torch

    from harness.data.loader import batches, load_clips

    backbone = encoder.backbone.eval()
    frontend = backbone.frontend().eval()
    audio = load_clips(
        clips, backbone.sample_rate, splits.clip_seconds, splits.devices, desc="loading clips"
    )
    out = []
    with torch.no_grad():
        for batch in batches(audio, batch_size, torch.device("cpu")):
            out.append(backbone.embed(frontend(batch.wave)).float())
    return torch.cat(out)


def tsne_2d(embeddings: Any, seed: int, perplexity: float | None = None) -> np.ndarray:
    """scikit-learn's t-SNE of ``[M, D]`` embeddings to ``[M, 2]`` (PCA initialisation)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

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


@plot.command("tsne")
@click.option(
    "--run",
    "run_ref",
    required=True,
    help="The tuned run: a run folder (runs/<id>) or a run id in the store.",
)
@click.option(
    "--before",
    default=None,
    help="Encoder before tuning: a run folder or id, or a checkpoint file "
    "(default: the run's own starting point, its initialisation or backbone.checkpoint).",
)
@click.option(
    "--classes",
    required=True,
    help="Comma-separated class names to show (the paper shows eight).",
)
@click.option(
    "--split",
    type=click.Choice(["eval", "train", "all"]),
    default="eval",
    show_default=True,
    help="Clips to embed (labeled ones only).",
)
@click.option("--perplexity", type=float, default=None, help="t-SNE perplexity (default: 30).")
@click.option("--seed", type=int, default=0, show_default=True, help="t-SNE random state.")
@store_option(run_ids=True)
@png_option("tsne.png")
@click.pass_context
def tsne(
    ctx: click.Context,
    run_ref: str,
    before: str | None,
    classes: str,
    split: str,
    perplexity: float | None,
    seed: int,
    store: Path | None,
    output: Path,
) -> None:
    """t-SNE of clip embeddings of chosen classes before and after tuning (Figure 6).

    Both encoders embed the same clips of the tuned run's data set; each panel is a
    separate t-SNE of one encoder's embeddings.
    """
    from harness.cli.main import DEFAULT_OUT, default_store, plugins_from

    plugins = plugins_from(ctx)
    store = store or default_store(DEFAULT_OUT)
    names = [n.strip() for n in classes.split(",") if n.strip()]
    if not names:
        raise UsageError("--classes needs at least one class name")
    folder = find_run(run_ref, store)
    cfg = run_config(folder, plugins)
    splits = cfg.dataset.build().load()
    clips, labels = select_clips(splits, names, split)
    encoders = [before_encoder(before, cfg, store, plugins), run_encoder(folder, cfg)]
    batch_size = cfg.run.eval_batch_size
    points = [
        tsne_2d(embed_clips(e, clips, splits, batch_size), seed, perplexity) for e in encoders
    ]
    titles = [f"before: {encoders[0].source}", f"after: {encoders[1].source}"]
    panels = list(zip(titles, points, strict=True))
    save_figure(draw_tsne(panels, np.asarray(labels), names), output)
    click.echo(f"wrote {output} ({len(clips)} clips of {len(names)} classes)")


def draw_tsne(panels: list[tuple[str, np.ndarray]], labels: np.ndarray, names: list[str]) -> Any:
    """Side-by-side scatter plots of 2-D points, one colour per class, one legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


CURVE_SKIP = {"event", "stage", "stage_name", "epoch", "step", "global_step", "seconds"}


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """A run folder's (or in-progress folder's) ``metrics.jsonl`` events."""
    import json

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
            events.append(event)
    if not events:
        raise UsageError(f"{path} holds no logged steps")
    return events


def curve_keys(events: list[dict[str, Any]], wanted: str | None) -> list[str]:
    present = [k for e in events for k, v in e.items() if isinstance(v, int | float)]
    keys = list(dict.fromkeys(k for k in present if k not in CURVE_SKIP))
    if wanted is None:
        return keys
    chosen = [k.strip() for k in wanted.split(",") if k.strip()]
    missing = [k for k in chosen if k not in keys]
    if missing:
        raise UsageError(f"--metrics: {', '.join(missing)} not logged (logged: {', '.join(keys)})")
    return chosen


@plot.command("curves")
@click.option(
    "--run",
    "run_ref",
    required=True,
    help="A run folder, an in-progress folder (runs/.partial/<id>) or a run id in the store.",
)
@click.option("--metrics", default=None, help="Comma-separated keys to draw (default: all).")
@store_option(run_ids=True)
@png_option("curves.png")
def curves(run_ref: str, metrics: str | None, store: Path | None, output: Path) -> None:
    """Training curves of one run from its metrics.jsonl: loss, the method's logs, lr,
    throughput; per logged step (line) and per epoch (dots), against the optimizer step."""
    from harness.cli.main import DEFAULT_OUT, default_store

    path = Path(run_ref)
    if path.is_dir() and (path / "metrics.jsonl").is_file():
        folder = path
    else:
        folder = find_run(run_ref, store or default_store(DEFAULT_OUT))
    events = read_metrics(folder)
    keys = curve_keys(events, metrics)
    save_figure(draw_curves(events, keys, folder.name), output)
    click.echo(f"wrote {output} ({len(keys)} curves, {len(events)} events)")


def draw_curves(events: list[dict[str, Any]], keys: list[str], title: str) -> Any:
    """One panel per key: step events as a line, epoch events as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows + 0.5), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, key in enumerate(keys):
        axes = grid[index // columns][index % columns]
        for kind, style in (("step", {"linewidth": 1.0}), ("epoch", {"marker": "o", "ms": 4})):
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
    figure.suptitle(title, fontsize="small")
    figure.tight_layout()
    return figure


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(plot)
