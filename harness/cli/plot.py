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

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from harness.api import Clip, DataSplits
from harness.cli.options import (
    DEFAULT_OUT,
    default_store,
    plugins_from,
    spec_option,
    store_option,
)
from harness.data.loader import load_clips
from harness.engine.trainer import standalone
from harness.nn.impulse import (
    ImpulseResponseAugmentation,
    IRBank,
    IRConfig,
    frequency_responses_db,
    quantile_bands,
)
from harness.registry.checkpoints import load_backbone_checkpoint
from harness.registry.config import RunConfig, build_dataclass, parse_set, resolve
from harness.registry.plugins import Plugins
from harness.results.leaderboard import LeaderboardSpec, build_tables
from harness.results.plots import (
    COVERAGE,
    Encoder,
    curve_keys,
    draw_bands,
    draw_curves,
    draw_devices,
    draw_fewshot,
    draw_tsne,
    fewshot_curves,
    read_metrics,
    save_figure,
    select_clips,
    tsne_2d,
)
from harness.results.store import ResultStore, RunRecord
from harness.run.experiment import seed_everything
from harness.util.errors import UsageError

RUN_IDS_STORE = "SQLite results store for run ids"


def png_option(default_name: str, default_folder: str) -> Callable:
    """``--output`` (a ``.png`` file, or a folder for ``default_name``; default: ``default_name``
    in ``default_folder``) and ``--force`` (overwrite). A ``default_name`` with a
    ``<placeholder>`` depends on other options; the command fills it in."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--force", is_flag=True, help="Overwrite an existing PNG file.")(
            command
        )
        return click.option(
            "--output",
            type=click.Path(path_type=Path),
            default=None,
            help=f"PNG file, or folder, to write (default: {default_folder}/{default_name}).",
        )(command)

    return decorate


def png_path(output: Path | None, name: str, folder: Path, force: bool) -> Path:
    """Where a plot goes: ``output`` if it names a ``.png`` file, else ``name`` in ``output``
    (or in ``folder``); an existing file is refused unless ``force``."""
    if output is not None and output.suffix.lower() == ".png":
        path = output
    else:
        path = (output or folder) / name
    if path.exists() and not force:
        raise UsageError(f"{path} exists; --force overwrites it, --output writes elsewhere")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; --output takes a .png file or a folder")
    return path


def plots_folder(store: Path | None) -> Path:
    """Plots not of one run go beside the store's run folders: ``runs/plots``."""
    return (store or default_store(DEFAULT_OUT)).parent / "plots"


def run_option(help_text: str) -> Callable:
    """``--run`` (parameter ``run_ref``, required): a run folder or a run id."""
    return click.option("--run", "run_ref", required=True, help=help_text)


def embed_clips(
    encoder: Encoder, clips: list[Clip], splits: DataSplits, batch_size: int
) -> torch.Tensor:
    """Clip embeddings ``[M, D]`` (float32, CPU) of the frozen encoder in evaluation mode,
    through the engine's one inference loop."""
    backbone = encoder.backbone.eval()
    audio = load_clips(
        clips, backbone.sample_rate, splits.clip_seconds, splits.devices, desc="loading clips"
    )
    forward = lambda batch: backbone.embed(batch.features)  # noqa: E731
    return standalone(torch.device("cpu")).infer(forward, audio, batch_size, backbone.frontend())


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
@png_option("dirs-<aug>.png", "runs/plots")
@click.pass_context
def dirs(
    ctx: click.Context,
    aug_name: str,
    assignments: tuple[str, ...],
    sample_rate: int,
    output: Path | None,
    force: bool,
) -> None:
    """Frequency-response quantile bands of a DIR collection (as the seed's Figure 1)."""
    entry = plugins_from(ctx)["augmentation"].get(aug_name)
    if not issubclass(entry.cls, ImpulseResponseAugmentation):
        raise UsageError(f"augmentation '{aug_name}' does not convolve with impulse responses")
    if sample_rate < 1000:
        raise UsageError(f"bad value for --sample-rate: {sample_rate} (expected Hz, e.g. 32000)")
    config = build_dataclass(
        entry.cls.Config, aug_settings(aug_name, assignments), f"aug.{aug_name}"
    )
    output = png_path(output, f"dirs-{aug_name}.png", DEFAULT_OUT / "plots", force)
    bank = entry.cls(config).load_bank(sample_rate)
    freqs, responses = frequency_responses_db(bank.irs, bank.sample_rate)
    bands = quantile_bands(responses, COVERAGE)
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


