"""The base class of augmentations that convolve clips with a bank of impulse responses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from harness.api import Augmentation, Batch, Task
from harness.api.domains import domain_map, non_negative, unit
from harness.nn.impulse.bank import IRBank, default_meta, list_ir_files, load_ir_files, load_sofa
from harness.nn.impulse.dsp import (
    PRE_ROLL_SECONDS,
    Align,
    Normalize,
    Window,
    convolve,
    kaiser_truncate,
    normalize_irs,
)
from harness.util.errors import DataError, UsageError
from harness.util.names import unknown_name_message

DeviceClass = Literal["microphone", "response", "keep"]

# -- the augmentation base class ------------------------------------------------


@dataclass
class IRConfig:
    """Options shared by every impulse-response augmentation."""

    path: str = ""
    """A folder of IR files or a ``.sofa`` file; empty: the embedded synthetic bank."""
    p: float = 0.6
    """Probability that an eligible training clip is convolved."""
    devices: list[str] = field(default_factory=lambda: ["a"])
    """Recording devices whose clips are eligible (comma list), or ``all``."""
    microphones: list[str] = field(default_factory=list)
    """Use only these microphones (empty: all)."""
    length: int = 0
    """Truncate to this many samples with a Kaiser window (0: keep full length)."""
    beta: float = 2.0
    """Kaiser window beta."""
    window: Window = "half"
    """``half``: right half of a Kaiser window from the onset; ``full``: symmetric window."""
    align: Align = "onset"
    """Where the truncated segment starts: ``onset`` (0.5 ms before it) or ``start`` of the file."""
    normalize: Normalize = "energy"
    """Per-response scaling after truncation: ``energy`` (unit L2 norm), ``peak`` or ``none``."""
    device_class: DeviceClass = "microphone"
    """The device class a convolved clip gets (see :meth:`ImpulseResponseAugmentation.setup`):
    ``microphone`` (recording device x microphone), ``response`` (recording device x impulse
    response) or ``keep`` (its recording device's class)."""

    domains = domain_map(
        p=unit("Probability that an eligible training clip is convolved."),
        length=non_negative("Truncate to this many samples with a Kaiser window (0: full length)."),
        beta=non_negative("Kaiser window beta."),
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if self.length < 0:
            raise ValueError(f"length must be 0 (full) or positive, got {self.length}")
        if self.beta < 0:
            raise ValueError(f"beta must be non-negative, got {self.beta}")
        self.devices = [d.strip() for d in self.devices if d.strip()]
        if not self.devices:
            raise ValueError("devices must name at least one device, or 'all'")


class ImpulseResponseAugmentation(Augmentation):
    """Convolve randomly chosen training clips with randomly drawn impulse responses.

    Subclasses set ``name``/``description``, implement :meth:`embedded_bank`
    and, when their collection has a layout, :meth:`describe_file` (metadata
    parsed from a file name) and :meth:`keep` (extra filters).

    Eligible clips are those recorded by ``devices`` (``"all"``: every clip);
    each is convolved with probability ``p`` with a response drawn uniformly
    from the bank. Other clips pass through unchanged. Randomness comes from
    torch's global generator, which the core seeds. A convolved clip gets a new
    device class in the batch (see :meth:`setup`).
    """

    stage: ClassVar[str] = "waveform"
    Config: ClassVar[type] = IRConfig
    recursive: ClassVar[bool] = False
    """Whether a folder path is searched recursively."""

    irs: Tensor
    device_ids: Tensor
    device_slot: Tensor
    ir_group: Tensor

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.bank: IRBank | None = None
        self.all_devices = True
        self.first_class = -1
        """First index of this augmentation's device classes in the task's space (-1: none)."""
        self.groups = 0

    # -- what subclasses provide --

    def embedded_bank(self, sample_rate: int) -> IRBank:
        """The synthetic bank at ``sample_rate``, already truncated as configured."""
        raise NotImplementedError

    def describe_file(self, path: Path, root: Path) -> dict[str, Any]:
        """Metadata of one file of a folder collection."""
        return default_meta(path)

    def keep(self, meta: Mapping[str, Any]) -> bool:
        """Whether a response passes the configured filters."""
        wanted = self.config.microphones
        return not wanted or meta.get("microphone") in wanted

    # -- loading --

    def load_bank(self, sample_rate: int) -> IRBank:
        """The filtered, truncated and normalized bank at ``sample_rate``."""
        cfg = self.config
        if not cfg.path:
            bank = self.filtered(self.embedded_bank(sample_rate), "the embedded bank")
        else:
            bank = self.read_path(Path(cfg.path).expanduser(), sample_rate)
        return IRBank(
            normalize_irs(bank.irs, cfg.normalize, bank.meta), bank.sample_rate, bank.meta
        )

    def read_path(self, path: Path, sample_rate: int) -> IRBank:
        if path.suffix.lower() == ".sofa":
            bank = self.filtered(load_sofa(path, sample_rate), str(path))
            return bank.map(lambda irs: self.truncate(irs, sample_rate))
        if path.is_file():
            raise DataError(
                f"aug.{self.name}.path {path} is a file; expected a folder of impulse-response "
                "files or a .sofa file"
            )
        files = list_ir_files(path, recursive=self.recursive)
        metas = [self.describe_file(f, path) for f in files]
        self.check_filters(metas, str(path))
        chosen = [i for i, m in enumerate(metas) if self.keep(m)]
        if not chosen:
            raise UsageError(f"the aug.{self.name} filters select no impulse responses from {path}")
        return load_ir_files(
            [files[i] for i in chosen],
            sample_rate,
            [metas[i] for i in chosen],
            transform=lambda irs: self.truncate(irs, sample_rate),
        )

    def filtered(self, bank: IRBank, where: str) -> IRBank:
        """The responses of ``bank`` that pass the filters (none is a :class:`UsageError`)."""
        self.check_filters(bank.meta, where)
        kept = bank.where(self.keep)
        if len(kept) == 0:
            raise UsageError(
                f"the aug.{self.name} filters select no impulse responses from {where}"
            )
        return kept

    def check_filters(self, metas: Sequence[Mapping[str, Any]], where: str) -> None:
        """Reject filter values the collection does not have, suggesting close ones."""
        self.check_values("microphones", self.config.microphones, metas, "microphone", where)

    def check_values(
        self,
        option: str,
        wanted: Iterable[Any],
        metas: Sequence[Mapping[str, Any]],
        key: str,
        where: str,
    ) -> None:
        available = {m.get(key) for m in metas} - {None}
        names = [str(v) for v in sorted(available)]
        for value in wanted:
            if value not in available:
                message = unknown_name_message(key, str(value), names)
                raise UsageError(f"aug.{self.name}.{option}: {message} (in {where})")

    def truncate(self, irs: Tensor, sample_rate: int) -> Tensor:
        """Kaiser truncation as configured (a no-op for ``length = 0``); pre-roll 0.5 ms."""
        cfg = self.config
        if cfg.length == 0:
            return irs
        pre = round(PRE_ROLL_SECONDS * sample_rate)
        return kaiser_truncate(irs, cfg.length, cfg.beta, cfg.window, cfg.align, pre)

    # -- the augmentation --

    def setup(self, task: Task) -> None:
        """Load the bank, resolve the eligible devices and reserve the new device classes.

        A convolved clip sounds as if recorded by its device followed by the response's
        microphone, so it gets the device class (recording device, microphone) by default, one
        of ``len(eligible devices) x len(microphones)`` classes appended to the task's device
        space. That is the paper's reading of a device class (Schmidt & Peters, Sections 3 and
        5.3): "the device of an acoustic scene sample is altered with an additional DIR", the
        augmentation "leads to more device classes" that "share some device characteristics
        with neighbouring classes", and the IR generator of Section 5.3 is conditioned on the
        microphone's characteristics plus incidence angle and distance, with "new synthetic
        device classes" named apart from angles and distances, so one microphone's responses
        at all angles and distances are one device. ``device_class = "response"`` makes every
        impulse response its own class instead; for the Vintage set (one response per
        microphone) both coincide. ``keep`` leaves the recording device's class (no new
        classes). Clips of unknown recording device stay unknown (-1).
        """
        self.bank = self.load_bank(task.sample_rate)
        self.register_buffer("irs", self.bank.irs, persistent=False)
        self.all_devices, ids = self.resolve_devices(task.devices)
        self.register_buffer("device_ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.setup_device_classes(task, range(len(task.devices)) if self.all_devices else ids)

    def setup_device_classes(self, task: Task, bases: Sequence[int]) -> None:
        """Reserve ``len(bases) x groups`` device classes; buffers map (device, IR) to one."""
        self.first_class = -1
        self.groups = 0
        slot = torch.full((len(task.devices),), -1, dtype=torch.long)
        group = torch.zeros(len(self.bank), dtype=torch.long)
        if self.config.device_class != "keep" and bases:
            names, group = ir_groups(self.bank.meta, self.config.device_class)
            slot[list(bases)] = torch.arange(len(bases))
            self.groups = len(names)
            self.first_class = task.add_device_classes(
                [f"{task.devices[d]}*{name}" for d in bases for name in names]
            )
        self.register_buffer("device_slot", slot, persistent=False)
        self.register_buffer("ir_group", group, persistent=False)

    def relabel(self, batch: Batch, picked: Tensor, which: Tensor) -> None:
        """Give the convolved clips ``picked`` the classes of (their device, response ``which``)."""
        if self.first_class < 0:
            return
        device = batch.device.to(self.device_slot.device)[picked.to(self.device_slot.device)]
        slot = torch.where(device >= 0, self.device_slot[device.clamp_min(0)], -1)
        classes = self.first_class + slot * self.groups + self.ir_group[which]
        batch.relabel_devices(picked, torch.where(slot >= 0, classes, -1))

    def resolve_devices(self, task_devices: Sequence[str]) -> tuple[bool, list[int]]:
        wanted = self.config.devices
        if [w.lower() for w in wanted] == ["all"]:
            return True, []
        ids = []
        for name in wanted:
            if name not in task_devices:
                message = unknown_name_message("device", name, task_devices)
                raise UsageError(
                    f"aug.{self.name}.devices: {message}; set aug.{self.name}.devices=all "
                    "to convolve clips of every device"
                )
            ids.append(list(task_devices).index(name))
        return False, ids

    def chosen(self, batch: Batch) -> Tensor:
        """Boolean mask ``[B]`` of the clips to convolve."""
        device = batch.device.to(self.irs.device)
        eligible = (
            torch.ones_like(device, dtype=torch.bool)
            if self.all_devices
            else torch.isin(device, self.device_ids)
        )
        draw = torch.rand(device.shape[0], device=device.device)
        return eligible & (draw < self.config.p)

    def forward(self, x: Tensor, batch: Batch) -> Tensor:
        if self.bank is None:
            raise RuntimeError(f"augmentation '{self.name}' used before setup()")
        picked = self.chosen(batch).nonzero().flatten().to(x.device)
        if picked.numel() == 0:
            return x
        which = torch.randint(len(self.bank), (picked.numel(),), device=self.irs.device)
        convolved = convolve(x.index_select(0, picked), self.irs[which].to(x.device))
        self.relabel(batch, picked, which)
        return x.index_copy(0, picked, convolved.to(x.dtype))


def ir_groups(meta: Sequence[Mapping[str, Any]], mode: str) -> tuple[list[str], Tensor]:
    """Group names and each response's group: one per microphone, or one per response."""
    if mode == "response":
        names = [response_name(m, i) for i, m in enumerate(meta)]
        return names, torch.arange(len(meta))
    keys = [str(m.get("microphone") or f"ir{i}") for i, m in enumerate(meta)]
    names = list(dict.fromkeys(keys))
    index = {name: k for k, name in enumerate(names)}
    return names, torch.tensor([index[k] for k in keys], dtype=torch.long)


def response_name(meta: Mapping[str, Any], i: int) -> str:
    """``microphone@angle/distance`` (what is known of it), else ``ir<i>``."""
    name = str(meta.get("microphone") or f"ir{i}")
    if meta.get("angle") is not None:
        name += f"@{meta['angle']:g}deg"
    if meta.get("distance") is not None:
        name += f"/{meta['distance']:g}cm"
    return name
