"""AudioMAE: the ViT-B/16 encoder of "Masked Autoencoders that Listen" on kaldi fbank.

Huang, Xu, Li, Baevski, Auli, Galuba, Metze, Feichtenhofer (NeurIPS 2022); reference code
facebookresearch/AudioMAE (``models_vit.py``, ``models_mae.py``, ``dataset.py``).

Front-end (as AudioMAE's ``dataset.py``): the clip's mean is removed, then kaldi fbank at 16 kHz
(128 mel bins, 25 ms hanning window, 10 ms shift, no dither, no energy), time first ``[T, 128]``,
zero-padded or cropped to the target length, then ``(x - mean) / (2 * std)`` with the published
AudioSet statistics. :class:`KaldiFbank` computes the fbank for a whole batch at once and matches
``torchaudio.compliance.kaldi.fbank`` called per clip.

Encoder (as AudioMAE's fine-tuning and linear-probe model): a 16x16 stride-16 patch embedding,
a fixed 2-D sin-cos positional embedding (time-major token order), a class token, pre-norm ViT
blocks, and the clip embedding = ``fc_norm`` of the mean of the patch tokens (class token excluded).
:attr:`Encoded.tokens` are all tokens (class token first) after ``norm``, the encoder's final norm
of MAE pretraining.

Input length: ``target_length`` frames, or (0, the default) the frame count rounded up to a power
of two, which gives AudioMAE's own lengths for 1 s (128), 5 s (512) and 10 s (1024) clips. The
positional table covers ``max(1024, target_length)`` frames; shorter inputs use its first time rows,
which equals the sin-cos table of the shorter grid.

Masked-encoder contract (what the ``mae`` method relies on; another backbone can offer it too):

* ``forward_masked(features, mask_ratio) -> MaskedEncoding`` runs the encoder on a random subset
  of ``int(N * (1 - mask_ratio))`` patches per clip and returns the latent (class token first,
  after ``norm``), the binary mask ``[B, N]`` (1 = hidden) and ``ids_restore`` ``[B, N]``;
* ``patchify(features) -> [B, N, patch_size**2]`` in the same patch order as the tokens;
* ``patch_size`` and ``mae_decoder`` (the default decoder dims, depth and heads for this size).

Checkpoints (``--set backbone.checkpoint=PATH``, loaded by :mod:`harness.registry.checkpoints`): the
published pretraining file (``{'model': ...}``: encoder keys ``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N...``, ``norm``, plus ``decoder_*`` and ``mask_token``),
fine-tuned files (``fc_norm``, ``head``), and this backbone's own ``backbone.pt``.
:meth:`AudioMAE.adapt_state_dict` sets the decoder and mask-token keys aside; a checkpoint without
``fc_norm`` (pretraining) or without ``norm`` (fine-tuned) leaves that LayerNorm at its initial
values, as AudioMAE's fine-tuning does. A fine-tuned ``head`` is kept for
:meth:`AudioMAE.build_head` when it fits the task's class count
(see :mod:`harness.registry.checkpoints`).
Positions: the official AudioMAE builds its fixed sin-cos table for the grid ``(8, T / 16)``
(``PatchEmbed_org.patch_hw``) and adds it to time-major tokens; ``pos_layout="official"``
(default) builds that table, so encoders move between this backbone and the official code either
way; ``"time-major"`` is the token grid's own table (an option). A checkpoint's ``pos_embed`` that
is a sin-cos table of either layout sets the layout, and for another grid (e.g.
``target_length=2048`` loading a 1024-frame file) is recomputed for this grid (exact: the table is
a fixed function of the grid; AudioMAE trains it neither in pretraining nor in fine-tuning); any
other table of another shape is reported as a shape mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import hookimpl
from harness.api import (
    Backbone,
    DataError,
    Domain,
    Encoded,
    MaskedEncoding,
    Pretrained,
    UsageError,
    at_least,
    between,
    domain_map,
    positive,
)
from harness.nn.fbank import KaldiFbank as Fbank
from harness.nn.layers import (
    POS_LAYOUTS,
    PatchEmbed,
    audiomae_sincos,
    random_masking,
    sincos_pos_embed_2d,
    vit_block,
)
from harness.nn.layers import init_mae_weights as init_vit_weights

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "SIZES",
    "AudioMAE",
    "KaldiFbank",
    "MaskedEncoding",
    "init_vit_weights",
    "random_masking",
    "sincos_pos_embed_2d",
]

SAMPLE_RATE = 16_000
MEL_BINS = 128
PATCH = 16
MAX_FRAMES = 1024
"""AudioMAE's AudioSet input length (10.24 s); the published positional table covers it."""
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
LN_EPS = 1e-6
SET_ASIDE_PREFIXES = ("decoder_", "mask_token")
"""Checkpoint keys of the MAE decoder, which the encoder does not use."""
FRESH_WHEN_ABSENT = ("norm.", "fc_norm.")


