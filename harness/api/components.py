"""The plugin API: base classes for the five plugin kinds and the data they exchange.

The data path reads straight through, each step owned by one kind::

    Dataset (clips) -> Batch on the training device -> waveform Augmentations
    -> Backbone.frontend() -> feature Augmentations -> Backbone (Encoded)
    -> Method (training loss) ... Protocol (evaluation) -> run record

Every component class carries ``name``, ``description`` and a ``Config``
dataclass whose typed fields (with defaults) are its parameters; the core
validates ``--set kind.field=value`` against it and hands the instance to
``__init__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, runtime_checkable
from typing import Protocol as Interface

import torch
from torch import Tensor, nn

from harness.api.columns import Column
from harness.api.pretrained import Pretrained
from harness.util.errors import UsageError

if TYPE_CHECKING:
    from harness.api.settings import RunSettings
    from harness.api.training import Stage, Training, TrainingResult


@dataclass
class NoConfig:
    """Config of a component without parameters."""


class Component:
    """What every component kind declares: its registry name, a one-line description, its
    typed ``Config`` dataclass, and extra lines for ``harness list``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig

    @classmethod
    def describe_extra(cls) -> list[str]:
        """Extra lines ``harness list`` prints under the component (input, sizes, ...)."""
        return []


# -- data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One audio file of a data set."""

    path: Path
    label: int
    """Index into :attr:`DataSplits.classes`; -1 when unlabeled."""
    device: str = ""
    """Recording device (``a``, ``b``, ``s4`` ...); empty when unknown."""
    meta: Mapping[str, str] = field(default_factory=dict)
    segments: tuple[Path, ...] = ()
    """When set, the clip is these files concatenated in order (``path`` is the first)."""
    labels: tuple[int, ...] = ()
    """The clip's label set (indices into :attr:`DataSplits.classes`) in a multi-label data
    set (:attr:`DataSplits.multi_label`; ``label`` is then -1); empty otherwise."""


@dataclass
class DataSplits:
    """What a data set provides: class names and the clips of each split."""

    classes: list[str]
    train: list[Clip]
    eval: list[Clip]
    clip_seconds: float
    """Every clip is cropped or zero-padded to this length."""
    devices: list[str] = field(default_factory=list)
    """All recording devices, in display order (empty when the set has none)."""
    root: Path | None = None
    train_clip_seconds: float | None = None
    """Length of training clips when it differs (e.g. 10 s recordings merged from 1 s segments)."""
    valid: list[Clip] = field(default_factory=list)
    """A published validation split (e.g. Speech Commands' ``validation_list.txt``) for model
    selection and the plateau schedule; empty when the set has none (``run.valid_fraction``
    then holds out part of ``train``)."""
    multi_label: bool = False
    """Whether a clip carries a set of labels (:attr:`Clip.labels`, batches a multi-hot
    :attr:`Batch.target`) instead of one class (:attr:`Clip.label`)."""
    fold_key: str = ""
    """The :attr:`Clip.meta` key naming each clip's published cross-validation fold (ESC-50:
    ``fold``), for protocols that cross-validate over the folds (``train`` and ``eval``
    then hold every fold between them); empty when the set publishes no folds."""

    def split(self, name: str) -> list[Clip]:
        """The clips of split ``name`` (one of :data:`SPLIT_NAMES`)."""
        if name not in SPLIT_NAMES:
            raise UsageError(f"unknown split {name!r} (splits: {', '.join(SPLIT_NAMES)})")
        return {"train": self.train, "valid": self.valid, "eval": self.eval}[name]


SPLIT_NAMES = ("train", "valid", "eval")
"""The splits every :class:`DataSplits` has (``valid`` may be empty)."""

SplitName = Literal["train", "valid", "eval"]
"""The type of a config field naming a split: a misspelled split is an error when the
config is read, before any work (``--set protocol.device-logloss.split=bogus``)."""