def describe_source(config: IRConfig, bank: IRBank) -> str:
    """Where a bank came from, its length and sample rate."""
    source = config.path or "synthetic embedded bank"
    return f"{source}, {bank.length} samples at {bank.sample_rate} Hz"


def board_and_records(
    spec: Path | None, store: Path | None, **options: str
) -> tuple[LeaderboardSpec, list[RunRecord]]:
    """The leaderboard of ``spec`` (or the default one) with ``options``, and the stored runs."""
    board = LeaderboardSpec.from_file(spec) if spec else LeaderboardSpec()
    return board.with_options(**options), ResultStore(store or default_store(DEFAULT_OUT)).records()


@plot.command("devices")
@spec_option("A leaderboard spec, e.g. leaderboards/device_generalization.toml.")
@store_option()
@click.option("--metric", default="logloss", show_default=True, help="logloss or acc.")
@click.option(
    "--classes",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Classes of the task, for the chance line (TAU22: 10 scenes; 0: no line).",
)
@png_option("devices.png", "runs/plots")
@click.pass_context
def devices(
    ctx: click.Context,
    spec: Path | None,
    store: Path | None,
    metric: str,
    classes: int,
    output: Path | None,
    force: bool,
) -> None:
    """Per-device values of each leaderboard row: mean over seeds with std error bars."""
    output = png_path(output, "devices.png", plots_folder(store), force)
    board, records = board_and_records(
        spec, store, protocol="device-logloss", metric=metric, agg="mean"
    )
    [table] = build_tables(board, records, plugins_from(ctx))
    if table.labels.empty:
        raise UsageError("no stored device-logloss runs match this leaderboard")
    save_figure(draw_devices(table, metric, classes or None), output)
    click.echo(f"wrote {output} ({len(table.labels)} rows)")


@plot.command("fewshot")
@spec_option("A leaderboard spec whose rows are the curves, e.g. leaderboards/fewshot_mixing.toml.")
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
@png_option("fewshot-vs-<n|k>.png", "runs/plots")
@click.pass_context
def fewshot(
    ctx: click.Context,
    spec: Path | None,
    store: Path | None,
    vs: str,
    k_shot: int,
    n_way: int,
    output: Path | None,
    force: bool,
) -> None:
    """Few-shot accuracy vs N or K per leaderboard row, with 95% CIs (Figures 3-5).

    The runs need the sweep metrics, e.g. harness run ... --sweep-n 5,10,15 --sweep-k 1,5,10.
    """
    output = png_path(output, f"fewshot-vs-{vs}.png", plots_folder(store), force)
    board, records = board_and_records(spec, store, protocol="fewshot")
    fixed = k_shot if vs == "n" else n_way
    curves = fewshot_curves(board, records, vs, fixed)
    if not curves:
        shape = f"K = {fixed}" if vs == "n" else f"N = {fixed}"
        raise UsageError(
            f"no stored fewshot runs matching this leaderboard have accuracies at {shape}; "
            "run them with --sweep-n and --sweep-k (e.g. --sweep-n 5,10,15 --sweep-k 1,5,10)"
        )
    save_figure(draw_fewshot(curves, vs, fixed), output)
    click.echo(f"wrote {output} ({len(curves)} curves)")


def find_run(value: str, store: Path) -> Path:
    """A run folder (with ``config.json`` and ``backbone.pt``) named by path or run id."""
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
    try:
        stored = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read {folder / 'config.json'}: {err}") from None
    if not isinstance(stored, dict):
        raise UsageError(f"{folder / 'config.json'} is not a run config")
    return stored


def stored_field(stored: dict[str, Any], section: str, key: str, default: Any = "?") -> Any:
    """``stored[section][key]`` of a config read back from a folder, ``default`` where a
    hand-edited file lacks it or holds a non-table there (a title never fails on it)."""
    table = stored.get(section)
    return table.get(key, default) if isinstance(table, dict) else default


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_config(folder: Path, plugins: Plugins) -> RunConfig:
    """A stored run's run settings, backbone and data set, resolved (method, augmentations and
    protocols are left at their defaults: a t-SNE needs none of them)."""
    stored = stored_config(folder)
    return resolve({k: stored[k] for k in ("run", "backbone", "dataset") if k in stored}, plugins)


