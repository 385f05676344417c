"""Device impulse responses (DIRs): banks, loading, truncation, batched convolution.

The building blocks behind the ``vintage`` and ``multidir`` augmentations, meant
for any plugin that convolves training audio with measured or synthetic
impulse responses:

- :class:`IRBank`: impulse responses ``[N, L]`` at one sample rate, with one
  metadata dict per response (``microphone``, ``angle``, ``distance``, ``source``).
- Loading: :func:`list_ir_files` and :func:`load_ir_files` read a folder of
  audio files; :func:`load_sofa` reads a SOFA file of impulse responses.
  Every response is resampled once, at load time, to the target rate.
- :func:`kaiser_truncate` shortens responses to ``L`` samples with a Kaiser
  window; :func:`normalize_irs` scales each response.
- :func:`convolve`: batched FFT convolution (overlap-save) on the training device.
- :class:`ImpulseResponseAugmentation`: the waveform augmentation base class
  (path or embedded bank, probability, device-aware application, filters).
- :func:`frequency_responses_db` and :func:`quantile_bands`: the statistics
  behind ``harness plot dirs``.
- ``analog_*`` and :func:`spectrum_to_ir`: minimum-phase filter responses for
  building deterministic synthetic banks.

A third-party collection needs only a name and an embedded (or no) bank::

    from harness import hookimpl
    from harness.nn.impulse import ImpulseResponseAugmentation, IRBank

    class PhoneIRs(ImpulseResponseAugmentation):
        name = "phone-irs"
        description = "Convolve training clips with smartphone impulse responses."

        def embedded_bank(self, sample_rate: int) -> IRBank:
            raise UsageError("phone-irs needs --set aug.phone-irs.path=FOLDER")

    @hookimpl
    def register_augmentations(register):
        register(PhoneIRs)

It inherits the options of :class:`IRConfig` (``path``, ``p``, ``devices``,
``microphones``, ``length``, ``beta``, ``window``, ``align``, ``normalize``),
folder and SOFA loading, and device-aware application.

Decisions, for users who compare with published numbers:

- Files: a folder is searched for files with an audio suffix
  (:data:`AUDIO_SUFFIXES`); other files (README, licence, ``SOURCE.md``) are
  ignored. A file with an audio suffix that cannot be decoded is an error.
  A multi-channel file is an error: a DIR is one microphone's response, and
  silently picking a channel would hide a wrong file.
- Truncation: the segment starts ``pre`` samples before the response's onset
  (the first sample within 20 dB of its peak, as in ISO 3382-1) and is
  multiplied by the right half of a symmetric Kaiser window of length
  ``2L - 1`` (1 at the onset, ``1 / I0(beta)`` at the end). The literal
  reading of "windowed to L samples with a Kaiser window" (the first ``L``
  samples times the full symmetric ``kaiser(L, beta)``) is
  ``align="start", window="full"``.
- Normalization (after truncation): ``energy`` scales each response to unit
  L2 norm, so white input keeps its power; ``peak`` to a maximum magnitude of
  1; ``none`` keeps the file's scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from scipy.fft import next_fast_len
from torch import Tensor

from harness.api import Augmentation, Batch, Task
from harness.api.domains import domain_map, non_negative, unit
from harness.data.audio import check_samples, wav_data_shortfall
from harness.registry.plugins import unknown_name_message
from harness.util.errors import DataError, UsageError
from harness.util.progress import progress

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg")
"""File suffixes read as impulse responses (case-insensitive)."""

ONSET_DB = -20.0
"""The onset is the first sample within this many dB of the peak magnitude."""

PRE_ROLL_SECONDS = 0.0005
"""Samples kept before the onset when truncating (0.5 ms)."""

Normalize = Literal["energy", "peak", "none"]
Window = Literal["half", "full"]
Align = Literal["onset", "start"]
DeviceClass = Literal["microphone", "response", "keep"]


# -- the bank -----------------------------------------------------------------


@dataclass
class IRBank:
    """Impulse responses ``irs [N, L]`` at ``sample_rate`` with one metadata dict each."""

    irs: Tensor
    sample_rate: int
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.irs.ndim != 2:
            raise ValueError(f"irs must be [N, L], got shape {tuple(self.irs.shape)}")
        if not self.meta:
            self.meta = [{} for _ in range(len(self.irs))]
        if len(self.meta) != len(self.irs):
            raise ValueError(
                f"{len(self.irs)} impulse responses but {len(self.meta)} metadata dicts"
            )

    def __len__(self) -> int:
        return self.irs.shape[0]

    @property
    def length(self) -> int:
        return self.irs.shape[1]

    def select(self, indices: Sequence[int]) -> IRBank:
        """The responses at ``indices``, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return IRBank(self.irs[index], self.sample_rate, [self.meta[i] for i in index.tolist()])

    def where(self, keep: Callable[[Mapping[str, Any]], bool]) -> IRBank:
        """The responses whose metadata satisfies ``keep`` (``self`` when all do)."""
        indices = [i for i, meta in enumerate(self.meta) if keep(meta)]
        return self if len(indices) == len(self) else self.select(indices)

    def values(self, key: str) -> list[Any]:
        """Distinct values of a metadata key, sorted (``None`` left out)."""
        return sorted({m[key] for m in self.meta if m.get(key) is not None})

    def map(self, fn: Callable[[Tensor], Tensor]) -> IRBank:
        """A bank with ``fn`` applied to the responses (metadata kept)."""
        return IRBank(fn(self.irs), self.sample_rate, self.meta)


