"""Training the DIR generator of :mod:`harness.nn.dirgen` as a conditional GAN through the
engine's one trainer (``harness dirgen train``).

Two optimizer phases on every batch of responses, each followed by its own backward pass and
Adam step (lr 2e-4, betas 0.5/0.999): ``critic``, the binary cross-entropy of the measured
against the generated responses, then ``generator``, the non-saturating GAN loss on the
updated critic plus ``mse_weight`` times the mean squared error to the measured response.
A seeded ``test_share`` of the responses is held out for the test MSE.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Batch, OptimizerSettings, Phase, StepOutput, Training
from harness.engine.loop import Progress
from harness.engine.trainer import FitHooks, standalone
from harness.nn.dirgen import DirDiscriminator, DirGenerator
from harness.util.errors import DataError, UsageError

__all__ = ["GanStep", "ResponseBatches", "train_generator"]


class ResponseBatches:
    """Batches of the training responses in a fresh order every epoch: ``features`` are the
    conditions ``[B, 12]``, ``wave`` the measured responses ``[B, 1024]``. A last batch of a
    single response is left out (batch norm needs two)."""

    def __init__(self, conditions: Tensor, irs: Tensor, rows: Tensor, batch_size: int) -> None:
        self.conditions, self.irs, self.rows = conditions, irs, rows
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(range(0, len(self.rows) - 1, self.batch_size))

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]:
        """One pass in the order of one ``randperm`` draw of ``generator``."""
        order = self.rows[torch.randperm(len(self.rows), generator=generator)]
        for start in range(skip * self.batch_size, len(order) - 1, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield Batch(
                wave=self.irs[idx],
                label=torch.zeros(len(idx), dtype=torch.long),
                device=torch.full((len(idx),), -1),
                index=idx,
                features=self.conditions[idx],
            )

    def close(self) -> None:
        """Nothing to stop: the responses are in memory."""


class GanStep(nn.Module):
    """The conditional GAN's two phases on a batch; the ``critic`` phase generates the
    responses the ``generator`` phase then scores on the updated critic."""

    PHASES = ("critic", "generator")

    def __init__(self, generator: DirGenerator, critic: DirDiscriminator, mse_weight: float):
        super().__init__()
        self.generator, self.critic = generator, critic
        self.mse_weight = mse_weight
        self._fake: Tensor | None = None

    def forward(self, batch: Batch, phase: str) -> StepOutput:
        conditions, real = batch.features, batch.wave
        if phase == "critic":
            self._fake = self.generator(conditions)
            d_real = self.critic(real, conditions)
            d_fake = self.critic(self._fake.detach(), conditions)
            loss = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            return StepOutput(loss)
        fake, self._fake = self._fake, None
        adv = self.critic(fake, conditions)
        mse = F.mse_loss(fake, real)
        loss = F.binary_cross_entropy_with_logits(adv, torch.ones_like(adv)) + self.mse_weight * mse
        return StepOutput(loss, {"mse": mse.detach()})


def train_generator(
    conditions: Tensor,
    irs: Tensor,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 2e-4,
    mse_weight: float = 100.0,
    test_share: float = 0.1,
    seed: int = 0,
    max_steps: int = 0,
) -> tuple[DirGenerator, dict[str, Any]]:
    """Train the conditional GAN; returns the generator and its history and test MSE."""
    if not 0.0 < test_share < 1.0:
        raise UsageError(f"test share must be in (0, 1), got {test_share}")
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(irs), generator=order)
    n_test = max(1, round(test_share * len(irs)))
    test, train = rows[:n_test], rows[n_test:]
    if len(train) < 2:
        raise DataError(f"only {len(irs)} responses: too few to train the DIR generator")
    generator, critic = DirGenerator(), DirDiscriminator()
    adam = OptimizerSettings("adam", lr, betas=(0.5, 0.999))
    spec = Training(
        name="dirgen",
        model=GanStep(generator, critic, mse_weight),
        data=ResponseBatches(conditions, irs, train, batch_size),
        epochs=epochs,
        batch_size=batch_size,
        phases=[
            Phase("critic", [{"params": list(critic.parameters())}], adam),
            Phase("generator", [{"params": list(generator.parameters())}], adam),
        ],
        max_steps=max_steps,
        seed=seed,
        own_rng=False,
        order=order,
    )
    history: list[dict[str, float]] = []

    def record(progress: Progress) -> None:
        logs = progress.step_logs
        history.append(
            {
                "loss_g": float(logs["loss/generator"]),
                "loss_d": float(logs["loss/critic"]),
                "mse": float(logs["mse"]),
            }
        )

    standalone(torch.device("cpu")).fit(spec, FitHooks(after_step=record))
    with torch.no_grad():
        test_mse = F.mse_loss(generator(conditions[test]), irs[test]).item()
    zero_mse = irs[test].pow(2).mean().item()
    if not math.isfinite(test_mse):
        raise DataError("DIR generator training diverged (test MSE is not finite)")
    return generator, {
        "history": history,
        "test_mse": test_mse,
        "zero_mse": zero_mse,
        "test": len(test),
        "train": len(train),
    }