def curves_title(folder: Path, events: list[dict[str, Any]]) -> str:
    """``Training curves: <method> (+ augmentations) on <backbone>, <data set>, seed N``,
    what a step point averages, and the run folder's name."""
    stored = stored_config(folder)
    name = lambda section: stored_field(stored, section, "name")  # noqa: E731
    names = stored_field(stored, "aug", "names", [])
    augs = (
        "+".join(map(str, names)) if isinstance(names, list) else str(names)
    ) or "no augmentation"
    seed = stored_field(stored, "run", "seed")
    steps = sorted(
        {e["step"] for e in events if e.get("event") == "step" and is_number(e.get("step"))}
    )
    every = steps[0] if steps else None
    per_step = f"line: mean of every {every} optimizer steps, " if every else ""
    return (
        f"Training curves: {name('method')} ({augs}) on {name('backbone')}, "
        f"{name('dataset')}, seed {seed}; {per_step}dots: epoch means; run {folder.name}"
    )


def run_title(folder: Path) -> str:
    """``<method> on <backbone>`` and the run folder's name, for a panel title."""
    stored = stored_config(folder)
    method = stored_field(stored, "method", "name")
    backbone = stored_field(stored, "backbone", "name")
    return f"{method} on {backbone}\n{folder.name}"


def run_encoder(folder: Path, cfg: RunConfig) -> Encoder:
    """The backbone of a run folder with its trained weights (``backbone.pt``)."""
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


def initial_encoder(cfg: RunConfig) -> Encoder:
    """The encoder a run started from: its seeded initialisation, or its checkpoint."""
    seed_everything(cfg.run.seed)  # the runner builds the backbone right after seeding
    backbone = cfg.backbone.build()
    checkpoint = backbone.checkpoint_source()
    if checkpoint:
        load_backbone_checkpoint(backbone, checkpoint)
        return Encoder(backbone, f"{cfg.backbone.name}\ncheckpoint {Path(checkpoint).name}")
    return Encoder(backbone, f"{cfg.backbone.name}\ninitialisation (seed {cfg.run.seed})")


def before_encoder(value: str | None, cfg: RunConfig, store: Path, plugins: Plugins) -> Encoder:
    """``--before``: a run (folder or id), a checkpoint file, or (None) the run's start."""
    if value is None:
        return initial_encoder(cfg)
    path = Path(value)
    if path.is_file():
        backbone = cfg.backbone.build()
        load_backbone_checkpoint(backbone, path)
        return Encoder(backbone, f"{cfg.backbone.name}\ncheckpoint {path.name}")
    folder = find_run(value, store)
    return run_encoder(folder, run_config(folder, plugins))


@plot.command("tsne")
@run_option("The tuned run: a run folder (runs/<id>) or a run id in the store.")
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
@store_option(RUN_IDS_STORE)
@png_option("tsne.png", "<run folder>/plots")
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
    output: Path | None,
    force: bool,
) -> None:
    """t-SNE of clip embeddings of chosen classes before and after tuning (Figure 6).

    Both encoders embed the same clips of the tuned run's data set; each panel is a
    separate t-SNE of one encoder's embeddings.
    """
    plugins = plugins_from(ctx)
    store = store or default_store(DEFAULT_OUT)
    names = [n.strip() for n in classes.split(",") if n.strip()]
    if not names:
        raise UsageError("--classes needs at least one class name")
    folder = find_run(run_ref, store)
    output = png_path(output, "tsne.png", folder / "plots", force)
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


@plot.command("curves")
@run_option("A run folder, an in-progress folder (runs/.partial/<id>) or a run id in the store.")
@click.option("--metrics", default=None, help="Comma-separated keys to draw (default: all).")
@store_option(RUN_IDS_STORE)
@png_option("curves.png", "<run folder>/plots")
def curves(
    run_ref: str, metrics: str | None, store: Path | None, output: Path | None, force: bool
) -> None:
    """Training curves of one run from its metrics.jsonl: loss, the method's logs, lr,
    throughput; per logged step (line) and per epoch (dots), against the optimizer step."""
    path = Path(run_ref)
    if path.is_dir() and (path / "metrics.jsonl").is_file():
        folder = path
    else:
        folder = find_run(run_ref, store or default_store(DEFAULT_OUT))
    output = png_path(output, "curves.png", folder / "plots", force)
    events = read_metrics(folder)
    keys = curve_keys(events, metrics)
    save_figure(draw_curves(events, keys, curves_title(folder, events)), output)
    click.echo(f"wrote {output} ({len(keys)} curves, {len(events)} events)")
