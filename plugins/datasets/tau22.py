"""TAU Urban Acoustic Scenes 2022 Mobile, development set, read in its official layout.

Heittola, Mesaros and Virtanen, "Acoustic scene classification in DCASE 2020 challenge:
generalization across devices and low complexity solutions", DCASE 2020 (the 2022 set cuts
the 10 s segments of that data set into 1 s files). The loader reads, from ``dataset.root``::

    meta.csv                             filename  scene_label  identifier  source_label
    evaluation_setup/fold1_train.csv     filename  scene_label
    evaluation_setup/fold1_evaluate.csv  filename  scene_label
    audio/<scene>-<city>-<location>-<segment>-<k>-<device>.wav

All three tables are tab-separated with a header row. ``filename`` is relative to the root
(``audio/airport-barcelona-0-0-0-a.wav``), ``identifier`` names the recording location
(``barcelona-0``), ``source_label`` the device (``a``, ``b``, ``c``, ``s1`` ... ``s6``) and
``k`` the second of the original 10 s segment that the 1 s file holds.

With ``merge_segments`` the training split becomes the 10 s recordings again: the 1 s files
of one scene, city, location, segment and device, concatenated in ``k`` order (the core
reads them through :attr:`harness.api.Clip.segments`); the evaluation split stays 1 s. A
segment with missing seconds is concatenated without them and zero-padded at the end.

``load()`` reads only the tables and lists the audio folders once; the core reads the audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import hookimpl
from harness.api import DataError, Dataset, DataSplits, UsageError, domain_map, non_negative
from harness_plugins.datasets._tau22_layout import load_tau22


class Tau22(Dataset):
    """The TAU Urban Acoustic Scenes 2022 Mobile development set (fold 1)."""

    name = "tau22"
    root_fields = ("root",)
    description = (
        "TAU Urban Acoustic Scenes 2022 Mobile development set, fold 1 (needs dataset.root)"
    )

    @dataclass
    class Config:
        root: str = ""
        """Folder holding meta.csv, evaluation_setup/ and audio/."""
        merge_segments: bool = False
        """Train on the 10 s recordings (1 s files concatenated in order) instead of 1 s files."""
        max_train_clips: int = 0
        """Keep a fixed random subset of this many training clips (0: all)."""
        max_eval_clips: int = 0
        """Keep a fixed random subset of this many evaluation clips (0: all)."""

        domains = domain_map(
            max_train_clips=non_negative("Keep this many training clips (0: all)."),
            max_eval_clips=non_negative("Keep this many evaluation clips (0: all)."),
        )

        def __post_init__(self) -> None:
            for name in ("max_train_clips", "max_eval_clips"):
                if getattr(self, name) < 0:
                    raise ValueError(
                        f"{name} must be 0 (all) or positive, got {getattr(self, name)}"
                    )

    def load(self) -> DataSplits:
        return self.read(train=True)

    def load_without_train(self) -> DataSplits:
        return self.read(train=False)

    def read(self, train: bool) -> DataSplits:
        """The splits (the training split's table and files untouched unless ``train``)."""
        if not self.config.root:
            raise UsageError(
                "dataset.root is required for dataset 'tau22': the folder holding meta.csv, "
                "evaluation_setup/ and audio/ (e.g. --set dataset.root=/data/TAU22)"
            )
        root = Path(self.config.root).expanduser()
        if not root.exists():
            raise DataError(f"dataset.root does not exist: {root}")
        return load_tau22(
            root,
            merge_segments=self.config.merge_segments,
            max_train_clips=self.config.max_train_clips,
            max_eval_clips=self.config.max_eval_clips,
            train=train,
        )


@hookimpl
def register_datasets(register) -> None:
    register(Tau22)