def multi_hot(clips: Sequence[Clip], num_classes: int) -> Tensor:
    """``[N, C]`` float32 targets: row ``i`` is 1 at the classes of ``clips[i].labels``."""
    target = torch.zeros(len(clips), num_classes)
    for row, clip in enumerate(clips):
        if clip.labels:
            target[row, list(clip.labels)] = 1.0
    return target


LabelKind = Literal["single", "multi", "either"]
"""What labels a protocol evaluates: one class per clip, a label set, or either."""


@dataclass
class Task:
    """What methods and augmentations may know about the data they train on."""

    classes: list[str]
    devices: list[str]
    sample_rate: int
    time_axis: int = -1
    """Time axis of the backbone's features (-1 for ``[B, 1, F, T]``, -2 for ``[B, 1, T, F]``)."""
    device_classes: list[str] = field(default_factory=list)
    """The training device space :attr:`Batch.device_class` indexes: the recording devices
    (same indices as :attr:`devices`), then the classes waveform augmentations add with
    :meth:`add_device_classes` (e.g. recording device x microphone of a DIR)."""

    def __post_init__(self) -> None:
        if not self.device_classes:
            self.device_classes = list(self.devices)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_device_classes(self) -> int:
        """Size of the extended device space (recording devices plus augmented devices)."""
        return len(self.device_classes)

    def add_device_classes(self, names: Sequence[str]) -> int:
        """Append device classes an augmentation creates; returns the index of the first."""
        first = len(self.device_classes)
        self.device_classes.extend(names)
        return first


@dataclass
class Batch:
    """A training or evaluation batch on the training device."""

    wave: Tensor
    """Waveforms ``[B, T]`` at the backbone's sample rate."""
    label: Tensor
    """Class indices ``[B]``."""
    device: Tensor
    """Recording-device indices ``[B]`` into :attr:`Task.devices` (-1 when unknown)."""
    index: Tensor
    """Clip indices ``[B]`` into the split."""
    target: Tensor | None = None
    """Multi-hot targets ``[B, C]`` (float) of a multi-label data set; None otherwise."""
    features: Tensor | None = None
    """Front-end output, filled by the core after waveform augmentations."""
    device_class: Tensor | None = None
    """Device classes ``[B]`` into :attr:`Task.device_classes` for training objectives (-1 when
    unknown): the recording device, unless a waveform augmentation changed the clip's device
    (:meth:`relabel_devices`). The core starts it as a copy of :attr:`device`; ``device``
    itself always stays the real recording device (evaluation uses only that)."""

    def device_classes(self) -> Tensor:
        """:attr:`device_class`, or the recording devices when no augmentation set it."""
        return self.device if self.device_class is None else self.device_class

    def relabel_devices(self, rows: Tensor, classes: Tensor) -> None:
        """Give clips ``rows`` the device classes ``classes`` (indices into the task's space)."""
        if self.device_class is None:
            self.device_class = self.device.clone()
        self.device_class[rows.to(self.device_class.device)] = classes.to(self.device_class)


@dataclass
class Encoded:
    """A backbone's output."""

    embedding: Tensor
    """Clip embedding ``[B, D]``."""
    tokens: Tensor
    """All output tokens ``[B, N, D]`` (after the final norm)."""


