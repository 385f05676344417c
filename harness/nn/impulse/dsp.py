"""Signal processing of impulse responses: onsets, Kaiser truncation, normalization and
batched FFT convolution."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from scipy.fft import next_fast_len
from torch import Tensor

from harness.util.errors import DataError

ONSET_DB = -20.0
"""The onset is the first sample within this many dB of the peak magnitude."""

PRE_ROLL_SECONDS = 0.0005
"""Samples kept before the onset when truncating (0.5 ms)."""

Normalize = Literal["energy", "peak", "none"]
Window = Literal["half", "full"]
Align = Literal["onset", "start"]
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
