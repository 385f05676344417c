"""Turning a data set's clips into waveform tensors and batches on the training device.

A split is a :class:`ClipAudio`: its clips, labels and device indices, and a
:class:`WaveSource` that yields one clip's waveform at a time (decoded from its
files, read from the decoded-audio cache, or taken from an in-memory tensor).
:func:`batches` reads a split through a ``torch.utils.data.DataLoader``: worker
processes decode, resample, crop and pad single clips; the main process moves
whole batches to the training device, where augmentations and the front-end run.
Nothing here holds a whole split in memory unless the source is a tensor.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import signal
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from harness.api import Batch, Clip, FeatureData, Sampling, multi_hot
from harness.data.audio import fit_length, read_audio, resample
from harness.util.errors import DataError, HarnessError, UsageError
from harness.util.progress import progress

try:  # the two halves of torchaudio.functional.resample
    from torchaudio.functional.functional import _apply_sinc_resample_kernel as _apply_kernel
    from torchaudio.functional.functional import _get_sinc_resample_kernel as _sinc_kernel
except ImportError:  # pragma: no cover - another torchaudio layout: rebuild the kernel per clip
    _sinc_kernel = _apply_kernel = None

RESAMPLE_CHUNK = 256
MAX_AUTO_WORKERS = 8
PREFETCH_FACTOR = 4


class WaveSource:
    """Waveforms of a split, one clip at a time (``[T]`` float32 at one sample rate)."""

    length: int
    """Samples per clip."""
    clip_seconds: float | None = None
    """Seconds each clip was cut to when read from its files; None where the source does not
    know it (waveforms already in memory, subsets)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def subset(self, rows: np.ndarray) -> WaveSource:
        """The clips ``rows`` (indices into this source), in that order."""
        return SubsetWaves(self, rows)

    def __getitem__(self, index) -> WaveSource:
        """``source[mask_or_indices]``: a lazy subset, as ``tensor[keep]`` would be."""
        rows = np.arange(len(self))[np.asarray(index.cpu() if isinstance(index, Tensor) else index)]
        return self.subset(np.atleast_1d(rows))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.length)


class TensorWaves(WaveSource):
    """Waveforms already in memory (``[N, T]``)."""

    def __init__(self, wave: Tensor) -> None:
        self.wave = wave
        self.length = int(wave.shape[1])

    def __len__(self) -> int:
        return int(self.wave.shape[0])

    def read(self, i: int) -> np.ndarray:
        return self.wave[i].numpy()


class SubsetWaves(WaveSource):
    def __init__(self, parent: WaveSource, rows: np.ndarray) -> None:
        self.parent = parent
        self.rows = np.asarray(rows, dtype=np.int64)
        self.length = parent.length

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> np.ndarray:
        return self.parent.read(int(self.rows[i]))


