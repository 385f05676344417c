"""A method whose training steps take a while, so a test can preempt a job mid-training."""

from __future__ import annotations

import time

from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, Encoded, Method, StepOutput


class Sleepy(Method):
    """Cross-entropy that sleeps 0.4 s per training step (tests only)."""

    name = "sleepy"
    description = "Cross-entropy sleeping 0.4 s per step (tests only)."

    def setup(self, backbone: Backbone, task) -> None:
        self.head = backbone.build_head(task.num_classes)

    def logits(self, encoded: Encoded) -> Tensor:
        return self.head(encoded)

    def training_step(self, batch, backbone: Backbone) -> StepOutput:
        time.sleep(0.4)
        logits = self.logits(backbone(batch.features))
        return StepOutput(nn.functional.cross_entropy(logits, batch.label))


@hookimpl
def register_methods(register) -> None:
    register(Sleepy)
