"""What the supervised protocols (linear probe, fine-tuning) share: the labeled splits they
need, their accuracy column and their one-row result table.

Not a plugin.
"""

from __future__ import annotations

from harness.api import PERCENT, Column, DataSplits, Method, Protocol, UsageError

TRAIN_HINT = "{who} trains on labels (fewshot-embedded: dataset.train=labeled, dataset.fold=1-5)"


def require_labeled_splits(splits: DataSplits, who: str) -> None:
    """Refuse, before training, a data set whose train split has no two labeled classes or
    whose eval split has no labeled clip: a supervised protocol (linear probe, fine-tuning)
    could not be fitted or scored."""
    train_classes = {c.label for c in splits.train if c.label >= 0}
    if not train_classes:
        hint = TRAIN_HINT.format(who=who)
        raise UsageError(f"{who}: the 'train' split has no labeled clips; {hint}")
    if len(train_classes) < 2:
        raise UsageError(f"{who}: the train split has fewer than two labeled classes")
    if not any(c.label >= 0 for c in splits.eval):
        raise UsageError(f"{who}: the 'eval' split has no labeled clips")


def accuracy_column(what: str) -> Column:
    """The leaderboard column ``acc`` of a protocol's eval accuracy (stored in %)."""
    return Column("acc", "accuracy", what, True, unit=PERCENT, chance="accuracy")


class LabeledProtocol(Protocol):
    """A protocol fitted on the labeled train clips and scored on the labeled eval clips."""

    def check(self, splits: DataSplits, method: Method) -> None:
        require_labeled_splits(splits, self.name)


def one_row_table(row: dict[str, str]) -> str:
    """A Markdown table of one row, right-aligned, with ``row``'s keys as its header."""
    return "\n".join(
        [
            "| " + " | ".join(row) + " |",
            "|" + "---:|" * len(row),
            "| " + " | ".join(row.values()) + " |",
        ]
    )
