"""M2D: the ViT encoder of Masked Modeling Duo on 80-bin log-mel spectrograms.

Paper: D. Niizumi, D. Takeuchi, Y. Ohishi, N. Harada, K. Kashino, "Masked Modeling Duo: Learning
Representations by Encouraging Both Networks to Model the Input", ICASSP 2023. Reference code:
nttcslab/m2d (``examples/portable_m2d.py``, ``m2d/runtime_audio.py``); the published weights
``m2d_vit_base-80x608p16x16-*`` are a timm ``VisionTransformer`` (ViT-B/16, 85.4M parameters).

Front-end (the runtime's ``to_normalized_feature``): 16 kHz waveform, power mel spectrogram
(400-point FFT and periodic Hann window of 25 ms, 10 ms hop, centred with reflection padding,
80 Slaney-normalised Slaney-scale bands from 50 Hz to 8 kHz, as nnAudio computes it),
``log(x + eps)``, then ``(x - mean) / std`` with the statistics stored in the checkpoint
(``norm_stats``) or the runtime's defaults ``-7.1, 4.2``. Features are ``[B, 1, 80, T]``
(frequency first), ``T = 1 + samples // 160``.

Encoder: 16x16 patches (5 frequency rows), a class token, a positional table for a
``5 x 38`` grid (608 frames), timm ViT blocks and the final ``norm``; tokens are frequency-major
(``f * 38 + t``) as the conv's flattening gives. Input shorter than the table uses its first time
columns in every frequency row; longer input is cut into 608-frame chunks encoded one by one and
joined along time; the time axis is zero-padded to a multiple of 16. Output as the runtime gives
it: per time step the patch embeddings of the 5 frequency rows concatenated (``[B, T/16, 5 D]``,
class token dropped); the clip embedding is their mean over time (``5 D = 3840`` at base).

Checkpoints (``--set backbone.checkpoint=PATH``): the published files (``{'model': ...}`` with the
online encoder's ``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N``, ``norm`` and
the target network, decoder and predictor, which are set aside; ``norm_stats`` is read into the
front-end), encoder-only files, and EVAR fine-tuned files (prefix ``module.ar.runtime.backbone.``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torchaudio
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    DataError,
    Domain,
    Encoded,
    Pretrained,
    UsageError,
    at_least,
    between,
    domain_map,
    positive,
)
from harness.nn.layers import (
    GridViT,
    VitSize,
    check_vit_size,
    describe_vit_sizes,
    sincos_pos_embed_2d,
)

__all__ = ["M2D", "SIZES", "M2DMel"]

SAMPLE_RATE = 16000
N_MELS = 80
N_FFT = 400
HOP = 160
F_MIN = 50.0
F_MAX = 8000.0
PATCH = 16
INPUT_FRAMES = 608
"""Frames of the published positional table (``80x608p16x16``)."""
NORM_MEAN = -7.1
NORM_STD = 4.2
ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")
EVAR_PREFIX = "module.ar.runtime.backbone."


SIZES: dict[str, VitSize] = {
    "tiny": VitSize(dim=48, depth=2, heads=3),
    "base": VitSize(dim=768, depth=12, heads=12),
}


class M2DMel(nn.Module):
    """Waveforms ``[B, S]`` at 16 kHz -> normalised log-mel ``[B, 1, 80, 1 + S // 160]``."""

    def __init__(self, mean: float = NORM_MEAN, std: float = NORM_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=N_FFT,
            hop_length=HOP,
            f_min=F_MIN,
            f_max=F_MAX,
            n_mels=N_MELS,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim != 2 or wave.shape[-1] <= N_FFT // 2:
            raise DataError(
                f"m2d front-end needs waveforms [B, T] with T > {N_FFT // 2} samples, "
                f"got shape {tuple(wave.shape)}"
            )
        with torch.autocast(wave.device.type, enabled=False):
            x = (self.mel(wave.float()) + torch.finfo(torch.float32).eps).log()
        return ((x - self.mean) / self.std).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


# -- published checkpoints (--set backbone.pretrained=NAME; harness.registry.pretrained) -----------

# nttcslab/m2d README ("Pre-trained/Fine-tuned Weights"): GitHub release assets, each a zip
# holding one folder named like it with the checkpoint. The members are the paths the same
# repository loads after unzipping: README.md and Guide_app.md (221006-mr7),
# app/circor/1-Run-M2D.ipynb (220930-mr7_enconly; 221006-mr7_enconly in commit b7c5904),
# examples/Colab_M2D-CLAP_ESC-50_ZS.ipynb (240128 M2D-CLAP). Only 16 kHz 80x608 files with
# 16x16 patches are listed: the files this backbone builds. No sha256 is published, so the
# extracted checkpoint's hash is recorded at the first download and checked on every use.
_M2D_RELEASE = "https://github.com/nttcslab/m2d/releases/download/v0.1.0"
_M2D_PAGE = "https://github.com/nttcslab/m2d/releases"


def _m2d(stem: str, description: str) -> Pretrained:
    return Pretrained(
        f"{_M2D_RELEASE}/{stem}.zip",
        layout="m2d",
        config={"size": "base", "input_frames": INPUT_FRAMES},
        page=_M2D_PAGE,
        description=description,
        member=f"{stem}/checkpoint-300.pth",
    )


PRETRAINED = {
    "m2d-vit-base-221006-mr7": _m2d(
        "m2d_vit_base-80x608p16x16-221006-mr7",
        "M2D/0.7 ViT-B/16, self-supervised on AudioSet-2M (full pretraining checkpoint)",
    ),
    "m2d-vit-base-221006-mr7-enconly": _m2d(
        "m2d_vit_base-80x608p16x16-221006-mr7_enconly",
        "M2D/0.7 ViT-B/16, self-supervised on AudioSet-2M (encoder only)",
    ),
    "m2d-vit-base-220930-mr7-enconly": _m2d(
        "m2d_vit_base-80x608p16x16-220930-mr7_enconly",
        "M2D/0.7 ViT-B/16, self-supervised on AudioSet-2M, 2022-09-30 run (encoder only)",
    ),
    "m2d-clap-vit-base-240128": _m2d(
        "m2d_clap_vit_base-80x608p16x16-240128",
        "M2D-CLAP ViT-B/16 audio encoder, AudioSet-2M with captions (text side set aside)",
    ),
}


class M2D(Backbone, GridViT):
    """The M2D ViT encoder; see the module docstring."""

    name = "m2d"
    description = (
        "M2D ViT/16 encoder (Niizumi et al. 2023) on 80-bin log-mel; embedding = time mean of "
        "the frequency-stacked patch embeddings (3840 dims at base)"
    )
    pretrained = PRETRAINED
    sample_rate = SAMPLE_RATE
    time_axis = -1
    stem_prefixes = ("patch_embed.", "cls_token", "pos_embed")

    @dataclass
    class Config:
        size: Literal["tiny", "base"] = "tiny"
        """``base`` is the published ViT-B/16 (12 x 768, 12 heads)."""
        checkpoint: str = ""
        """A published M2D file, an encoder-only file or a harness backbone.pt."""
        input_frames: int = INPUT_FRAMES
        """Frames of the positional table (a chunk); 608 for the published weights."""
        norm_mean: float = NORM_MEAN
        """Log-mel mean; a checkpoint's ``norm_stats`` replaces it."""
        norm_std: float = NORM_STD
        drop_path: float = 0.0

        domains = domain_map(
            input_frames=at_least(16, "Frames of the positional table (a chunk)."),
            norm_mean=Domain(help="Log-mel mean (a checkpoint's norm_stats replaces it)."),
            norm_std=positive("Log-mel standard deviation."),
            drop_path=between(0, 1, "Stochastic depth rate.", open_high=True),
        )

        def __post_init__(self) -> None:
            if self.input_frames < PATCH or self.input_frames % PATCH:
                raise ValueError(
                    f"input_frames must be a positive multiple of {PATCH}, got {self.input_frames}"
                )
            if self.norm_std <= 0:
                raise ValueError(f"norm_std must be positive, got {self.norm_std}")
            if not 0.0 <= self.drop_path < 1.0:
                raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = SIZES[config.size]
        self.dim = spec.dim
        grid = (N_MELS // PATCH, config.input_frames // PATCH)
        self.embed_dim = spec.dim * grid[0]
        self.build_grid_vit(spec, grid, PATCH, config.drop_path)
        self.norm_stats = (config.norm_mean, config.norm_std)
        self.load_notes: list[str] = []
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """M2D's initialisation: the fixed sin-cos table, xavier-uniform patches and linears."""
        if self.pos_embed.is_meta:
            return
        self.pos_embed.copy_(sincos_pos_embed_2d(self.dim, self.grid)[None])
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @classmethod
    def describe_extra(cls) -> list[str]:
        return [
            "input: 16 kHz waveform -> log-mel [B, 1, 80, T] (50-8000 Hz, 10 ms hop), "
            f"16x16 patches, {INPUT_FRAMES}-frame chunks",
            *describe_vit_sizes(cls, SIZES, embedding_factor=N_MELS // PATCH),
        ]

    def frontend(self) -> nn.Module:
        return M2DMel(*self.norm_stats)

    # -- encoder ------------------------------------------------------------------

    def encode_chunk(self, x: Tensor) -> Tensor:
        """One chunk ``[B, 1, 80, t <= input_frames]`` -> ``[B, t / 16, 5 * dim]``."""
        tokens, rows, cols = self.encode_grid(x)
        x = tokens[:, 1:]
        return x.reshape(x.shape[0], rows, cols, self.dim).permute(0, 2, 1, 3).flatten(2)

    def forward(self, features: Tensor) -> Encoded:
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[2] != N_MELS:
            raise UsageError(
                f"m2d expects log-mel features [B, 1, {N_MELS}, T], got {list(features.shape)}"
            )
        pad = (-features.shape[-1]) % PATCH
        if pad:
            features = torch.nn.functional.pad(features, (0, pad))
        unit = self.grid[1] * PATCH
        chunks = [self.encode_chunk(c) for c in features.split(unit, dim=-1)]
        tokens = torch.cat(chunks, dim=1)
        return Encoded(embedding=tokens.mean(dim=1), tokens=tokens)

    # -- checkpoints --------------------------------------------------------------

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Strip the EVAR prefix, read ``norm_stats``, set aside all but the online encoder."""
        state = {k.removeprefix(EVAR_PREFIX): v for k, v in state_dict.items()}
        self.load_notes = []
        stats = state.pop("norm_stats", None)
        if stats is not None:
            mean, std = (float(v) for v in torch.as_tensor(stats).flatten()[:2])
            self.norm_stats = (mean, std)
            self.load_notes.append(
                f"norm_stats from the checkpoint: mean {mean:.4f}, std {std:.4f}"
            )
        aside = sorted(k for k in state if not k.startswith(ENCODER_PREFIXES))
        for key in aside:
            del state[key]
        if aside:
            self.load_notes.append(
                f"set aside {len(aside)} keys outside the online encoder (target, decoder, head)"
            )
        check_vit_size("m2d", self.config.size, state, SIZES)
        return state


@hookimpl
def register_backbones(register) -> None:
    register(M2D)