class ConcatWaves(WaveSource):
    """The clips of several sources of one clip length, one source after the other."""

    def __init__(self, parts: list[WaveSource]) -> None:
        lengths = {part.length for part in parts}
        if len(lengths) != 1:
            raise UsageError(f"cannot join waveforms of different lengths: {sorted(lengths)}")
        self.parts = parts
        self.length = lengths.pop()
        self.starts = np.cumsum([0] + [len(part) for part in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} of {len(self)}")
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[part].read(i - int(self.starts[part]))


class DecodedWaves(WaveSource):
    """Each clip read from its files, cropped or padded and resampled on demand.

    The same arithmetic as :func:`load_clips`: crop or pad at the file's rate to
    ``clip_seconds``, resample, then crop or zero-fill to the clip length.
    """

    def __init__(self, clips: list[Clip], sample_rate: int, clip_seconds: float) -> None:
        self.clips = clips
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.length = round(clip_seconds * sample_rate)

    def __len__(self) -> int:
        return len(self.clips)

    def read(self, i: int) -> np.ndarray:
        samples, rate = read_clip(self.clips[i])
        samples = fit_length(samples, round(self.clip_seconds * rate))
        wave = torch.from_numpy(np.ascontiguousarray(samples))[None]
        if rate != self.sample_rate:
            wave = self.resample(wave, rate)
        return fit_length(wave[0].numpy(), self.length).astype(np.float32, copy=False)

    def resample(self, wave: Tensor, rate: int) -> Tensor:
        """:func:`torchaudio.functional.resample` with its kernel computed once per process
        and rate (the function rebuilds it on every call); the same values."""
        if _sinc_kernel is None:
            return resample(wave, rate, self.sample_rate)
        kernels = self.__dict__.setdefault("_kernels", {})
        gcd = math.gcd(rate, self.sample_rate)
        if rate not in kernels:
            kernels[rate] = _sinc_kernel(rate, self.sample_rate, gcd, dtype=wave.dtype)
        kernel, width = kernels[rate]
        return _apply_kernel(wave, rate, self.sample_rate, gcd, kernel, width)


@dataclass
class ClipAudio:
    """The waveforms of one split, all of one length, at one sample rate."""

    clips: list[Clip]
    wave: Tensor | WaveSource
    """``[N, T]`` float32 on the CPU, or a lazy :class:`WaveSource` (indexing gives a subset)."""
    labels: Tensor
    devices: Tensor
    """Device indices into the task's device list (-1 when unknown)."""
    sample_rate: int
    targets: Tensor | None = None
    """Multi-hot targets ``[N, C]`` of a multi-label data set; None otherwise."""

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def source(self) -> WaveSource:
        return self.wave if isinstance(self.wave, WaveSource) else TensorWaves(self.wave)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.wave, Tensor | TensorWaves)

    def join(self, other: ClipAudio) -> ClipAudio:
        """This split's clips followed by ``other``'s, at one sample rate and clip length
        (in memory when both are, else read lazily from both sources)."""
        if other.sample_rate != self.sample_rate:
            raise UsageError(
                f"cannot join audio at {self.sample_rate} Hz and {other.sample_rate} Hz"
            )
        if (self.targets is None) != (other.targets is None):
            raise UsageError("cannot join multi-label audio with single-label audio")
        if isinstance(self.wave, Tensor) and isinstance(other.wave, Tensor):
            if self.wave.shape[1] != other.wave.shape[1]:
                raise UsageError(
                    f"cannot join waveforms of different lengths: "
                    f"{self.wave.shape[1]} and {other.wave.shape[1]}"
                )
            wave: Tensor | WaveSource = torch.cat([self.wave, other.wave])
        else:
            wave = ConcatWaves([self.source, other.source])
        return ClipAudio(
            clips=[*self.clips, *other.clips],
            wave=wave,
            labels=torch.cat([self.labels, other.labels]),
            devices=torch.cat([self.devices, other.devices]),
            sample_rate=self.sample_rate,
            targets=None if self.targets is None else torch.cat([self.targets, other.targets]),
        )

    def materialize(self) -> Tensor:
        """All waveforms as one ``[N, T]`` tensor (only for small splits)."""
        if isinstance(self.wave, Tensor):
            return self.wave
        return torch.from_numpy(np.stack([self.wave.read(i) for i in range(len(self.wave))]))


def split_audio(
    clips: list[Clip],
    sample_rate: int,
    clip_seconds: float,
    devices: list[str],
    multi_label_classes: int = 0,
) -> ClipAudio:
    """A split whose clips are decoded lazily (in the DataLoader's workers);
    ``multi_label_classes`` > 0: the clips carry label sets over that many classes."""
    if not clips:
        raise DataError("the split has no clips")
    return ClipAudio(
        clips=clips,
        wave=DecodedWaves(clips, sample_rate, clip_seconds),
        labels=torch.tensor([c.label for c in clips], dtype=torch.long),
        devices=device_indices(clips, devices),
        sample_rate=sample_rate,
        targets=multi_hot(clips, multi_label_classes) if multi_label_classes else None,
    )


def device_indices(clips: list[Clip], devices: list[str]) -> Tensor:
    device_index = {d: k for k, d in enumerate(devices)}
    return torch.tensor([device_index.get(c.device, -1) for c in clips], dtype=torch.long)


def load_clips(
    clips: list[Clip],
    sample_rate: int,
    clip_seconds: float,
    devices: list[str],
    desc: str = "loading audio",
) -> ClipAudio:
    """Read every clip into memory, resample it once to ``sample_rate`` and crop or pad it.

    The in-memory path (small splits, tests, plots); runs use :func:`split_audio`.
    """
    if not clips:
        raise DataError(f"{desc}: the split has no clips")
    by_rate: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for i, clip in enumerate(progress(clips, desc=desc, unit="clip")):
        samples, rate = read_clip(clip)
        by_rate[rate].append((i, fit_length(samples, round(clip_seconds * rate))))
    length = round(clip_seconds * sample_rate)
    wave = torch.zeros(len(clips), length)
    for rate, items in by_rate.items():
        for start in range(0, len(items), RESAMPLE_CHUNK):
            chunk = items[start : start + RESAMPLE_CHUNK]
            stacked = torch.from_numpy(np.stack([samples for _, samples in chunk]))
            resampled = resample(stacked, rate, sample_rate)
            n = min(length, resampled.shape[1])
            wave[[i for i, _ in chunk], :n] = resampled[:, :n]
    return ClipAudio(
        clips=clips,
        wave=wave,
        labels=torch.tensor([c.label for c in clips], dtype=torch.long),
        devices=device_indices(clips, devices),
        sample_rate=sample_rate,
    )


