"""MaskSpec: the ViT encoder of "Masked Spectrogram Prediction for Self-Supervised Audio
Pre-Training".

Paper: D. Chong, H. Wang, P. Zhou, Q. Zeng, ICASSP 2023 (arXiv:2204.12768). Reference code:
WangHelin1997/MaskSpec (``models/models_vit.py``, ``models/models_mae.py``); the encoder is a timm
``VisionTransformer`` (``vit_base_patch16``: 16x16 patches of a ``128 x 1000`` spectrogram,
qkv bias, LayerNorm eps 1e-6, class token, learned positional table of ``1 + 8 * 62`` entries).

Front-end (``AugmentMelSTFT`` then ``mel_forward``): PaSST's 32 kHz log-mel (pre-emphasis,
800-sample Hann window, 320 hop, 1024-point FFT, 128 kaldi mel bands, ``(log(x + 1e-5) + 4.5) / 5``;
in training the band edges are jittered by up to 10 Hz at the bottom and +-1000 Hz at the top, the
reference's ViT defaults) and then each band standardised with the published AudioSet statistics
(``audioset/mean_std_128.npy``: ``frame_mean``, ``frame_std``). Features ``[B, 1, 128, T]``.

Encoder (``forward_features``): input shorter than the 1000-frame table is stretched to 1000
frames by bicubic interpolation (``reshape_wav2img``, ``align_corners=True``); longer input is
cut with a warning. Tokens are frequency-major (``f * 62 + t``). The clip embedding is the class
token after the final ``norm`` (the reference's ``global_pool=False``); ``pool="mean"`` takes the
mean of the normed patch tokens instead. The reference's SpecAugment masks (``freqm=48``,
``timem=192``) and mixup are training augmentations here (``specaugment``, methods), not part
of the backbone.

Checkpoints: the published pretraining file (``{'model': ...}``: encoder keys plus ``decoder_*``
and ``mask_token``, set aside) and fine-tuned files (``head``: kept for :meth:`build_head` when
the class count fits).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import Backbone, Encoded, UsageError, between, domain_map
from harness.nn.layers import GridViT, VitSize, check_vit_size, describe_vit_sizes
from harness.nn.mel import PasstMel

__all__ = ["FRAME_MEAN", "FRAME_STD", "SIZES", "MaskSpec", "MaskSpecMel"]

SAMPLE_RATE = 32000
N_MELS = 128
PATCH = 16
TARGET_FRAMES = 1000
SET_ASIDE_PREFIXES = ("decoder_", "mask_token", "mel.", "frame_mean", "frame_std")

# Per-band AudioSet statistics of the published front-end (audioset/mean_std_128.npy).
# fmt: off
FRAME_MEAN = (
    -0.65901, -0.62685, -0.43423, -0.48378, -0.29556, -0.32796, -0.28706, -0.19543, -0.21645,
    -0.17386, -0.11439, -0.12045, -0.10035, -0.08008, -0.06732, -0.05239, -0.03314, -0.01592,
    -0.00548, 0.00415, 0.01346, 0.02429, 0.0347, 0.04605, 0.05315, 0.06169, 0.06816, 0.06995,
    0.07183, 0.07584, 0.07793, 0.07969, 0.08343, 0.08494, 0.08555, 0.09256, 0.09931, 0.101,
    0.10382, 0.11145, 0.12061, 0.12018, 0.13318, 0.14418, 0.14876, 0.15287, 0.16544, 0.17832,
    0.18659, 0.18893, 0.19692, 0.20725, 0.20649, 0.20688, 0.21517, 0.22375, 0.22782, 0.23312,
    0.24112, 0.25143, 0.26068, 0.26325, 0.26576, 0.27276, 0.27768, 0.27462, 0.27143, 0.27345,
    0.28067, 0.28753, 0.2913, 0.29495, 0.29825, 0.29931, 0.29825, 0.29237, 0.28627, 0.27962,
    0.27008, 0.2558, 0.24214, 0.2319, 0.22541, 0.22019, 0.21389, 0.20564, 0.19648, 0.1899,
    0.18362, 0.17756, 0.17092, 0.16283, 0.1547, 0.14639, 0.13914, 0.13436, 0.12981, 0.12401,
    0.11962, 0.11261, 0.10375, 0.09148, 0.07743, 0.06463, 0.05193, 0.04046, 0.02989, 0.01694,
    0.00152, -0.01642, -0.03668, -0.0585, -0.0873, -0.12393, -0.20714, -0.42231, -0.70016,
    -0.95217, -1.1822, -1.35167, -1.39899, -1.39986, -1.39999, -1.40002, -1.40003, -1.40007,
    -1.40002, -1.39999,
)
FRAME_STD = (
    0.68003, 0.69138, 0.73901, 0.70646, 0.73909, 0.69654, 0.70002, 0.70238, 0.67885, 0.68534,
    0.69417, 0.68102, 0.67748, 0.68675, 0.69005, 0.68459, 0.68307, 0.68688, 0.69223, 0.69512,
    0.697, 0.69934, 0.70163, 0.7043, 0.70768, 0.7118, 0.71586, 0.7173, 0.71636, 0.7167, 0.71619,
    0.71305, 0.71335, 0.71396, 0.71183, 0.71422, 0.71727, 0.7166, 0.71662, 0.71909, 0.72099,
    0.71915, 0.72046, 0.72111, 0.71853, 0.71884, 0.72167, 0.72271, 0.72291, 0.72268, 0.72497,
    0.72639, 0.72545, 0.72566, 0.72811, 0.72869, 0.72891, 0.73152, 0.73376, 0.73658, 0.73793,
    0.74001, 0.74102, 0.74389, 0.74454, 0.74548, 0.74558, 0.74684, 0.74781, 0.74842, 0.74911,
    0.75057, 0.75298, 0.75471, 0.75621, 0.75805, 0.75986, 0.76353, 0.76899, 0.77744, 0.78582,
    0.79304, 0.79815, 0.80306, 0.80864, 0.8158, 0.82248, 0.82896, 0.83279, 0.83642, 0.83956,
    0.84612, 0.85422, 0.86468, 0.87348, 0.87862, 0.88211, 0.88586, 0.88851, 0.89265, 0.8978,
    0.90322, 0.91068, 0.91636, 0.92119, 0.92604, 0.92957, 0.93385, 0.93817, 0.94063, 0.94292,
    0.94585, 0.95363, 0.96129, 0.96359, 0.95445, 0.90867, 0.78215, 0.55623, 0.23219, 0.04881,
    0.04577, 0.04488, 0.04419, 0.04364, 0.04321, 0.04291, 0.04271,
)
# fmt: on


SIZES: dict[str, VitSize] = {
    "tiny": VitSize(dim=48, depth=2, heads=3),
    "base": VitSize(dim=768, depth=12, heads=12),
}


class MaskSpecMel(nn.Module):
    """PaSST's log-mel with MaskSpec's band jitter, then per-band standardisation."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = PasstMel(sample_rate=SAMPLE_RATE, fmin_aug_range=10, fmax_aug_range=2000)
        self.register_buffer("frame_mean", torch.tensor(FRAME_MEAN)[:, None], persistent=False)
        self.register_buffer("frame_std", torch.tensor(FRAME_STD)[:, None], persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        return (self.mel(wave) - self.frame_mean) / self.frame_std


class LinearHead(nn.Module):
    """The fine-tuned ``head``: one linear layer on the clip embedding."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, encoded: Encoded) -> Tensor:
        return self.head(encoded.embedding)


class MaskSpec(Backbone, GridViT):
    """The MaskSpec ViT encoder; see the module docstring."""

    name = "maskspec"
    description = (
        "MaskSpec ViT/16 encoder (Chong et al. 2023) on PaSST's 32 kHz log-mel with per-band "
        "AudioSet normalisation, stretched to 1000 frames; class-token embedding"
    )
    sample_rate = SAMPLE_RATE
    time_axis = -1
    stem_prefixes = ("patch_embed.", "cls_token", "pos_embed")
    head_prefixes: ClassVar[tuple[str, ...]] = ("head.",)

    @dataclass
    class Config:
        size: Literal["tiny", "base"] = "tiny"
        """``base`` is the published ``vit_base_patch16`` (12 x 768, 12 heads)."""
        checkpoint: str = ""
        """A published MaskSpec file (pretrained or fine-tuned) or a harness backbone.pt."""
        pool: Literal["cls", "mean"] = "cls"
        """Clip embedding: the class token (reference default) or the mean of patch tokens."""
        stretch: bool = True
        """Stretch shorter input to 1000 frames as the reference does (False: crop the table)."""
        drop_path: float = 0.0

        domains = domain_map(drop_path=between(0, 1, "Stochastic depth rate.", open_high=True))

        def __post_init__(self) -> None:
            if not 0.0 <= self.drop_path < 1.0:
                raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = SIZES[config.size]
        self.embed_dim = spec.dim
        grid = (N_MELS // PATCH, TARGET_FRAMES // PATCH)
        self.build_grid_vit(spec, grid, PATCH, config.drop_path)
        self.pretrained_head_state: dict[str, Tensor] | None = None
        self.load_notes: list[str] = []
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """timm's ViT initialisation: truncated normal (0.02) tokens, positions and linears."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @classmethod
    def describe_extra(cls) -> list[str]:
        return [
            "input: 32 kHz waveform -> PaSST log-mel [B, 1, 128, T], per-band normalised, "
            f"stretched to {TARGET_FRAMES} frames, 16x16 patches (8 x 62)",
            *describe_vit_sizes(cls, SIZES),
        ]

    def frontend(self) -> nn.Module:
        return MaskSpecMel()

    def build_head(self, num_classes: int) -> nn.Module:
        head = LinearHead(self.embed_dim, num_classes)
        state = self.pretrained_head_state
        if state is not None:
            fresh = head.state_dict()
            if all(k in state and state[k].shape == v.shape for k, v in fresh.items()):
                head.load_state_dict(state)
        return head.to(self.cls_token.device)

    def forward(self, features: Tensor) -> Encoded:
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[2] != N_MELS:
            raise UsageError(
                f"maskspec expects log-mel features [B, 1, {N_MELS}, T], got {list(features.shape)}"
            )
        frames = features.shape[-1]
        if frames > TARGET_FRAMES:
            warnings.warn(
                f"maskspec: {frames} frames cut to the table's {TARGET_FRAMES}", stacklevel=2
            )
            features = features[..., :TARGET_FRAMES]
        elif frames < TARGET_FRAMES and self.config.stretch:
            features = F.interpolate(
                features, (N_MELS, TARGET_FRAMES), mode="bicubic", align_corners=True
            )
        if features.shape[-1] < PATCH:
            raise UsageError(f"maskspec needs at least {PATCH} frames, got {frames}")
        x, _, _ = self.encode_grid(features)
        embedding = x[:, 0] if self.config.pool == "cls" else x[:, 1:].mean(dim=1)
        return Encoded(embedding=embedding, tokens=x)

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Set aside the MAE decoder; refuse another size with a hint naming the right one."""
        state = dict(state_dict)
        aside = sorted(k for k in state if k.startswith(SET_ASIDE_PREFIXES))
        for key in aside:
            del state[key]
        self.load_notes = [f"set aside {len(aside)} MAE decoder keys"] if aside else []
        check_vit_size("maskspec", self.config.size, state, SIZES)
        return state


@hookimpl
def register_backbones(register) -> None:
    register(MaskSpec)