@dataclass(frozen=True)
class Size:
    """One encoder size: embedding dims, blocks and attention heads."""

    dim: int
    depth: int
    heads: int
    decoder: tuple[int, int, int]
    """MAE decoder paired with this encoder: dims, depth, heads."""

    def num_params(self) -> int:
        """Parameters of the encoder (patch embedding, class token, blocks, two norms)."""
        d = self.dim
        block = 12 * d * d + 13 * d
        return PATCH * PATCH * d + d + d + self.depth * block + 4 * d


SIZES: dict[str, Size] = {
    "tiny": Size(dim=96, depth=4, heads=3, decoder=(64, 2, 2)),
    "small": Size(dim=384, depth=12, heads=6, decoder=(512, 8, 16)),
    "base": Size(dim=768, depth=12, heads=12, decoder=(512, 8, 16)),
}


# -- positions and masking -----------------------------------------------------


def keep_random(x: Tensor, dim: int, keep: int) -> Tensor:
    """``keep`` random entries, in order, along ``dim`` of ``x`` ``[B, rows, cols, D]`` per clip."""
    ids = torch.rand(x.shape[0], x.shape[dim], device=x.device).argsort(dim=1)[:, :keep]
    ids = ids.sort(dim=1).values
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = keep
    index = ids.reshape(shape).expand(*[keep if i == dim else s for i, s in enumerate(x.shape)])
    return x.gather(dim, index)


# -- modules --------------------------------------------------------------------


class KaldiFbank(nn.Module):
    """Waveforms ``[B, S]`` at 16 kHz -> normalized fbank ``[B, 1, T, 128]`` (time first).

    Equal to ``torchaudio.compliance.kaldi.fbank(wave - wave.mean(), htk_compat=True,
    sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128,
    dither=0.0, frame_shift=10)`` per clip, computed for the whole batch by
    :class:`harness.nn.fbank.KaldiFbank`.
    """

    def __init__(
        self,
        target_length: int = 0,
        max_frames: int = MAX_FRAMES,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
    ) -> None:
        super().__init__()
        self.target_length = target_length
        self.max_frames = max_frames
        self.mean = mean
        self.std = std
        self.kaldi = Fbank(SAMPLE_RATE, MEL_BINS, window="hanning", pad_short=True)

    def frames_for(self, num_frames: int) -> int:
        """Output length: ``target_length``, or ``num_frames`` rounded up to a power of two."""
        if self.target_length:
            return self.target_length
        return min(self.max_frames, max(PATCH, 1 << max(0, num_frames - 1).bit_length()))

    def fbank(self, wave: Tensor) -> Tensor:
        """Log-mel fbank ``[B, M, 128]`` of the clips with their mean removed."""
        wave = wave.float()
        return self.kaldi(wave - wave.mean(dim=-1, keepdim=True))

    def forward(self, wave: Tensor) -> Tensor:
        fbank = self.fbank(wave)
        length = self.frames_for(fbank.shape[1])
        if fbank.shape[1] < length:
            fbank = F.pad(fbank, (0, 0, 0, length - fbank.shape[1]))
        fbank = fbank[:, :length]
        return ((fbank - self.mean) / (2 * self.std)).unsqueeze(1)


