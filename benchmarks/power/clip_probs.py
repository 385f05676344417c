"""A study-only protocol: save every evaluation clip's class probabilities.

Loaded with ``harness --plugin benchmarks/power/clip_probs.py``; ``study.py`` uses the saved
probabilities to split the seed spread of Table 3 into what training and what the choice of
evaluation clips contribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness import hookimpl
from harness.api import EvalContext, Protocol, ProtocolResult


class ClipProbabilities(Protocol):
    """Writes ``<folder>/<tag>.npz``: probabilities, labels, devices and file names."""

    name = "clip-probs"
    description = "Save each evaluation clip's class probabilities (variance study)."
    needs_classifier = True
    columns: ClassVar[list] = []
    primary = "clips"

    @dataclass
    class Config:
        folder: str = "clip-probs"
        tag: str = "run"

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        probs = ctx.predict("eval").numpy().astype(np.float64)
        audio = ctx.audio("eval")
        folder = Path(self.config.folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / f"{self.config.tag}.npz",
            probs=probs,
            labels=audio.labels.numpy(),
            devices=np.array([c.device for c in audio.clips]),
            names=np.array([c.path.name for c in audio.clips]),
        )
        return ProtocolResult({"clips": float(len(probs))}, f"saved {len(probs)} clips")


@hookimpl
def register_protocols(register) -> None:
    register(ClipProbabilities)
