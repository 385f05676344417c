"""Cross-entropy: the supervised baseline every other method is compared with."""

from __future__ import annotations

from harness import hookimpl
from harness.api import Backbone, Batch, StepOutput
from harness_plugins.methods._common import HeadCrossEntropy


class CrossEntropy(HeadCrossEntropy):
    """Scene classification with the backbone's classification head."""

    name = "ce"
    description = "Cross-entropy on the backbone's classification head (baseline)."

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        loss = self.classification_loss(backbone(batch.features), batch)
        return StepOutput(loss, {"ce": loss.detach()})


@hookimpl
def register_methods(register) -> None:
    register(CrossEntropy)