@dataclass
class StepOutput:
    """The loss of one training step and scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)
    """Scalars to log; pass detached tensors, not ``.item()`` (the core reads them in bulk,
    so the step never waits for the GPU)."""


# -- components ---------------------------------------------------------------


class Backbone(Component, nn.Module):
    """An audio encoder and the front-end it expects.

    Subclasses keep their transformer blocks, bottom to top, in ``self.blocks``
    so the core can freeze layers and apply layer-wise learning-rate decay.
    """

    pretrained: ClassVar[Mapping[str, Pretrained]] = {}
    """Published checkpoints by name (``--set backbone.pretrained=NAME``)."""
    sample_rate: ClassVar[int]
    """Sample rate (Hz) of the waveforms fed to :meth:`frontend`."""
    time_axis: ClassVar[int] = -1
    """Time axis of the front-end output: -1 for ``[B, 1, F, T]``, -2 for ``[B, 1, T, F]``."""
    stem_prefixes: ClassVar[tuple[str, ...]] = ()
    """Parameter-name prefixes below the first block (patch and position embeddings)."""
    head_prefixes: ClassVar[tuple[str, ...]] = ()
    """Key prefixes of the classifier in published checkpoints (e.g. ``("head.",)``); the
    checkpoint loader keeps those tensors in ``pretrained_head_state`` for :meth:`build_head`
    when the class count fits, and replaces the head otherwise."""
    embed_dim: int
    blocks: nn.ModuleList
    pretrained_head_state: dict[str, Tensor] | None = None
    """Classifier tensors of the loaded checkpoint (see :attr:`head_prefixes`) for
    :meth:`build_head`; set by the checkpoint loader."""
    load_notes: Sequence[str] = ()
    """What :meth:`adapt_state_dict` changed in the last checkpoint, for the run log."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def checkpoint_source(self) -> str:
        """The weights this backbone starts from: a file, ``pretrained:NAME``, or "" (its own
        initialisation). Backbones with a ``checkpoint`` config field return it."""
        return ""

    def check_checkpoint(self, checkpoint: Any) -> None:
        """Refuse a loaded checkpoint object that does not fit this backbone (e.g. a stored
        ``cfg`` of another size), raising :class:`harness.util.errors.DataError`."""

    def adapt_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map a published checkpoint's key layout onto this module's (default: as is)."""
        return dict(state_dict)

    def frontend(self) -> nn.Module:
        """A module mapping waveforms ``[B, T]`` to the features :meth:`forward` takes."""
        raise NotImplementedError

    def forward(self, features: Tensor) -> Encoded:
        raise NotImplementedError

    def embed(self, features: Tensor) -> Tensor:
        """The clip embedding ``[B, D]``."""
        return self(features).embedding

    def build_head(self, num_classes: int) -> nn.Module:
        """A classification head mapping an :class:`Encoded` to logits ``[B, C]``."""
        return EmbeddingHead(self.embed_dim, num_classes)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def layer_of(self, param_name: str) -> int:
        """0 below the first block, ``i + 1`` inside ``blocks[i]``, ``num_layers + 1`` above."""
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        if param_name.startswith(self.stem_prefixes):
            return 0
        return self.num_layers + 1

    def freeze_all_but_top(self, n: int) -> None:
        """Train only the top ``n`` blocks and what lies above them (``n = 0``: nothing below)."""
        lowest_trained = self.num_layers - n + 1
        for param_name, param in self.named_parameters():
            param.requires_grad = self.layer_of(param_name) >= lowest_trained

    def param_groups(
        self, lr: float, layer_decay: float = 1.0, weight_decay: float = 0.0
    ) -> list[dict]:
        """Optimizer groups with ``lr * layer_decay ** (num_layers + 1 - layer)`` per layer.

        Biases, norms and tokens (1-D or token-shaped parameters) get no weight decay.
        """
        groups: dict[tuple[int, bool], dict] = {}
        top = self.num_layers + 1
        for param_name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            layer = self.layer_of(param_name)
            decay = param.ndim > 1 and not param_name.endswith(("token", "pos_embed"))
            group = groups.setdefault(
                (layer, decay),
                {
                    "params": [],
                    "lr": lr * layer_decay ** (top - layer),
                    "weight_decay": weight_decay if decay else 0.0,
                    "layer": layer,
                },
            )
            group["params"].append(param)
        return [groups[k] for k in sorted(groups)]


@dataclass
class MaskedEncoding:
    """What :meth:`MaskedBackbone.forward_masked` returns."""

    latent: Tensor
    """``[B, 1 + K, D]``: class token then the ``K`` visible patches, after the final norm."""
    mask: Tensor
    """``[B, N]`` in patch order: 1 = hidden, 0 = visible."""
    ids_restore: Tensor
    """``[B, N]``: where each patch sits in ``cat(visible, hidden)``."""
    grid: tuple[int, int]
    """Patches along time and frequency (``N = rows * cols``)."""


@runtime_checkable
class MaskedBackbone(Interface):
    """The masked-encoder contract of masked-autoencoder methods (``mae``, NNCLR's MAE
    warm-up): a :class:`Backbone` that also provides these (AudioMAE does)."""

    patch_size: int
    mae_decoder: tuple[int, int, int]
    """Default decoder width, depth and heads for this size."""
    pos_layout: Literal["official", "time-major"]
    """Order of the sincos position table: AudioMAE's official (frequency rows) or time-major."""

    def forward_masked(self, features: Tensor, mask_ratio: float) -> MaskedEncoding:
        """Encode a random ``1 - mask_ratio`` share of the patches."""
        ...

    def patchify(self, features: Tensor) -> Tensor:
        """``[B, N, patch_size**2]`` patches, in the order of the tokens."""
        ...


