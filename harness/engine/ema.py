"""Exponential moving average of a run's weights (``run.ema=DECAY``), through timm's
:class:`timm.utils.ModelEmaV3`: after every optimizer step of the method's stages,
``average = decay * average + (1 - decay) * weights`` for every floating parameter and
buffer (one fused ``lerp`` over all of them on the training device, no host sync)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn


class WeightAverage:
    """The moving average of ``modules``' weights, and a way to evaluate with it."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        self.live = nn.ModuleDict(modules)
        self.decay = decay
        self.ema = ModelEmaV3(self.live, decay=decay)
        self.updates = 0

    def update(self) -> None:
        """One step of the average towards the live weights."""
        self.ema.update(self.live)
        self.updates += 1

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the averaged weights (on the CPU) and the step count."""
        return {
            "weights": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()},
            "updates": self.updates,
        }

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The averaged weights as the run folder keeps them: each module's name -> its
        state dict (on the CPU)."""
        return {
            name: {k: v.detach().cpu() for k, v in module.state_dict().items()}
            for name, module in self.ema.module.items()
        }

    def load(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The live modules hold the averaged weights inside the block, their own after."""
        own = {k: v.detach().clone() for k, v in self.live.state_dict().items()}
        try:
            with torch.no_grad():
                self.live.load_state_dict(self.ema.module.state_dict())
            yield
        finally:
            with torch.no_grad():
                self.live.load_state_dict(own)
