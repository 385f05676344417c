"""``harness shards``: write a data set's split as WebDataset shards, and check them::

harness shards write data/shards/tau22-train --dataset tau22 --backbone passt
harness run ... --set run.data_source=shards --set run.shards=data/shards/tau22-train
harness shards check data/shards/tau22-train
"""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.options import config_and_set_options, plugins_from
from harness.data.shards import read_manifest, verify_checksums
from harness.registry.config import merge, parse_set, read_toml, resolve, set_name
from harness.run.shards import write_run_shards
from harness.util.errors import UsageError


@click.group("shards")
def shards() -> None:
    """Write a data set's split as WebDataset shards for streaming, and check them."""


@shards.command("write")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dataset", help="Data set (default: tau22-embedded).")
@click.option("--backbone", help="Backbone whose sample rate the clips get (default: passt).")
@click.option("--split", default="train", show_default=True, help="train, valid or eval.")
@click.option("--clips-per-shard", type=int, default=1000, show_default=True)
@click.option(
    "--part",
    default="1/1",
    show_default=True,
    metavar="K/N",
    help="Write only part K of N (every N-th shard), e.g. from a SLURM array task; the part "
    "completing the set writes the manifest.",
)
@config_and_set_options(
    "A TOML config file (the run's).",
    "Data and run settings as for harness run, e.g. --set dataset.root=... (repeatable).",
)
@click.pass_context
def write(
    ctx: click.Context,
    out: Path,
    dataset: str | None,
    backbone: str | None,
    split: str,
    clips_per_shard: int,
    part: str,
    config_file: Path | None,
    assignments: tuple[str, ...],
) -> None:
    """Decode SPLIT of the run's data set once into shards under OUT, with a manifest."""
    raw = read_toml(config_file) if config_file else {}
    for section, name in (("dataset", dataset), ("backbone", backbone)):
        if name:
            raw = set_name(raw, section, name)
    cfg = resolve(merge(raw, parse_set(list(assignments))), plugins_from(ctx))
    manifest = write_run_shards(cfg, split, out, clips_per_shard, parse_part(part))
    if manifest is None:
        click.echo(f"wrote part {part} to {out}; the manifest follows when every part is written")
        return
    size = sum(s["bytes"] for s in manifest["shards"])
    click.echo(
        f"wrote {manifest['clips']} clips in {len(manifest['shards'])} shards "
        f"({size / 1e9:.3f} GB) to {out}"
    )
    if split == "train":
        click.echo(f"train from them with --set run.data_source=shards --set run.shards={out}")


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` (1-based) as ``(K - 1, N)``."""
    number, _, total = text.partition("/")
    try:
        k, n = int(number), int(total)
    except ValueError:
        raise UsageError(f"bad value for --part: {text!r} (K/N, e.g. 3/16)") from None
    if not 1 <= k <= n:
        raise UsageError(f"bad value for --part: {text!r} (K/N with 1 <= K <= N)")
    return k - 1, n


@shards.command("check")
@click.argument("location")
def check(location: str) -> None:
    """Check that the shards of LOCATION (a folder or manifest) match their manifest:
    sizes and sha256 checksums."""
    shard_set = read_manifest(location)
    if not shard_set.local:
        raise UsageError(f"{location}: only local shards can be checked")
    verify_checksums(shard_set)
    click.echo(f"{len(shard_set.names)} shards, {shard_set.clips} clips: ok")
