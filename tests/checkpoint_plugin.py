"""The toy backbone with a ``checkpoint`` option, as real backbones have (tests only; load
with ``--plugin`` beside ``tests/toy_plugin.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from harness import hookimpl
from tests.toy_plugin import ToyBackbone


class ToyCheckpointed(ToyBackbone):
    name = "toy-checkpointed"
    description = "The toy backbone, starting from backbone.checkpoint (tests only)."

    @dataclass
    class Config:
        dim: int = 16
        checkpoint: str = ""

    def checkpoint_source(self) -> str:
        return self.config.checkpoint


@hookimpl
def register_backbones(register) -> None:
    register(ToyCheckpointed)