class EmbeddingHead(nn.Module):
    """LayerNorm and a linear layer on the clip embedding."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, encoded: Encoded) -> Tensor:
        return self.linear(self.norm(encoded.embedding))


class Method(Component, nn.Module):
    """A training objective. Owns its heads; never the training loop."""

    supervised: ClassVar[bool] = True
    """Whether :meth:`logits` gives class scores that protocols may evaluate."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def setup(self, backbone: Backbone, task: Task) -> None:
        """Build heads once the backbone and the task are known."""

    def training_step(self, batch: Batch, backbone: Backbone) -> StepOutput:
        raise NotImplementedError

    def stages(self, backbone: Backbone, run: RunSettings) -> list[Stage]:
        """Training phases in order; empty (the default): one phase with the run's settings."""
        return []

    def begin_stage(self, stage: Stage) -> None:
        """Called by the core before each stage's optimizer is built (e.g. to switch objective)."""

    def logits(self, encoded: Encoded) -> Tensor:
        """Class scores ``[B, C]`` for evaluation (supervised methods only)."""
        raise NotImplementedError(f"method '{self.name}' trains no classifier")


class Augmentation(Component, nn.Module):
    """A training-time transform of whole batches on the training device.

    A waveform augmentation that changes the device a clip sounds recorded with (e.g. a
    convolution with a microphone's impulse response) may give the clip a new device class:
    it reserves the classes in :meth:`setup` with :meth:`Task.add_device_classes` and sets
    them in :meth:`forward` with :meth:`Batch.relabel_devices`. Device-aware objectives
    (``icl``) read :meth:`Batch.device_classes`; evaluation sees only recording devices.
    """

    stage: ClassVar[str] = "waveform"
    """``"waveform"`` (before the front-end) or ``"features"`` (after it)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def load_files(self) -> None:
        """Read the files this augmentation's options name (weights, a model), before any
        data is generated or decoded, so that a bad file stops the run at start-up."""

    def setup(self, task: Task) -> None:
        """Prepare banks or buffers for the task's sample rate."""

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError


class Dataset(Component):
    """A data set on disk (or generated into a cache folder)."""

    generator_version: ClassVar[int | None] = None
    """For a data set the harness generates: the generator's version, recorded in every run
    (None for data read from disk)."""

    root_fields: ClassVar[tuple[str, ...]] = ()
    """Config fields naming folders the data set reads (not generates): a run whose folder
    does not exist is refused from the plugin manifest, before torch is imported."""

    class_count: ClassVar[int | None] = None
    """The number of classes every configuration of this data set has (None: it depends on
    the files). Lets leaderboards draw a chance line for runs stored before runs recorded
    their class count."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def load(self) -> DataSplits:
        raise NotImplementedError

    def load_without_train(self) -> DataSplits:
        """The splits with ``train`` left empty, listing, checking and opening none of the
        training split's files: a shards run on a node without them takes the training
        split from the shards' manifest. The default loads every split and drops the
        training clips; a data set whose :meth:`load` needs the training files overrides it."""
        splits = self.load()
        splits.train = []
        return splits


@dataclass
class ProtocolResult:
    metrics: dict[str, float]
    table: str = ""
    """A human-readable table printed at the end of ``harness run``."""


class SplitAudio(Interface):
    """The waveforms of one split as the core loads them (:attr:`EvalContext.audio`)."""

    clips: list[Clip]
    wave: Any
    """``[N, T]`` float32 on the CPU, or a lazy source (indexing gives a subset)."""
    labels: Tensor
    devices: Tensor
    """Device indices into the task's device list (-1 when unknown)."""
    sample_rate: int
    targets: Tensor | None
    """Multi-hot targets ``[N, C]`` of a multi-label data set; None otherwise."""

    def __len__(self) -> int: ...

    def join(self, other: SplitAudio) -> SplitAudio:
        """This split's clips followed by ``other``'s (same sample rate and clip length)."""
        ...


