"""Linear probe: logistic regression on frozen clip embeddings.

The encoder stays frozen; clip embeddings of the labeled train split (shared
with the few-shot protocol through the on-disk embedding cache) are
standardised with the train statistics and fit by multinomial logistic
regression (scikit-learn, L-BFGS); the score is the accuracy (%) on the eval
split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness import hookimpl
from harness.api import (
    Column,
    EvalContext,
    ProtocolResult,
    UsageError,
    at_least,
    domain_map,
    positive,
)
from harness_plugins.protocols._common import (
    TRAIN_HINT,
    LabeledProtocol,
    accuracy_column,
    one_row_table,
)


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    c: float,
    max_iter: int,
) -> tuple[float, float]:
    """(train accuracy, eval accuracy) of a standardised logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression  # heavy import, only when probing
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(scaler.transform(train_x), train_y)
    train_acc = float(np.mean(model.predict(scaler.transform(train_x)) == train_y))
    eval_acc = float(np.mean(model.predict(scaler.transform(eval_x)) == eval_y))
    return train_acc, eval_acc


class Linear(LabeledProtocol):
    name = "linear"
    description = (
        "Linear probe: logistic regression on frozen embeddings of the train split, "
        "accuracy (%) on the eval split."
    )
    columns: ClassVar[list[Column]] = [accuracy_column("linear probe")]

    @dataclass
    class Config:
        c: float = 1.0
        """Inverse L2 regularisation strength of the logistic regression."""
        max_iter: int = 1000
        cache: bool = True
        """Keep embeddings on disk, keyed by the backbone's weights and the clips."""

        domains = domain_map(
            c=positive("Inverse L2 regularisation strength of the logistic regression."),
            max_iter=at_least(1, "Most solver iterations."),
        )

        def __post_init__(self) -> None:
            if self.c <= 0:
                raise ValueError(f"c must be positive, got {self.c}")
            if self.max_iter < 1:
                raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        cfg = self.config
        try:
            train_x, train_y = ctx.labeled_embeddings("train", self.name, cfg.cache)
        except UsageError as err:
            raise UsageError(f"{err}; {TRAIN_HINT.format(who=self.name)}") from None
        eval_x, eval_y = ctx.labeled_embeddings("eval", self.name, cfg.cache)
        if len(set(train_y.tolist())) < 2:
            raise UsageError(f"{self.name}: the train split has fewer than two labeled classes")
        train_acc, eval_acc = probe_accuracy(
            train_x.double().numpy(),
            train_y.numpy(),
            eval_x.double().numpy(),
            eval_y.numpy(),
            cfg.c,
            cfg.max_iter,
        )
        metrics = {"acc": 100 * eval_acc, "train_acc": 100 * train_acc}
        table = one_row_table(
            {
                "train clips": f"{len(train_y)}",
                "eval clips": f"{len(eval_y)}",
                "train acc (%)": f"{100 * train_acc:.2f}",
                "eval acc (%)": f"{100 * eval_acc:.2f}",
            }
        )
        return ProtocolResult(metrics, table)


@hookimpl
def register_protocols(register) -> None:
    register(Linear)