class LinearHead(nn.Module):
    """AudioMAE's classifier ``head``: one linear layer on the ``fc_norm`` embedding."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, encoded: Encoded) -> Tensor:
        return self.head(encoded.embedding)


# -- the backbone -------------------------------------------------------------


# -- published checkpoints (--set backbone.pretrained=NAME; harness.registry.pretrained) -----------

# facebookresearch/AudioMAE README: the pre-trained base encoder on Google Drive; no sha256
# is published, so the first download's hash is recorded and checked on every later use.
# Drive may answer a large file with a confirmation page: the error then names the file to
# place by hand.
PRETRAINED = {
    "audiomae-base-as2m": Pretrained(
        "https://drive.usercontent.google.com/download?id=1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu"
        "&export=download&confirm=t&name=/pretrained.pth",
        layout="audiomae",
        config={"size": "base"},
        page="https://drive.google.com/file/d/1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu/view",
        description="AudioMAE ViT-B/16, self-supervised on AudioSet-2M (pretrained.pth)",
    ),
}


class AudioMAE(Backbone):
    """The AudioMAE ViT encoder with global average pooling and ``fc_norm``."""

    name = "audiomae"
    description = "AudioMAE ViT/16 encoder on kaldi fbank (Huang et al. 2022), mean pool + fc_norm."
    pretrained = PRETRAINED
    sample_rate = SAMPLE_RATE
    time_axis = -2
    stem_prefixes = ("patch_embed.", "cls_token", "pos_embed")
    patch_size = PATCH
    head_prefixes: ClassVar[tuple[str, ...]] = ("head.",)
    """A fine-tuned checkpoint's classifier, which :meth:`build_head` reuses when it fits."""

    @dataclass
    class Config:
        size: Literal["tiny", "small", "base"] = "tiny"
        checkpoint: str = ""
        """Published AudioMAE file or a run's backbone.pt (empty: MAE initialisation)."""
        target_length: int = 0
        """Fbank frames per clip (AudioMAE: 1024 for 10 s); 0: frames rounded up to a power of 2."""
        mask_t_prob: float = 0.0
        """Training only: share of time rows of patches dropped (AudioMAE fine-tuning: 0.2)."""
        mask_f_prob: float = 0.0
        """Training only: share of frequency columns of patches dropped (AudioMAE: 0.2)."""
        drop_path: float = 0.0
        """Stochastic depth at the top block (AudioMAE fine-tuning: 0.1)."""
        norm_mean: float = AUDIOSET_MEAN
        norm_std: float = AUDIOSET_STD
        pos_layout: Literal["official", "time-major"] = "official"
        """Sin-cos table order: the official AudioMAE's ``(8, T / 16)`` table (default, what the
        published encoders were trained with) or the token grid's own; a loaded checkpoint's
        table sets it."""

        domains = domain_map(
            target_length=at_least(0, "Frames (0: the size's default; else a multiple of 16)."),
            mask_t_prob=between(0, 1, "Share of time patches masked.", open_high=True),
            mask_f_prob=between(0, 1, "Share of frequency patches masked.", open_high=True),
            drop_path=between(0, 1, "Stochastic-depth rate.", open_high=True),
            norm_mean=Domain(help="Mean of the fbank normalisation."),
            norm_std=positive("Standard deviation of the fbank normalisation."),
        )

        def __post_init__(self) -> None:
            if self.target_length < 0 or self.target_length % PATCH:
                raise ValueError(
                    f"target_length must be 0 or a positive multiple of {PATCH}, "
                    f"got {self.target_length}"
                )
            for name in ("mask_t_prob", "mask_f_prob", "drop_path"):
                if not 0.0 <= getattr(self, name) < 1.0:
                    raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
            if self.norm_std <= 0:
                raise ValueError(f"norm_std must be positive, got {self.norm_std}")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = SIZES[config.size]
        self.embed_dim = spec.dim
        self.mae_decoder = spec.decoder
        self.max_frames = max(MAX_FRAMES, config.target_length)
        self.max_grid = (self.max_frames // PATCH, MEL_BINS // PATCH)
        self.patch_embed = PatchEmbed(spec.dim, PATCH, flatten=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.pos_layout = config.pos_layout
        table = audiomae_sincos(spec.dim, self.max_grid, self.pos_layout)
        self.register_buffer("pos_embed", table[None])
        self._tables: dict[tuple[int, str, torch.device], Tensor] = {}
        rates = torch.linspace(0, config.drop_path, spec.depth).tolist()
        self.blocks = nn.ModuleList(vit_block(spec.dim, spec.heads, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(spec.dim, eps=LN_EPS)
        self.fc_norm = nn.LayerNorm(spec.dim, eps=LN_EPS)
        self.set_aside: list[str] = []
        """Checkpoint keys :meth:`adapt_state_dict` dropped (the MAE decoder)."""
        self.load_notes: list[str] = []
        """What :meth:`adapt_state_dict` changed, for the run log."""
        self.pretrained_head_state: dict[str, Tensor] | None = None
        self.reset_parameters()

    def checkpoint_source(self) -> str:
        return self.config.checkpoint

    @classmethod
    def describe_extra(cls) -> list[str]:
        """One line per size for ``harness list backbones``."""
        lines = ["input: 16 kHz waveform -> kaldi fbank [B, 1, T, 128] (time first), 16x16 patches"]
        for size, spec in SIZES.items():
            lines.append(
                f"{size}: embedding {spec.dim}, {spec.depth} layers, {spec.heads} heads, "
                f"{spec.num_params() / 1e6:.2f}M params; MAE decoder {spec.decoder[0]} dims, "
                f"{spec.decoder[1]} layers"
            )
        return lines

    def reset_parameters(self) -> None:
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def frontend(self) -> nn.Module:
        return KaldiFbank(
            self.config.target_length, self.max_frames, self.config.norm_mean, self.config.norm_std
        )

    def build_head(self, num_classes: int) -> nn.Module:
        """AudioMAE's linear head; it starts from a loaded checkpoint's ``head`` when it fits."""
        head = LinearHead(self.embed_dim, num_classes)
        state = self.pretrained_head_state
        if state is not None:
            fresh = head.state_dict()
            if all(k in state and state[k].shape == v.shape for k, v in fresh.items()):
                head.load_state_dict(state)
        return head.to(self.cls_token.device)

    # -- encoder --------------------------------------------------------------

    def embed_patches(self, features: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens with their positional embedding, and the grid (time rows, freq columns)."""
        if features.ndim != 4 or features.shape[1] != 1 or features.shape[-1] != MEL_BINS:
            shape = tuple(features.shape)
            raise UsageError(f"audiomae expects fbank features [B, 1, T, {MEL_BINS}], got {shape}")
        x = self.patch_embed(features)
        grid = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)
        if not 1 <= grid[0] <= self.max_grid[0]:
            raise UsageError(
                f"audiomae got {features.shape[2]} frames; it takes {PATCH} to {self.max_frames} "
                "(set backbone.target_length for longer input)"
            )
        return tokens + self.positions(grid)[:, 1:], grid

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """``[1, 1 + N, D]`` for a grid of ``grid[0] <= max`` time rows: ``pos_embed`` for the
        full grid; for fewer rows the first rows of it (``time-major``, equal to that grid's
        table) or the official table of that grid (``official``, as the official code builds
        for a shorter ``target_length``)."""
        if grid[0] == self.max_grid[0]:
            return self.pos_embed
        if self.pos_layout == "time-major":
            return self.pos_embed[:, : 1 + grid[0] * grid[1]]
        key = (grid[0], self.pos_layout, self.pos_embed.device)
        if key not in self._tables:
            table = audiomae_sincos(self.embed_dim, grid, self.pos_layout)
            self._tables[key] = table[None].to(self.pos_embed.device)
        return self._tables[key]

    def with_cls(self, tokens: Tensor) -> Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def drop_rows_and_columns(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """AudioMAE's fine-tuning mask: keep random time rows and frequency columns per clip."""
        rows, cols = grid
        x = tokens.reshape(tokens.shape[0], rows, cols, -1)
        keep_rows = max(1, int(rows * (1 - self.config.mask_t_prob)))
        keep_cols = max(1, int(cols * (1 - self.config.mask_f_prob)))
        x = keep_random(keep_random(x, 1, keep_rows), 2, keep_cols)
        return x.reshape(tokens.shape[0], keep_rows * keep_cols, -1)

    def forward(self, features: Tensor) -> Encoded:
        tokens, grid = self.embed_patches(features)
        if self.training and (self.config.mask_t_prob or self.config.mask_f_prob):
            tokens = self.drop_rows_and_columns(tokens, grid)
        x = self.with_cls(tokens)
        for block in self.blocks:
            x = block(x)
        embedding = self.fc_norm(x[:, 1:].mean(dim=1))
        return Encoded(embedding=embedding, tokens=self.norm(x))

    def forward_masked(self, features: Tensor, mask_ratio: float) -> MaskedEncoding:
        """The encoder on a random ``1 - mask_ratio`` of the patches (MAE pretraining)."""
        tokens, grid = self.embed_patches(features)
        visible, mask, ids_restore = random_masking(tokens, mask_ratio)
        x = self.with_cls(visible)
        for block in self.blocks:
            x = block(x)
        return MaskedEncoding(self.norm(x), mask, ids_restore, grid)

    def patchify(self, features: Tensor) -> Tensor:
        """``[B, 1, T, F]`` -> ``[B, rows * cols, 16 * 16]``, patches in token order."""
        batch, chans, frames, bins = features.shape
        rows, cols = frames // PATCH, bins // PATCH
        x = features[:, :, : rows * PATCH, : cols * PATCH]
        x = x.reshape(batch, chans, rows, PATCH, cols, PATCH)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, PATCH * PATCH * chans)

    # -- checkpoints ----------------------------------------------------------

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map a published AudioMAE state dict (or a backbone.pt) onto this encoder's keys.

        Called by :func:`harness.registry.checkpoints.load_backbone_checkpoint` after unwrapping.
        """
        state = dict(state_dict)
        self.check_size(state)
        self.set_aside = sorted(k for k in state if k.startswith(SET_ASIDE_PREFIXES))
        for key in self.set_aside:
            del state[key]
        self.load_notes = []
        if self.set_aside:
            self.load_notes.append(f"set aside {len(self.set_aside)} MAE decoder keys")
        own = self.state_dict()
        if any(k.startswith("blocks.") for k in state):
            for prefix in FRESH_WHEN_ABSENT:
                if not any(k.startswith(prefix) for k in state):
                    state.update({k: v for k, v in own.items() if k.startswith(prefix)})
                    self.load_notes.append(f"{prefix.rstrip('.')} absent: freshly initialised")
        pos = state.get("pos_embed")
        layout = self.sincos_layout(pos) if pos is not None else None
        if layout is not None and layout != self.pos_layout:
            self.load_notes.append(
                f"pos_embed: the checkpoint's sin-cos table is in the {layout} layout "
                f"(backbone.pos_layout was {self.pos_layout}); the encoder uses it"
            )
            self.pos_layout = layout
            self._tables.clear()
        if layout is not None and pos.shape != self.pos_embed.shape:
            table = audiomae_sincos(self.embed_dim, self.max_grid, layout)[None]
            state["pos_embed"] = table
            self.load_notes.append(
                f"pos_embed: {layout} sin-cos table for {pos.shape[1] - 1} patches recomputed "
                f"for {table.shape[1] - 1}"
            )
        return state

    def check_size(self, state: dict[str, Tensor]) -> None:
        """Name the right ``backbone.size`` when the checkpoint holds another AudioMAE size."""
        proj = state.get("patch_embed.proj.weight")
        if proj is None or proj.ndim != 4:
            return
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        found = (proj.shape[0], depth)
        if found == (self.embed_dim, self.num_layers):
            return
        fits = [name for name, spec in SIZES.items() if (spec.dim, spec.depth) == found]
        hint = f"; set backbone.size={fits[0]}" if fits else "; no audiomae size has this shape"
        raise DataError(
            f"checkpoint holds an AudioMAE encoder with {found[0]} dims and {found[1]} blocks, "
            f"backbone size '{self.config.size}' has {self.embed_dim} and {self.num_layers}{hint}"
        )

    def sincos_layout(self, pos: Tensor) -> str | None:
        """The layout of ``pos`` ``[1, 1 + rows * 8, D]`` when it is a fixed sin-cos table
        (``official`` or ``time-major``), else None (a trained table, or another shape)."""
        cols = self.max_grid[1]
        if pos.ndim != 3 or pos.shape[-1] != self.embed_dim or (pos.shape[1] - 1) % cols:
            return None
        grid = ((pos.shape[1] - 1) // cols, cols)
        for layout in (self.pos_layout, *POS_LAYOUTS):
            expected = audiomae_sincos(self.embed_dim, grid, layout)
            if torch.allclose(pos[0].float(), expected, atol=1e-4):
                return layout
        return None


@hookimpl
def register_backbones(register) -> None:
    register(AudioMAE)