@dataclass
class EvalContext:
    """What the core hands a protocol: the trained model, the data, and the core's one
    trainer (:meth:`fit`) and one inference call (:attr:`infer`)."""

    backbone: Backbone
    method: Method
    task: Task
    splits: DataSplits
    torch_device: torch.device
    batch_size: int
    seed: int
    audio: Callable[[str], SplitAudio]
    """``audio(split)`` -> the split's waveforms (:class:`SplitAudio`)."""
    predict: Callable[[str], Tensor]
    """``predict(split)`` -> class probabilities ``[N, C]`` on the CPU."""
    embed: Callable[..., Tensor]
    """``embed(split, cache=True)`` -> clip embeddings ``[N, D]`` of the frozen backbone on
    the CPU, through the on-disk embedding cache (``cache=False``: kept in memory only)."""
    train: Callable[[Training], TrainingResult]
    """The run's trainer (the core sets it; outside a run
    ``harness.engine.trainer.standalone(device).fit``)."""
    infer: Callable[..., Tensor]
    """``infer(forward, data, frontend=None)`` -> ``forward(batch)`` of every batch of ``data``
    (a :class:`SplitAudio`, whose ``frontend`` features fill ``batch.features``, or
    :class:`FeatureData`), rows in data order, float32 on the CPU: the core's one inference
    call (the run's device, precision, processes and evaluation batch size). Put the models
    in evaluation mode first."""
    kept: Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]] = lambda key, compute: (
        compute()
    )
    """``kept(key, compute)`` -> ``compute()``'s result (JSON: numbers, strings, lists,
    tables), kept in the run's in-progress folder under ``key``: a run resumed after a kill
    returns the kept result instead of computing it again (e.g. a finished fold of a
    cross-validation). Outside a run it just computes."""

    def fit(self, spec: Training) -> TrainingResult:
        """Train ``spec.model`` in place through the run's trainer: its device, precision,
        processes and metrics log (build ``spec`` with :func:`TrainingJob`)."""
        return self.train(spec)

    def labeled_audio(self, split: str, who: str) -> SplitAudio:
        """The clips of ``split`` that have a label (an error naming ``who`` when none has)."""
        audio = self.audio(split)
        keep = torch.nonzero(audio.labels >= 0).flatten()
        if len(keep) == 0:
            raise UsageError(f"{who}: the '{split}' split has no labeled clips")
        if len(keep) == len(audio):
            return audio
        return dataclasses.replace(
            audio,
            clips=[audio.clips[i] for i in keep.tolist()],
            wave=audio.wave[keep],
            labels=audio.labels[keep],
            devices=audio.devices[keep],
            targets=None if audio.targets is None else audio.targets[keep],
        )

    def windowed_audio(self, split: str, window: int) -> SplitAudio:
        """The consecutive ``window``-sample windows of every clip of ``split`` as clips of
        their own (a remainder shorter than a window is dropped), each with its clip's
        label and recording device."""
        audio = self.audio(split)
        count = audio.wave.shape[1] // window
        return dataclasses.replace(
            audio,
            clips=[clip for clip in audio.clips for _ in range(count)],
            wave=audio.wave[:, : count * window].reshape(-1, window),
            labels=audio.labels.repeat_interleave(count),
            devices=audio.devices.repeat_interleave(count),
            targets=None if audio.targets is None else audio.targets.repeat_interleave(count, 0),
        )

    def labeled_embeddings(self, split: str, who: str, cache: bool = True) -> tuple[Tensor, Tensor]:
        """Embeddings ``[M, D]`` and labels ``[M]`` of the labeled clips of ``split``.

        ``split`` is ``train``, ``eval`` or ``all`` (both); unlabeled clips (label -1) are
        left out, and a split without labeled clips is not embedded at all. ``cache``: read
        and write the on-disk embedding cache."""
        parts = ["train", "eval"] if split == "all" else [split]
        embeddings, labels = [], []
        for part in parts:
            part_labels = torch.tensor([c.label for c in self.splits.split(part)], dtype=torch.long)
            keep = part_labels >= 0
            if not bool(keep.any()):
                continue
            part_embeddings = self.embed(part, cache=cache)
            if not bool(keep.all()):
                part_embeddings, part_labels = part_embeddings[keep], part_labels[keep]
            embeddings.append(part_embeddings.float())
            labels.append(part_labels)
        if not embeddings:
            raise UsageError(f"{who}: the '{split}' split has no labeled clips")
        if len(embeddings) == 1:
            return embeddings[0], labels[0]
        return torch.cat(embeddings), torch.cat(labels)