def read_clip(clip: Clip) -> tuple[np.ndarray, int]:
    """A clip's samples; segmented clips are their files concatenated (one sample rate)."""
    if not clip.segments:
        return read_audio(clip.path)
    parts = [read_audio(path) for path in clip.segments]
    rates = {rate for _, rate in parts}
    if len(rates) != 1:
        raise DataError(f"segments of {clip.path} have different sample rates: {sorted(rates)}")
    return np.concatenate([samples for samples, _ in parts]), rates.pop()


# -- the DataLoader path ------------------------------------------------------


JOB_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)
"""Signals a cluster sends a whole job step (preemption: SIGTERM, then submitit's USR2)."""


def ignore_job_signals(worker_id: int) -> None:
    """A DataLoader worker leaves the cluster's signals to the main process, which
    checkpoints and requeues; killed by them, it would fail the run instead (workers end
    with the main process)."""
    for number in JOB_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


_open_loaders: weakref.WeakSet[Loader] = weakref.WeakSet()


@atexit.register  # registered after torch's and multiprocessing's handlers, so it runs first
def close_open_loaders() -> None:
    """Stop data workers still alive at exit: they ignore SIGTERM, the signal
    multiprocessing's own exit handler stops daemonic children with (before waiting for them
    without a timeout). Open loaders are closed; a worker whose loader is gone but whose pass
    is still referenced (e.g. by a traceback) is killed like multiprocessing would."""
    if hasattr(signal, "SIGCHLD"):  # torch's handler would raise for the workers stopped here
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for loader in list(_open_loaders):
        loader.close()
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)


def stop_pass(iterator: object) -> None:
    """Stop a DataLoader pass's worker processes: torch's sentinel path (they leave their
    loop), then SIGKILL for any left (e.g. during interpreter exit, when torch's path no-ops)."""
    workers = list(getattr(iterator, "_workers", ()))
    if hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    for worker in workers:
        if worker.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
            worker.join(timeout=5)