# -- reading files ------------------------------------------------------------


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def list_ir_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Audio files in ``folder`` (hidden files skipped), sorted; none is a :class:`DataError`."""
    if not folder.exists():
        raise DataError(f"impulse-response path not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"impulse-response path is not a folder: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(
        p
        for p in candidates
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        where = "or its sub-folders " if recursive else ""
        raise DataError(
            f"no impulse-response files ({', '.join(AUDIO_SUFFIXES)}) in folder {where}{folder}"
        )
    return files


def read_ir(path: Path) -> tuple[np.ndarray, int]:
    """A mono impulse response (float64) and its sample rate; a bad file is a :class:`DataError`."""
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        raise DataError(f"unreadable impulse-response file {path}: {one_line(err)}") from None
    if info.channels != 1:
        raise DataError(
            f"impulse-response file {path} has {info.channels} channels; DIRs must be mono files"
        )
    if data.shape[0] == 0:
        raise DataError(f"empty impulse-response file {path}")
    if info.frames > 0 and data.shape[0] < info.frames:
        raise DataError(
            f"truncated impulse-response file {path}: header says {info.frames} frames, "
            f"found {data.shape[0]}"
        )
    missing = wav_data_shortfall(path)
    if missing:
        raise DataError(
            f"truncated impulse-response file {path}: {missing} bytes of audio data missing"
        )
    check_samples(data, path, "impulse-response file")
    return data[:, 0], rate


def stack_padded(rows: Sequence[np.ndarray | Tensor]) -> Tensor:
    """Zero-pad 1-D signals to the longest and stack them as float64 ``[N, L]``."""
    length = max(r.shape[-1] for r in rows)
    out = torch.zeros(len(rows), length, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, : row.shape[-1]] = torch.as_tensor(row, dtype=torch.float64)
    return out


def resample_rows(irs: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample ``[N, L]`` responses (torchaudio's windowed sinc); a no-op at equal rates."""
    if orig_rate == new_rate:
        return irs
    return AF.resample(irs, orig_rate, new_rate)


def load_ir_files(
    files: Sequence[Path],
    sample_rate: int,
    meta: Sequence[dict[str, Any]] | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 64,
) -> IRBank:
    """Read, resample once to ``sample_rate``, optionally ``transform`` (e.g. truncate).

    Files are processed in chunks so that large collections with long
    responses never sit in memory at full length. Responses of different
    lengths are zero-padded to the longest. ``meta`` defaults to
    ``{"microphone": stem, "source": path}`` per file.
    """
    if not files:
        raise DataError("no impulse-response files to load")
    metas = [dict(m) for m in meta] if meta is not None else [default_meta(f) for f in files]
    parts: list[Tensor] = []
    starts = range(0, len(files), chunk)
    for start in progress(starts, desc="loading impulse responses", total=len(starts)):
        parts.append(load_chunk(files[start : start + chunk], sample_rate, transform))
    irs = stack_padded([row for part in parts for row in part]) if len(parts) > 1 else parts[0]
    return IRBank(irs.float(), sample_rate, metas)