class Protocol(Component):
    """An evaluation of a trained model."""

    columns: ClassVar[list[Column]] = []
    """Leaderboard columns (metric keys without the ``<protocol>/`` prefix)."""
    primary: ClassVar[str | None] = None
    """The column that ranks runs (picks the best seed); default: the first column."""
    needs_classifier: ClassVar[bool] = False
    default_dataset: ClassVar[str | None] = None
    """The data set a run uses when this is its first protocol and no data set is named."""
    cli_flags: ClassVar[dict[str, str]] = {}
    """Extra ``harness run`` flags mapped to Config fields, e.g. ``{"--sweep-n": "sweep_n"}``."""
    label_kind: ClassVar[LabelKind] = "single"
    """The labels this protocol evaluates; the core refuses, before training, a data set of
    the other kind (:attr:`DataSplits.multi_label`)."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def check(self, splits: DataSplits, method: Method) -> None:
        """Refuse, before training starts, data or methods this protocol cannot evaluate."""

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        raise NotImplementedError


class Logger(Component):
    """Receives a run's training metrics as they are logged (``run.loggers``).

    Events are flat dicts: ``event`` (``"step"`` every ``run.log_every`` optimizer steps,
    ``"epoch"`` after each epoch), ``stage``, ``stage_name``, ``epoch``, ``step`` (of the
    stage), ``global_step`` (over all stages) and float values: ``loss``, every key of the
    method's :class:`StepOutput` logs, ``lr`` (and ``lr/group<i>``), ``clips_per_s``,
    ``data_wait`` (fraction of the time spent waiting for batches) and, on CUDA,
    ``gpu_mem_gb``. The trainings evaluation protocols run through :meth:`EvalContext.fit`
    log the same events with ``stage = 0`` and ``stage_name`` = the protocol (their
    ``step`` counts their own optimizer steps). Only the main process logs.
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    def open(self, folder: Path, resume_step: int | None) -> None:
        """Start writing into ``folder`` (the in-progress folder; its content becomes part
        of the run folder). ``resume_step``: the global step a resumed run continues after
        (drop anything logged beyond it), None for a fresh run."""

    def log(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def log_results(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Once evaluation is done (before :meth:`close`): the resolved configuration as flat
        hyperparameters (``run.lr``, ``method.name``, ...: numbers, booleans and strings)
        and the run's evaluation metrics (the store's ``metrics``, finite floats)."""

    def close(self) -> None:
        """Flush and release files (called when training ends or fails)."""


KINDS: dict[str, type] = {
    "backbone": Backbone,
    "method": Method,
    "augmentation": Augmentation,
    "dataset": Dataset,
    "protocol": Protocol,
    "logger": Logger,
}