class ClipDataset(TorchDataset):
    """Map-style dataset: item ``i`` is ``(waveform [T] float32, i)``."""

    def __init__(self, source: WaveSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.from_numpy(np.ascontiguousarray(self.source.read(int(i)))), int(i)


def label_weights(labels: Tensor, targets: Tensor | None = None) -> Tensor:
    """Each clip's sampling weight: the sum over its labels of 1 / (clips carrying that
    label), float64 ``[N]`` (AudioMAE's ``gen_weight.py`` without its 1000 / (count + 0.01)
    scale and offset). ``targets``: multi-hot ``[N, C]`` label sets; else single ``labels``
    (-1: unlabeled). A clip without labels weighs 0 and is never drawn."""
    if targets is None:
        labeled = labels >= 0
        classes = int(labels.max()) + 1 if bool(labeled.any()) else 1
        targets = torch.zeros(len(labels), classes, dtype=torch.float64)
        rows = torch.arange(len(labels))[labeled]
        targets[rows, labels[labeled]] = 1.0
    present = targets.to(torch.float64) > 0
    counts = present.sum(dim=0).to(torch.float64)
    per_label = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return (present.to(torch.float64) * per_label).sum(dim=1)


class WeightedDraw:
    """A label-weighted epoch: ``draws`` clips drawn by ``weights`` (one ``multinomial`` of
    the epoch's generator, so a resumed epoch redraws the same clips)."""

    def __init__(self, weights: Tensor, draws: int, replacement: bool) -> None:
        drawable = int((weights > 0).sum())
        if drawable == 0:
            raise UsageError("run.sampler=label-weighted: no training clip carries a label")
        if not replacement and draws > drawable:
            raise UsageError(
                f"run.samples_per_epoch={draws} exceeds the {drawable} labeled training clips "
                "a draw without replacement can give (lower it or set run.sampler_replacement)"
            )
        self.weights, self.draws, self.replacement = weights, draws, replacement

    def order(self, generator: torch.Generator | None) -> Tensor:
        return torch.multinomial(self.weights, self.draws, self.replacement, generator=generator)


def weighted_draw(sampling: Sampling, labels: Tensor, targets: Tensor | None) -> WeightedDraw:
    """The epoch draw of ``sampling`` (label-weighted) over a split's labels."""
    draws = sampling.samples_per_epoch or len(labels)
    return WeightedDraw(label_weights(labels, targets), draws, sampling.replacement)


class OrderSampler(Sampler[list[int]]):
    """Batches of an order the main process sets before each pass (a fresh permutation
    per epoch, ``0..N-1``, or a label-weighted draw), optionally this rank's share of each
    global batch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        drop_last: bool,
        rank: int = 0,
        world: int = 1,
        draw: WeightedDraw | None = None,
    ) -> None:
        self.draw = draw
        self.n = draw.draws if draw is not None else n
        """Clips of one pass (the draw's size for a weighted draw)."""
        self.batch_size, self.drop_last = batch_size, drop_last
        self.rank, self.world = rank, world
        self.order = torch.arange(n)
        self.skip = 0
        """Batches of the pass to leave out at its start (a resumed epoch)."""

    def __len__(self) -> int:
        return num_batches(self.n, self.batch_size, self.drop_last)

    def start_pass(self, generator: torch.Generator | None, skip: int) -> None:
        """Set the next pass's order (one ``randperm`` draw of ``generator``, or the weighted
        draw's ``multinomial``; else in order) and the batches it leaves out at its start."""
        self.skip = skip
        if self.draw is not None:
            self.order = self.draw.order(generator)
        elif generator is not None:
            self.order = torch.randperm(self.n, generator=generator)
        else:
            self.order = torch.arange(self.n)

    def __iter__(self) -> Iterator[list[int]]:
        stop = (
            self.n - self.n % self.batch_size
            if self.drop_last and self.n >= self.batch_size
            else self.n
        )
        for start in range(self.skip * self.batch_size, stop, self.batch_size):
            # rank r takes every world-th clip of the global batch (DistributedSampler's stride)
            yield self.order[start : start + self.batch_size][self.rank :: self.world].tolist()


def resolve_workers(setting: int | None, processes: int = 1) -> int:
    """``run.workers``: ``None`` (auto) is ``min(8, CPUs / processes - 1)``, at least 0
    (``processes``: training processes sharing the machine's CPUs)."""
    if setting is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(0, min(MAX_AUTO_WORKERS, (cpus or 1) // max(1, processes) - 1))
    if setting < 0:
        raise UsageError(f"bad value for run.workers: {setting} (must be 0 or more)")
    return setting


class Loader:
    """A split's DataLoader, kept with its worker processes for every pass over it.

    Iterating yields :class:`Batch` objects on ``torch_device``. In-memory splits are
    read in the main process (workers would only copy tensors).
    """

    def __init__(
        self,
        audio: ClipAudio,
        batch_size: int,
        torch_device: torch.device,
        drop_last: bool = False,
        workers: int = 0,
        rank: int = 0,
        world: int = 1,
        sampling: Sampling | None = None,
    ) -> None:
        self.audio = audio
        self.torch_device = torch_device
        draw = None
        if sampling is not None and sampling.kind == "label-weighted":
            draw = weighted_draw(sampling, audio.labels, audio.targets)
        self.sampler = OrderSampler(len(audio), batch_size, drop_last, rank, world, draw)
        workers = 0 if audio.in_memory else workers
        self.loader = DataLoader(
            ClipDataset(audio.source),
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=torch_device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
            generator=torch.Generator(),  # workers' seeds: never a draw from the global RNG
            worker_init_fn=ignore_job_signals if workers > 0 else None,
        )

        self._stop_workers: weakref.finalize | None = None
        """Stops this loader's workers if it is collected unclosed (see ``_watch_workers``)."""
        _open_loaders.add(self)

    def __len__(self) -> int:
        return len(self.sampler)

    def close(self) -> None:
        """Stop the worker processes now (they otherwise live as long as the loader)."""
        iterator = getattr(self.loader, "_iterator", None)
        self.loader._iterator = None
        if self._stop_workers is not None:
            self._stop_workers.detach()
            self._stop_workers = None
        if iterator is not None:
            stop_pass(iterator)
        _open_loaders.discard(self)

    def _watch_workers(self) -> None:
        """Once the workers run: stop them if this loader is collected without close().

        Collected in a reference cycle (e.g. an Experiment never closed), the pass's queues
        could be finalized before the pass, and torch's own shutdown would no longer reach
        the workers (5 s, SIGTERM they ignore, 5 s more, and they stay). The finalizer holds
        the pass, so its queues are alive when it runs."""
        iterator = getattr(self.loader, "_iterator", None)
        if self._stop_workers is None and getattr(iterator, "_workers", None):
            self._stop_workers = weakref.finalize(self, stop_pass, iterator)
            self._stop_workers.atexit = False  # close_open_loaders stops them at exit

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]:
        """One pass: shuffled by ``generator`` (one ``randperm`` draw), else in order;
        ``skip`` leaves out its first batches, ``worker_seed`` seeds the workers' RNGs
        (workers started afresh for this pass take it; persistent ones keep their first)."""
        if worker_seed is not None:
            self.loader.generator.manual_seed(worker_seed)
        self.sampler.start_pass(generator, skip)
        device = self.torch_device
        try:
            batches = iter(self.loader)
            self._watch_workers()
            for wave, idx in batches:
                yield Batch(
                    wave=wave.to(device, non_blocking=True),
                    label=self.audio.labels[idx].to(device, non_blocking=True),
                    device=self.audio.devices[idx].to(device, non_blocking=True),
                    index=idx.to(device, non_blocking=True),
                    target=self._targets(idx, device),
                )
        except HarnessError as err:  # from a worker: its traceback folded into the text
            raise type(err)(worker_message(err)) from None
        except RuntimeError as err:
            if "DataLoader worker" not in str(err):
                raise
            first = str(err).strip().splitlines()[0]
            raise HarnessError(f"a data-loading worker process died: {first}") from None

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch()

    def _targets(self, idx: Tensor, device: torch.device) -> Tensor | None:
        """The multi-hot targets of clips ``idx`` (None for single-label data)."""
        targets = self.audio.targets
        return None if targets is None else targets[idx].to(device, non_blocking=True)


class FeatureLoader:
    """Batches of precomputed features (:class:`harness.api.FeatureData`) on a device,
    in the order and per-rank shares of :class:`Loader`."""

    def __init__(
        self,
        data: FeatureData,
        batch_size: int,
        torch_device: torch.device,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        n = len(data.features)
        if len(data.labels) != n:
            raise HarnessError(f"{n} feature rows but {len(data.labels)} labels")
        self.features = data.features
        self.labels = data.labels.long()
        self.devices = data.devices.long() if data.devices is not None else torch.full((n,), -1)
        self.torch_device = torch_device
        self.sampler = OrderSampler(n, batch_size, drop_last, rank, world)

    def __len__(self) -> int:
        return len(self.sampler)

    def close(self) -> None:
        """Nothing to stop: features are read in this process."""

    def epoch(
        self,
        generator: torch.Generator | None = None,
        skip: int = 0,
        worker_seed: int | None = None,
    ) -> Iterator[Batch]:
        """One pass, shuffled by ``generator`` (one ``randperm`` draw) or in order."""
        self.sampler.start_pass(generator, skip)
        device = self.torch_device
        for rows in self.sampler:
            idx = torch.tensor(rows, dtype=torch.long)
            features = self.features[idx].to(device)
            yield Batch(
                wave=features.new_zeros(len(rows), 0),
                label=self.labels[idx].to(device),
                device=self.devices[idx].to(device),
                index=idx.to(device),
                features=features,
            )


def worker_message(err: Exception) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker.

    torch re-raises a worker's error as the same type whose text is the worker's whole
    traceback; a :class:`HarnessError` prints that text on one line (line breaks escaped),
    so the raw text (``args[0]``) is searched for the error's own last line."""
    raw = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
    lines = [line for line in raw.splitlines() if line.strip()]
    if len(lines) <= 1 or not lines[0].startswith("Caught "):
        return str(err)
    kind = type(err)
    prefixes = (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: ")
    for line in reversed(lines):
        for prefix in prefixes:
            if line.startswith(prefix):
                return line[len(prefix) :]
    last = lines[-1]
    _, sep, message = last.partition("Error: ")
    return message if sep else last


def batches(
    audio: ClipAudio,
    batch_size: int,
    torch_device: torch.device,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    workers: int = 0,
) -> Iterator[Batch]:
    """Batches in order, or shuffled by ``generator`` (one ``randperm`` per call)."""
    return Loader(audio, batch_size, torch_device, drop_last, workers).epoch(generator)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    if drop_last and n >= batch_size:
        return n // batch_size
    return -(-n // batch_size)