def load_chunk(
    files: Sequence[Path], sample_rate: int, transform: Callable[[Tensor], Tensor] | None
) -> Tensor:
    by_rate: dict[int, list[int]] = {}
    signals: list[np.ndarray] = []
    for i, path in enumerate(files):
        data, rate = read_ir(path)
        signals.append(data)
        by_rate.setdefault(rate, []).append(i)
    rows: list[Tensor] = [torch.empty(0)] * len(files)
    for rate, members in by_rate.items():
        resampled = resample_rows(stack_padded([signals[i] for i in members]), rate, sample_rate)
        for i, row in zip(members, resampled, strict=True):
            rows[i] = row
    out = stack_padded(rows)
    return transform(out) if transform is not None else out


def default_meta(path: Path) -> dict[str, Any]:
    return {"microphone": path.stem, "angle": None, "distance": None, "source": str(path)}


def load_sofa(path: Path, sample_rate: int) -> IRBank:
    """Every receiver of every measurement in a SOFA file's ``Data.IR [M, R, N]``.

    Metadata: ``microphone`` (the file stem, plus ``#r`` when there are several
    receivers), ``angle`` (source azimuth in degrees, 0-360) and ``distance``
    (source distance in cm) from ``SourcePosition`` when given, ``measurement``
    and ``receiver`` indices. ``Data.Delay`` is ignored.
    """
    try:
        import sofar
    except ModuleNotFoundError:
        raise UsageError(f"reading {path} needs the 'sofar' package: pip install sofar") from None
    if not path.is_file():
        raise DataError(f"SOFA file not found: {path}")
    try:
        sofa = sofar.read_sofa(str(path), verify=False, verbose=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
        raise DataError(f"unreadable SOFA file {path}: {one_line(err)}") from None
    data = getattr(sofa, "Data_IR", None)
    if data is None:
        convention = getattr(sofa, "GLOBAL_SOFAConventions", "unknown convention")
        raise DataError(f"SOFA file {path} has no impulse responses (no Data.IR; {convention})")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 3 or data.size == 0:
        raise DataError(f"SOFA file {path}: Data.IR must be [M, R, N], got shape {data.shape}")
    if not np.isfinite(data).all():
        raise DataError(f"SOFA file {path}: Data.IR contains NaN or infinite samples")
    rate = sofa_sample_rate(sofa, path)
    measurements, receivers, _ = data.shape
    angles, distances = sofa_source_positions(sofa, measurements)
    meta = [
        {
            "microphone": path.stem if receivers == 1 else f"{path.stem}#{r}",
            "angle": angles[m],
            "distance": distances[m],
            "measurement": m,
            "receiver": r,
            "source": str(path),
        }
        for m in range(measurements)
        for r in range(receivers)
    ]
    irs = resample_rows(
        torch.from_numpy(data.reshape(measurements * receivers, -1)), rate, sample_rate
    )
    return IRBank(irs.float(), sample_rate, meta)


def sofa_sample_rate(sofa: Any, path: Path) -> int:
    rates = np.unique(np.asarray(getattr(sofa, "Data_SamplingRate", []), dtype=np.float64))
    if rates.size != 1 or not rates[0] > 0 or rates[0] != round(rates[0]):
        raise DataError(
            f"SOFA file {path}: Data.SamplingRate must be one positive integer, got {rates}"
        )
    return int(rates[0])


def sofa_source_positions(sofa: Any, count: int) -> tuple[list[float | None], list[float | None]]:
    """Azimuth (degrees, 0-360) and distance (cm) per measurement, ``None`` when unknown."""
    unknown: list[float | None] = [None] * count
    positions = np.asarray(getattr(sofa, "SourcePosition", []), dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or positions.shape[0] not in (1, count):
        return unknown, list(unknown)
    positions = np.broadcast_to(positions, (count, 3))
    kind = str(getattr(sofa, "SourcePosition_Type", "")).lower()
    units = str(getattr(sofa, "SourcePosition_Units", "")).lower()
    if kind == "spherical":
        azimuth = positions[:, 0] if "degree" in units else np.degrees(positions[:, 0])
        distance = positions[:, 2]
    elif kind == "cartesian":
        azimuth = np.degrees(np.arctan2(positions[:, 1], positions[:, 0]))
        distance = np.linalg.norm(positions, axis=1)
    else:
        return unknown, list(unknown)
    angles = [float(a) for a in np.round(np.mod(azimuth, 360.0), 6)]
    return angles, [float(d) for d in np.round(distance * 100.0, 6)]


# -- truncation and normalization ---------------------------------------------


def kaiser_window(length: int, beta: float, half: bool = False) -> Tensor:
    """``scipy.signal.windows.kaiser(length, beta)`` (symmetric) as float64.

    With ``half``, the right half of the symmetric window of length
    ``2 * length - 1``: ``length`` values falling from 1 to ``1 / I0(beta)``.
    """
    if not half:
        return torch.kaiser_window(length, periodic=False, beta=beta, dtype=torch.float64)
    full = torch.kaiser_window(2 * length - 1, periodic=False, beta=beta, dtype=torch.float64)
    return full[length - 1 :]


def onsets(irs: Tensor, threshold_db: float = ONSET_DB) -> Tensor:
    """Index of the first sample within ``threshold_db`` of each response's peak magnitude."""
    magnitude = irs.abs()
    level = magnitude.amax(dim=-1, keepdim=True) * 10.0 ** (threshold_db / 20.0)
    return (magnitude >= level).to(torch.int8).argmax(dim=-1)


def kaiser_truncate(
    irs: Tensor,
    length: int,
    beta: float = 2.0,
    window: Window = "half",
    align: Align = "onset",
    pre: int = 16,
) -> Tensor:
    """Cut ``[N, T]`` responses to ``[N, length]`` and apply a Kaiser window.

    ``align="onset"`` starts each segment ``pre`` samples before the
    response's onset (see :func:`onsets`), ``"start"`` at its first sample.
    ``window="half"`` applies the right half of a symmetric Kaiser window
    (see :func:`kaiser_window`), ``"full"`` the symmetric ``kaiser(length)``.
    Segments running past the end are zero-padded.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    if align == "onset":
        start = (onsets(irs) - pre).clamp(min=0)
    else:
        start = torch.zeros(irs.shape[0], dtype=torch.long, device=irs.device)
    index = start.long()[:, None] + torch.arange(length, device=irs.device)
    inside = index < irs.shape[-1]
    segment = irs.gather(1, index.clamp(max=irs.shape[-1] - 1))
    win = kaiser_window(length, beta, half=window == "half").to(irs.device, irs.dtype)
    return torch.where(inside, segment * win, 0.0)


def normalize_irs(irs: Tensor, mode: Normalize, meta: Sequence[Mapping[str, Any]] = ()) -> Tensor:
    """Scale each response to unit L2 norm (``energy``), unit peak (``peak``), or not (``none``)."""
    if mode == "none":
        return irs
    scale = irs.norm(dim=-1) if mode == "energy" else irs.abs().amax(dim=-1)
    silent = (scale <= 0).nonzero().flatten().tolist()
    if silent:
        where = meta[silent[0]].get("source", f"#{silent[0]}") if meta else f"#{silent[0]}"
        raise DataError(f"impulse response {where} is silent (all zeros)")
    return irs / scale[:, None]


# -- convolution --------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def fft_length(n: int) -> int:
    """The smallest fast real-FFT length (2-, 3-, 5-, 7-smooth, as pocketfft) of at least ``n``."""
    return next_fast_len(n, real=True)


def block_length(frames: int, taps: int) -> int:
    """FFT size for overlap-save: 8x the taps (a power of two, at least 2048).

    0 when one FFT over the whole signal is as cheap (long responses).
    """
    block = max(2048, 1 << (8 * taps - 1).bit_length())
    return 0 if block >= frames + taps - 1 else block


def convolve(wave: Tensor, irs: Tensor) -> Tensor:
    """First ``T`` samples of the full linear convolution of ``wave [B, T]`` with ``irs [B, L]``.

    Batched real FFTs of one size on the tensors' device: overlap-save with
    blocks of :func:`block_length` samples when the responses are short next
    to the clips (cache-friendly, about twice as fast as one long FFT), else
    one FFT of :func:`fft_length` ``(T + L - 1)`` samples.
    """
    if wave.ndim != 2 or irs.ndim != 2 or wave.shape[0] != irs.shape[0]:
        shapes = f"{tuple(wave.shape)} and {tuple(irs.shape)}"
        raise ValueError(f"expected wave [B, T] and irs [B, L], got {shapes}")
    frames, taps = wave.shape[-1], irs.shape[-1]
    irs = irs.to(wave.dtype)
    block = block_length(frames, taps)
    if not block:
        n = fft_length(frames + taps - 1)
        spectrum = torch.fft.rfft(wave, n) * torch.fft.rfft(irs, n)
        return torch.fft.irfft(spectrum, n)[..., :frames]
    hop = block - taps + 1
    blocks = -(-frames // hop)
    padded = torch.nn.functional.pad(wave, (taps - 1, blocks * hop - frames))
    segments = padded.unfold(-1, block, hop)  # [B, blocks, block], overlapping by taps - 1
    spectrum = torch.fft.rfft(segments, block) * torch.fft.rfft(irs, block)[:, None, :]
    valid = torch.fft.irfft(spectrum, block)[..., taps - 1 :]  # [B, blocks, hop]
    return valid.reshape(wave.shape[0], blocks * hop)[:, :frames]


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


# -- statistics of a collection -------------------------------------------------


def log_frequencies(sample_rate: int, points: int = 256, low: float = 20.0) -> np.ndarray:
    """Log-spaced analysis frequencies from ``low`` to just below Nyquist."""
    return np.geomspace(low, sample_rate / 2 * 2 ** (-1 / 12), points)


def frequency_responses_db(
    irs: Tensor | np.ndarray,
    sample_rate: int,
    freqs: np.ndarray | None = None,
    smoothing: float = 1 / 6,
    reference: tuple[float, float] = (500.0, 2000.0),
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed magnitude responses in dB, ``[N, F]`` at ``freqs`` (default: log-spaced).

    Each value is the mean power of the FFT bins within ``smoothing`` octaves
    around the frequency (fractional-octave smoothing; where that band holds
    fewer than two bins, the power interpolated at the frequency). Each
    response is expressed relative to its mean power between the
    ``reference`` frequencies (0 dB around 1 kHz, as microphone responses are
    usually shown). Computed ``chunk`` responses at a time to bound memory.
    """
    irs = np.asarray(irs, dtype=np.float64)
    freqs = log_frequencies(sample_rate) if freqs is None else np.asarray(freqs, dtype=np.float64)
    n_fft = max(8192, 1 << int(np.ceil(np.log2(irs.shape[-1]))))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    half_band = 2.0 ** (smoothing / 2)
    rows = [
        smoothed_power(irs[i : i + chunk], n_fft, bins, freqs, half_band, reference)
        for i in range(0, len(irs), chunk)
    ]
    tiny = np.finfo(np.float64).tiny
    return freqs, 10.0 * np.log10(np.maximum(np.concatenate(rows), tiny))


def smoothed_power(
    irs: np.ndarray,
    n_fft: int,
    bins: np.ndarray,
    freqs: np.ndarray,
    half_band: float,
    reference: tuple[float, float],
) -> np.ndarray:
    """Band-averaged power at ``freqs`` relative to the reference band, ``[N, F]``."""
    power = np.abs(np.fft.rfft(irs, n_fft)) ** 2
    cumulative = np.concatenate([np.zeros((len(power), 1)), np.cumsum(power, axis=1)], axis=1)

    def band_mean(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = np.searchsorted(bins, low, side="left")
        hi = np.searchsorted(bins, high, side="right")
        count = hi - lo
        return (cumulative[:, hi] - cumulative[:, lo]) / np.maximum(count, 1), count

    smoothed, count = band_mean(freqs / half_band, freqs * half_band)
    position = np.clip(freqs / bins[1], 0, len(bins) - 1.000001)
    below, weight = np.floor(position).astype(int), position % 1.0
    interpolated = power[:, below] * (1 - weight) + power[:, below + 1] * weight
    smoothed = np.where(count >= 2, smoothed, interpolated)
    ref, _ = band_mean(np.array([reference[0]]), np.array([reference[1]]))
    return smoothed / np.maximum(ref, np.finfo(np.float64).tiny)


@dataclass
class ResponseBands:
    """Quantile bands of responses ``[N, F]`` per frequency, as in the seed's Figure 1."""

    coverage: list[float]
    """Fractions of responses inside each band, widest first (1.0: min to max)."""
    lower: np.ndarray
    """``[len(coverage), F]``: the ``(1 - c) / 2`` quantile of each band."""
    upper: np.ndarray
    """``[len(coverage), F]``: the ``(1 + c) / 2`` quantile of each band."""
    mean: np.ndarray
    median: np.ndarray


def quantile_bands(
    values: np.ndarray, coverage: Iterable[float] = (1.0, 0.8, 0.5)
) -> ResponseBands:
    """Per-column central bands holding ``coverage`` of the rows (linear-interpolated quantiles)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"values must be [N, F] with N >= 1, got shape {values.shape}")
    cover = sorted((float(c) for c in coverage), reverse=True)
    if any(not 0.0 < c <= 1.0 for c in cover):
        raise ValueError(f"coverage values must be in (0, 1], got {cover}")
    lower = np.stack([np.quantile(values, (1 - c) / 2, axis=0) for c in cover])
    upper = np.stack([np.quantile(values, (1 + c) / 2, axis=0) for c in cover])
    return ResponseBands(cover, lower, upper, values.mean(axis=0), np.median(values, axis=0))


# -- building synthetic banks -------------------------------------------------
#
# Analog (s-domain) prototypes evaluated at s = j 2 pi f: every factor is
# minimum-phase, so products of them give causal, realistic responses.


def _s(freqs: np.ndarray, f0: float | np.ndarray) -> np.ndarray:
    return 1j * np.asarray(freqs, dtype=np.float64) / f0


def _butterworth_denominator(x: np.ndarray, order: int) -> np.ndarray:
    k = np.arange(1, order + 1)
    poles = np.exp(1j * np.pi * (2 * k + order - 1) / (2 * order))
    out = np.ones_like(x)
    for pole in poles:
        out = out * (x - pole)
    return out


def analog_lowpass(freqs: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    """Butterworth low-pass of ``order`` (-3 dB at ``cutoff``)."""
    return 1.0 / _butterworth_denominator(_s(freqs, cutoff), order)


def analog_highpass(freqs: np.ndarray, cutoff: float, order: int) -> np.ndarray:
    """Butterworth high-pass of ``order`` (-3 dB at ``cutoff``)."""
    x = _s(freqs, cutoff)
    return x**order / _butterworth_denominator(x, order)


def analog_peaking(freqs: np.ndarray, center: float, gain_db: float, q: float) -> np.ndarray:
    """A peaking (bell) filter: ``gain_db`` at ``center``, bandwidth set by ``q``."""
    x = _s(freqs, center)
    a = 10.0 ** (gain_db / 40.0)
    return (x**2 + x * a / q + 1) / (x**2 + x / (a * q) + 1)


def analog_low_shelf(
    freqs: np.ndarray, corner: float, gain_db: float, q: float = 0.7071
) -> np.ndarray:
    """A low shelf: ``gain_db`` well below ``corner``, 0 dB well above."""
    x = _s(freqs, corner)
    a = 10.0 ** (gain_db / 40.0)
    return a * (x**2 + np.sqrt(a) / q * x + a) / (a * x**2 + np.sqrt(a) / q * x + 1)


def delay(freqs: np.ndarray, seconds: float | np.ndarray) -> np.ndarray:
    """A pure delay ``exp(-j 2 pi f tau)``."""
    return np.exp(-2j * np.pi * np.asarray(freqs) * seconds)


def spectrum_to_ir(spectrum: np.ndarray, n_fft: int) -> np.ndarray:
    """Real impulse responses (``n_fft`` samples) from one-sided spectra ``[..., n_fft//2 + 1]``."""
    return np.fft.irfft(spectrum, n_fft, axis=-1)
