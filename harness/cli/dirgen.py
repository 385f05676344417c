"""``harness dirgen train``: train the microphone-trait DIR generator of seed 000, Section 5.3
(:mod:`harness.nn.dirgen`), store it and its test MSE::

    harness dirgen train --epochs 20 --out runs/dirgen
    harness run ... --aug dirgen --set aug.dirgen.model=runs/dirgen/dirgen.pt
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from harness.nn.dirgen import LENGTH, dataset, read_traits, save_generator
from harness.nn.impulse import IRBank
from harness.nn.impulse.multidir import MICROPHONE_TYPES, MultiDirCollection, MultiDirConfig
from harness.run.dirgen import train_generator
from harness.util.errors import UsageError


def embedded_traits() -> dict[str, tuple[str, str, str]]:
    """(pattern, transducer, diaphragm) of each microphone of the embedded bank."""
    return {
        f"Syn{i + 1:02d}-{pattern}-{transducer}": (pattern, transducer, diaphragm)
        for i, (pattern, transducer, diaphragm) in enumerate(MICROPHONE_TYPES)
    }


def load_bank(path: str, sample_rate: int) -> IRBank:
    """The embedded Multi DIR bank, or a collection by path, at ``sample_rate``, 1024 samples."""
    return MultiDirCollection(MultiDirConfig(path=path, length=LENGTH)).load_bank(sample_rate)


# -- the command ------------------------------------------------------------------------------


@click.group("dirgen")
def dirgen() -> None:
    """Train and inspect the microphone-trait DIR generator (seed 000, Section 5.3)."""


@dirgen.command("train")
@click.option("--path", default="", help="IR collection folder or .sofa (empty: embedded bank).")
@click.option(
    "--traits",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV microphone,pattern,transducer,diaphragm (needed with --path).",
)
@click.option("--sample-rate", type=int, default=16000, show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--mse-weight", type=float, default=100.0, show_default=True)
@click.option("--test-share", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-steps", type=int, default=0, help="Stop after this many steps (0: all).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/dirgen"),
    show_default=True,
)
def train(
    path: str,
    traits: Path | None,
    sample_rate: int,
    epochs: int,
    batch_size: int,
    lr: float,
    mse_weight: float,
    test_share: float,
    seed: int,
    max_steps: int,
    out: Path,
) -> None:
    """Train the generator; writes OUT/dirgen.pt and OUT/metrics.json (with the test MSE)."""
    if epochs < 1 or batch_size < 2:
        raise UsageError("--epochs must be >= 1 and --batch-size >= 2")
    if path and traits is None:
        raise UsageError("--path needs --traits CSV (microphone,pattern,transducer,diaphragm)")
    bank = load_bank(path, sample_rate)
    conditions, irs = dataset(bank, read_traits(traits) if traits else embedded_traits())
    generator, info = train_generator(
        conditions, irs, epochs, batch_size, lr, mse_weight, test_share, seed, max_steps
    )
    save_generator(out / "dirgen.pt", generator, sample_rate, info)
    history = info["history"]
    metrics = {
        "test_mse": info["test_mse"],
        "zero_response_test_mse": info["zero_mse"],
        "train_responses": info["train"],
        "test_responses": info["test"],
        "steps": len(history),
        "final_train_mse": history[-1]["mse"] if history else float("nan"),
        "source": path or "embedded",
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    click.echo(
        f"trained on {info['train']} responses, test MSE {info['test_mse']:.5f} on "
        f"{info['test']} (an all-zero response: {info['zero_mse']:.5f}); wrote {out / 'dirgen.pt'}"
    )
