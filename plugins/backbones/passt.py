"""PaSST: the Patchout faSt Spectrogram Transformer.

Paper: K. Koutini, J. Schlüter, H. Eghbal-zadeh, G. Widmer, "Efficient Training of
Audio Transformers with Patchout", Interspeech 2022 (arXiv:2110.05069).
Reference implementation: https://github.com/kkoutini/PaSST (``models/passt.py``,
``models/preprocess.py``), packaged as ``hear21passt``.

A ViT over a log-mel spectrogram: overlapping 16x16 patches with stride 10 on
128 mel bands, a class and a distillation token, separate frequency and time
positional embeddings (the time table is cropped for shorter input: at a random
offset in training, from the start in evaluation), and *patchout* during
training only: whole frequency rows and time columns of the patch grid
(structured) and single patches (unstructured) are dropped, which shortens the
sequence and regularises. The clip embedding is the mean of the two tokens after
the final norm. The transformer blocks are timm's (:mod:`harness.nn.layers`); attention runs
through PyTorch's fused ``scaled_dot_product_attention``.

Parameter names follow the published key layout (``cls_token``, ``dist_token``,
``new_pos_embed``, ``freq_new_pos_embed``, ``time_new_pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), and :meth:`PaSST.build_head` builds the published classifier
(``head.0`` LayerNorm, ``head.1`` Linear, ``head_dist``), so published checkpoints
such as ``passt-s-f128-p16-s10-ap.476-swa.pt`` load with
``--set backbone.checkpoint=PATH``.

Sizes (``--set backbone.size=...``; every size takes 128 mel bands, 12 frequency rows):

======  =====  =====  =====  ===================================  ==========
size    dim    depth  heads  time table (patches / frames / s)    parameters
======  =====  =====  =====  ===================================  ==========
tiny    96     3      3      100 / 1000 / 10 s                    0.37 M
small   384    12     6      99 / 998 / 10 s                      21.4 M
base    768    12     12     99 / 998 / 10 s (PaSST-S)            85.3 M
======  =====  =====  =====  ===================================  ==========
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    DataError,
    Encoded,
    Pretrained,
    UsageError,
    at_least,
    between,
    domain_map,
    non_negative,
)
from harness.nn.layers import vit_block
from harness.nn.mel import PasstMel
from harness.nn.state_dicts import block_count, check_size

__all__ = ["SIZES", "PaSST", "PasstHead", "PasstSize"]


# -- transformer --------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Overlapping patches: a strided convolution ``[B, 1, F, T] -> [B, D, F', T']``."""

    def __init__(self, dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class PasstHead(nn.Module):
    """PaSST's published classifier: ``head`` (LayerNorm + Linear) on the token mean.

    ``head_dist`` is kept so checkpoints keep their published layout; as in the
    reference implementation it does not enter the logits.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.head_dist = nn.Linear(dim, num_classes)
        for linear in (self.head[1], self.head_dist):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, encoded: Encoded) -> Tensor:
        return self.head(encoded.embedding)


# -- sizes --------------------------------------------------------------------


@dataclass(frozen=True)
class PasstSize:
    embed_dim: int
    depth: int
    num_heads: int
    input_tdim: int
    """Spectrogram frames the time positional table covers."""


SIZES: dict[str, PasstSize] = {
    "tiny": PasstSize(embed_dim=96, depth=3, num_heads=3, input_tdim=1000),
    "small": PasstSize(embed_dim=384, depth=12, num_heads=6, input_tdim=998),
    "base": PasstSize(embed_dim=768, depth=12, num_heads=12, input_tdim=998),
}

N_MELS = 128
PATCH_SIZE = 16
PATCH_STRIDE = 10
SAMPLE_RATE = 32000
HOP_LENGTH = 320


def grid_length(frames: int) -> int:
    """Patches along an axis of ``frames`` bins (the published ``frames // stride``)."""
    return frames // PATCH_STRIDE


# -- backbone -----------------------------------------------------------------


# -- published checkpoints (--set backbone.pretrained=NAME; harness.registry.pretrained) -----------

# Releases of kkoutini/PaSST that fit this module (stride 10, 128 mel bins); no sha256 is
# published, so the first download's hash is recorded and checked on every later use.
_PASST_RELEASES = "https://github.com/kkoutini/PaSST/releases/download"
PRETRAINED = {
    "passt-s-ap476-swa": Pretrained(
        f"{_PASST_RELEASES}/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
        layout="passt",
        config={"size": "base"},
        page="https://github.com/kkoutini/PaSST/releases/tag/v0.0.1-audioset",
        description="PaSST-S, AudioSet, 10 s, SWA (mAP .476)",
    ),
    "passt-s-kd-ap486": Pretrained(
        f"{_PASST_RELEASES}/v.0.0.9/passt-s-kd-ap.486.pt",
        layout="passt",
        config={"size": "base"},
        page="https://github.com/kkoutini/PaSST/releases/tag/v.0.0.9",
        description="PaSST-S with knowledge distillation, AudioSet, 10 s (mAP .486)",
    ),
    "passt-s-20s-ap474-swa": Pretrained(
        f"{_PASST_RELEASES}/v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt",
        layout="passt",
        config={"size": "base", "input_tdim": 2000},
        page="https://github.com/kkoutini/PaSST/releases/tag/v0.0.5",
        description="PaSST-S, AudioSet, 20 s clips, SWA (mAP .474)",
    ),
    "passt-s-30s-ap473-swa": Pretrained(
        f"{_PASST_RELEASES}/v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt",
        layout="passt",
        config={"size": "base", "input_tdim": 3000},
        page="https://github.com/kkoutini/PaSST/releases/tag/v0.0.5",
        description="PaSST-S, AudioSet, 30 s clips, SWA (mAP .473)",
    ),
}


class PaSST(Backbone):
    """PaSST (Koutini et al. 2022) with its own mel front-end; see the module docstring."""

    name = "passt"
    description = "PaSST spectrogram transformer with patchout (Koutini et al. 2022), 32 kHz mel"
    pretrained = PRETRAINED
    sample_rate = SAMPLE_RATE
    time_axis = -1
    stem_prefixes = (
        "cls_token",
        "dist_token",
        "new_pos_embed",
        "freq_new_pos_embed",
        "time_new_pos_embed",
        "patch_embed.",
    )
    head_prefixes: ClassVar[tuple[str, ...]] = ("head.", "head_dist.")
    """Checkpoint keys of the classifier that :meth:`build_head` builds
    (:mod:`harness.registry.checkpoints`)."""

    @dataclass
    class Config:
        size: Literal["tiny", "small", "base"] = "tiny"
        checkpoint: str = ""
        """State dict in the published PaSST layout, read with ``torch.load(weights_only=True)``."""
        s_patchout_f: int = 6
        """Frequency rows of the patch grid dropped in training (of 12; 6 in the device paper)."""
        s_patchout_t: int = 0
        """Time columns of the patch grid dropped in training."""
        u_patchout: int = 0
        """Single patches dropped in training (unstructured patchout)."""
        input_tdim: int = 0
        """Frames covered by the time positional table; 0 takes the size's default."""
        drop_path_rate: float = 0.0
        fmin_aug_range: int = 1
        """Training jitter of the mel range's lower edge in Hz (1: none)."""
        fmax_aug_range: int = 1000
        """Training jitter of the upper edge in Hz (1000: +-500 Hz, as in the device paper)."""

        domains = domain_map(
            s_patchout_f=non_negative("Frequency rows dropped per training batch (Patchout)."),
            s_patchout_t=non_negative("Time columns dropped per training batch (Patchout)."),
            u_patchout=non_negative("Random patches dropped per training example."),
            input_tdim=non_negative("Input frames (0: the size's default)."),
            drop_path_rate=between(0, 1, "Stochastic-depth rate.", open_high=True),
            fmin_aug_range=at_least(1, "Jitter of the mel filterbank's lowest edge (1: none)."),
            fmax_aug_range=at_least(1, "Jitter of the mel filterbank's highest edge (1: none)."),
        )

        def __post_init__(self) -> None:
            for key in ("s_patchout_f", "s_patchout_t", "u_patchout", "input_tdim"):
                if getattr(self, key) < 0:
                    raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
            if self.s_patchout_f >= grid_length(N_MELS):
                raise ValueError(
                    f"s_patchout_f must be below {grid_length(N_MELS)} frequency rows, "
                    f"got {self.s_patchout_f}"
                )
            if self.input_tdim and self.input_tdim < PATCH_SIZE:
                raise ValueError(
                    f"input_tdim must be 0 or at least {PATCH_SIZE}, got {self.input_tdim}"
                )
            if not 0.0 <= self.drop_path_rate < 1.0:
                raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
            if self.fmin_aug_range < 1 or self.fmax_aug_range < 1:
                raise ValueError("fmin_aug_range and fmax_aug_range must be >= 1 (1: no jitter)")

    def __init__(self, config: Config | None = None) -> None:
        config = config if config is not None else self.Config()
        super().__init__(config)
        size = SIZES[config.size]
        dim = size.embed_dim
        self.embed_dim = dim
        self.input_tdim = config.input_tdim or size.input_tdim
        self.patch_embed = PatchEmbed(dim, PATCH_SIZE, PATCH_STRIDE)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid_length(N_MELS), 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid_length(self.input_tdim)))
        rates = [config.drop_path_rate * i / max(size.depth - 1, 1) for i in range(size.depth)]
        self.blocks = nn.ModuleList(vit_block(dim, size.num_heads, 4.0, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pretrained_head_state: dict[str, Tensor] | None = None
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    def reset_parameters(self) -> None:
        """The published initialisation: truncated normal (std 0.02) for tokens and linears."""
        for param in (
            self.new_pos_embed,
            self.freq_new_pos_embed,
            self.time_new_pos_embed,
            self.dist_token,
            self.cls_token,
        ):
            nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def frontend(self) -> nn.Module:
        return PasstMel(
            sample_rate=SAMPLE_RATE,
            hop_length=HOP_LENGTH,
            n_mels=N_MELS,
            fmin_aug_range=self.config.fmin_aug_range,
            fmax_aug_range=self.config.fmax_aug_range,
        )

    # -- forward ----------------------------------------------------------------

    def forward(self, features: Tensor) -> Encoded:
        """Log-mel ``[B, 1, 128, T]`` -> token mean ``[B, D]`` and all tokens ``[B, N, D]``."""
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[2] != N_MELS:
            raise UsageError(
                f"passt expects log-mel features [B, 1, {N_MELS}, T], got {list(features.shape)}"
            )
        x = self.patch_embed(features)
        x = self.add_positions(x)
        x = self.structured_patchout(x)
        x = x.flatten(2).transpose(1, 2)
        x = self.unstructured_patchout(x)
        batch = x.shape[0]
        cls = self.cls_token.expand(batch, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(batch, -1, -1) + self.new_pos_embed[:, 1:]
        x = torch.cat((cls, dist, x), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return Encoded(embedding=(x[:, 0] + x[:, 1]) / 2, tokens=x)

    def add_positions(self, x: Tensor) -> Tensor:
        """Add frequency and time positions; crop the time table (or the input, if longer)."""
        table = self.time_new_pos_embed
        steps, available = x.shape[-1], table.shape[-1]
        if steps < available:
            offset = torch.randint(1 + available - steps, (1,)).item() if self.training else 0
            table = table[..., offset : offset + steps]
        elif steps > available:
            warnings.warn(
                f"passt: input has {steps} time patches but the time table covers {available} "
                f"(input_tdim {self.input_tdim}); the input is cut",
                stacklevel=3,
            )
            x = x[..., :available]
        return x + table + self.freq_new_pos_embed

    def structured_patchout(self, x: Tensor) -> Tensor:
        """Drop random time columns and frequency rows of the patch grid (training only)."""
        if not self.training:
            return x
        rows, cols = x.shape[2], x.shape[3]
        if self.config.s_patchout_t:
            if self.config.s_patchout_t >= cols:
                drop = self.config.s_patchout_t
                raise UsageError(f"backbone.s_patchout_t={drop} drops all {cols} time patches")
            x = x.index_select(3, keep_indices(cols, self.config.s_patchout_t, x.device))
        if self.config.s_patchout_f:
            x = x.index_select(2, keep_indices(rows, self.config.s_patchout_f, x.device))
        return x

    def unstructured_patchout(self, x: Tensor) -> Tensor:
        """Drop random single patches of the flattened sequence (training only)."""
        if not self.training or not self.config.u_patchout:
            return x
        length = x.shape[1]
        drop = self.config.u_patchout
        if drop >= length:
            raise UsageError(f"backbone.u_patchout={drop} drops all {length} patches")
        return x.index_select(1, keep_indices(length, drop, x.device))

    # -- checkpoints ------------------------------------------------------------

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Older published layouts to the current one (called by harness.registry.checkpoints).

        A 2-D ``patch_embed.proj.weight`` (linear patchify) becomes a convolution; an
        ImageNet ViT/DeiT checkpoint (``pos_embed``, RGB patch filters) is converted as
        the reference does for initialisation: filters summed over colour, the position
        grid resized bicubically and averaged into frequency and time tables, and the
        ImageNet classifier dropped.
        """
        state = dict(state)
        proj = state.get("patch_embed.proj.weight")
        if proj is not None and proj.ndim == 2:
            proj = proj.reshape(proj.shape[0], -1, PATCH_SIZE, PATCH_SIZE)
        if proj is not None and proj.ndim == 4 and proj.shape[1] == 3:
            proj = proj.float().sum(dim=1, keepdim=True).to(proj.dtype)
        if proj is not None:
            state["patch_embed.proj.weight"] = proj
        if "pos_embed" in state and "time_new_pos_embed" not in state:
            grid = (self.freq_new_pos_embed.shape[2], self.time_new_pos_embed.shape[3])
            tokens, freq, time = image_positions_to_passt(state.pop("pos_embed"), grid)
            state.update(new_pos_embed=tokens, freq_new_pos_embed=freq, time_new_pos_embed=time)
            state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
        sizes = {name: (s.embed_dim, s.depth) for name, s in SIZES.items()}
        found = (proj.shape[0], block_count(state)) if proj is not None else None
        if found in sizes.values():  # another size: name it (other shapes: the key report)
            check_size("passt", self.config.size, found, sizes)
        return state

    # -- heads and description ---------------------------------------------------

    def build_head(self, num_classes: int) -> nn.Module:
        """The published head; it starts from a loaded checkpoint's head when the shapes fit."""
        head = PasstHead(self.embed_dim, num_classes)
        state = self.pretrained_head_state
        if state is not None:
            fresh = head.state_dict()
            fits = state.keys() == fresh.keys()
            if fits and all(state[k].shape == fresh[k].shape for k in fresh):
                head.load_state_dict(state)
        return head.to(self.cls_token.device)

    @classmethod
    def describe_extra(cls) -> list[str]:
        lines = [
            f"input: mono {SAMPLE_RATE // 1000} kHz waveform -> log-mel [B, 1, {N_MELS}, T], "
            f"T = 1 + (samples - 1) // {HOP_LENGTH} (100 frames per second)"
        ]
        for name, size in SIZES.items():
            params = count_parameters(cls, name)
            seconds = size.input_tdim * HOP_LENGTH / SAMPLE_RATE
            lines.append(
                f"size {name}: {size.depth} layers x {size.embed_dim} dims, "
                f"{size.num_heads} heads, {params / 1e6:.2f}M parameters, "
                f"embedding [B, {size.embed_dim}], "
                f"time table {grid_length(size.input_tdim)} patches ({seconds:.0f} s)"
            )
        return lines


def keep_indices(total: int, drop: int, device: torch.device) -> Tensor:
    """Sorted random indices of the ``total - drop`` kept entries (the reference's draw)."""
    return torch.randperm(total)[: total - drop].sort().values.to(device)


def image_positions_to_passt(
    pos_embed: Tensor, grid: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """A ViT's ``[1, 2 + g*g, D]`` positions -> token, frequency and time tables."""
    tokens, patches = pos_embed[:, :2], pos_embed[0, 2:]
    side = math.isqrt(patches.shape[0])
    if side * side != patches.shape[0]:
        raise DataError(f"pos_embed with {patches.shape[0]} patch positions is not a square grid")
    image = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=grid, mode="bicubic", align_corners=False)
    return tokens, image.mean(dim=3, keepdim=True), image.mean(dim=2, keepdim=True)


def count_parameters(cls: type[PaSST], size: str) -> int:
    """Parameters of the backbone at ``size``, counted without allocating weights."""
    with torch.device("meta"):
        model = cls(cls.Config(size=size))
    return sum(p.numel() for p in model.parameters())


@hookimpl
def register_backbones(register) -> None:
    register(PaSST)
