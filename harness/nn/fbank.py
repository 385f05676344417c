"""Kaldi log-mel filterbanks for whole batches (the front-end of AudioMAE, BEATs and MAE-AST).

:class:`KaldiFbank` equals ``torchaudio.compliance.kaldi.fbank`` called clip by clip with
``dither=0``, ``use_energy=False``, ``snip_edges=True``, 25 ms frames every 10 ms, per-frame DC
removal, pre-emphasis 0.97, a 512-point FFT of the power spectrum, mel banks from 20 Hz to Nyquist
and the log floored at float32 epsilon; the window (``"hanning"`` or kaldi's ``"povey"``), the
bin count and a scale of the waveform (BEATs: ``2 ** 15``) are parameters. It computes in float32
with autocast off: power spectra of int16-range audio overflow half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from harness.util.errors import DataError

__all__ = ["KaldiFbank"]

WINDOWS = ("hanning", "povey")


class KaldiFbank(nn.Module):
    """Waveforms ``[B, S]`` -> log-mel fbank ``[B, frames, num_mel_bins]`` (time first).

    ``frames = 1 + (S - frame_length) // frame_shift``. Input shorter than one frame is zero-padded
    to one frame when ``pad_short`` is set, and refused otherwise.
    """

    preemphasis = 0.97

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        window: str = "hanning",
        wave_scale: float = 1.0,
        frame_length: int = 400,
        frame_shift: int = 160,
        low_freq: float = 20.0,
        pad_short: bool = False,
    ) -> None:
        super().__init__()
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.window_type = window
        self.wave_scale = wave_scale
        self.frame_length = frame_length
        self.frame_shift = frame_shift
        self.pad_short = pad_short
        self.n_fft = 1 << (frame_length - 1).bit_length()
        banks, _ = kaldi.get_mel_banks(
            num_mel_bins, self.n_fft, float(sample_rate), low_freq, 0.0, 100.0, -500.0, 1.0
        )
        # kaldi's banks cover n_fft / 2 bins; the Nyquist bin gets weight zero
        self.register_buffer(
            "mel_banks", F.pad(banks.float(), (0, 1)).T.contiguous(), persistent=False
        )
        hann = torch.hann_window(frame_length, periodic=False)
        self.register_buffer(
            "window", hann.pow(0.85) if window == "povey" else hann, persistent=False
        )

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim != 2:
            raise DataError(f"fbank needs waveforms [B, T], got shape {tuple(wave.shape)}")
        if wave.shape[-1] < self.frame_length:
            if not self.pad_short:
                raise DataError(
                    f"fbank needs at least {self.frame_length} samples per clip, "
                    f"got shape {tuple(wave.shape)}"
                )
            wave = F.pad(wave, (0, self.frame_length - wave.shape[-1]))
        with torch.autocast(wave.device.type, enabled=False):
            wave = wave.float()
            if self.wave_scale != 1.0:
                wave = wave * self.wave_scale
            frames = wave.unfold(-1, self.frame_length, self.frame_shift)
            frames = frames - frames.mean(dim=-1, keepdim=True)
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = (frames - self.preemphasis * previous) * self.window
            power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2.0)
            return (power @ self.mel_banks).clamp_min(torch.finfo(torch.float32).eps).log()

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
            f"window={self.window_type}, wave_scale={self.wave_scale}"
        )
