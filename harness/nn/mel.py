"""PaSST's log-mel front-end (Koutini et al. 2022, ``models/preprocess.py``), shared by the PaSST
and MaskSpec backbones: pre-emphasis, STFT power, Kaldi mel banks with a jittered band range in
training, ``(log(x + 1e-5) + 4.5) / 5``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PasstMel", "kaldi_mel"]


def kaldi_mel(freq: Tensor) -> Tensor:
    """Kaldi's mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(freq / 700.0)


class PasstMel(nn.Module):
    """PaSST's log-mel front-end: waveforms ``[B, T]`` at 32 kHz -> ``[B, 1, 128, frames]``.

    Pre-emphasis, STFT power, Kaldi mel banks, ``log(x + 1e-5)`` and the fixed
    normalisation ``(x + 4.5) / 5``. In training mode the mel range is jittered once
    per batch ("randomized frequency cutoff"): ``fmin + U{0, fmin_aug_range - 1}`` and
    ``fmax + fmax_aug_range // 2 - U{0, fmax_aug_range - 1}``; in evaluation it is
    fixed. Frames: ``1 + (T - 1) // hop``.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float | None = None,
        fmin_aug_range: int = 1,
        fmax_aug_range: int = 1000,
    ) -> None:
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError("fmin_aug_range and fmax_aug_range must be at least 1 (1: no jitter)")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = sample_rate // 2 - fmax_aug_range // 2 if fmax is None else fmax
        self.fmin_aug_range = fmin_aug_range
        self.fmax_aug_range = fmax_aug_range
        window = torch.hann_window(win_length, periodic=False)
        self.register_buffer("window", window, persistent=False)
        offset = (n_fft - win_length) // 2
        padded = F.pad(window, (offset, n_fft - win_length - offset))
        self.register_buffer("padded_window", padded, persistent=False)
        eval_basis = self.mel_basis(self.fmin, self.fmax)
        self.register_buffer("eval_mel_basis", eval_basis, persistent=False)

    def mel_basis(self, fmin: float, fmax: float) -> Tensor:
        """Kaldi triangular mel banks ``[n_mels, n_fft // 2 + 1]`` (zero weight on Nyquist).

        The same banks as ``torchaudio.compliance.kaldi.get_mel_banks`` (no VTLN warping),
        computed in a few vectorised operations: training draws new banks every batch.
        """
        bins = self.n_fft // 2
        bin_mel = kaldi_mel(torch.arange(bins, dtype=torch.float64) * self.sample_rate / self.n_fft)
        low, high = kaldi_mel(torch.tensor(float(fmin))), kaldi_mel(torch.tensor(float(fmax)))
        step = (high - low) / (self.n_mels + 1)
        left = low + step * torch.arange(self.n_mels, dtype=torch.float64).unsqueeze(1)
        rising = (bin_mel - left) / step
        falling = (left + 2 * step - bin_mel) / step
        banks = torch.minimum(rising, falling).clamp_min(0.0).float()
        return F.pad(banks, (0, 1))

    def jittered_mel_basis(self) -> Tensor:
        fmin = self.fmin + torch.randint(self.fmin_aug_range, (1,)).item()
        fmax_shift = torch.randint(self.fmax_aug_range, (1,)).item()
        fmax = self.fmax + self.fmax_aug_range // 2 - fmax_shift
        return self.mel_basis(fmin, fmax).to(self.eval_mel_basis.device)

    def forward(self, wave: Tensor) -> Tensor:
        x = wave[:, 1:] - 0.97 * wave[:, :-1]  # pre-emphasis, as a [-0.97, 1] convolution
        power = self.power_spectrum(x)
        basis = self.jittered_mel_basis() if self.training else self.eval_mel_basis
        with torch.autocast(device_type=power.device.type, enabled=False):
            mel = torch.matmul(basis, power.float())
        return ((mel + 1e-5).log() + 4.5).div(5.0).unsqueeze(1)

    def power_spectrum(self, x: Tensor) -> Tensor:
        """``|STFT|^2`` ``[B, n_fft // 2 + 1, frames]``, equal to ``torch.stft(center=True)``.

        Framing with ``unfold`` and one batched ``rfft`` is about 2x faster than
        ``torch.stft`` on the CPU, and the front-end runs on every training batch.
        """
        half = self.n_fft // 2
        padded = F.pad(x.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        frames = padded.unfold(-1, self.n_fft, self.hop_length) * self.padded_window
        spec = torch.fft.rfft(frames, dim=-1)
        return (spec.real.square() + spec.imag.square()).transpose(-1, -2)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win={self.win_length}, "
            f"hop={self.hop_length}, n_mels={self.n_mels}, fmin={self.fmin}, fmax={self.fmax}"
        )
